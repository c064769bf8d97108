"""The checks and loaders of ``transplant``: a plan against the source and the target,
and for each target tensor a loader that reads, converts and casts its source on demand.

Every check runs before any tensor is loaded or assigned, so a plan that does not fit
changes nothing. Whole-layer conversions (recurrent layers, attention) are probed on zeros
of the source shapes first, then converted once per layer when their first tensor loads.

Example:
    >>> loaders = check_shapes(assignment, checkpoint, view.slots, "src.h5")  # doctest: +SKIP
    >>> array = loaders["conv1.weight"][0]()                                    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .checkpoint import Convention, Kind, Role
from .errors import PlanError, ShapeMismatchError, WeightgraftError
from .match import Plan
from .match.groups import simulate_shape
from .match.plan import Assignment
from .match.rules import per_tensor


def listing(keys: list[str], limit: int = 12) -> str:
    """``a, b, c, ... (9 more)``: keys for an error message."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_plan_keys(plan: Plan, ckpt: Any, slots: Mapping[str, Any], where: str) -> None:
    seen: dict[str, str] = {}
    for a in plan.assignments:
        for k in a.source_keys:
            if k not in ckpt:
                raise PlanError(f"plan assignment for {a.target_layer!r} names source tensor "
                                f"{k!r}, which the source does not hold", path=where,
                                fix="correct the key in the plan (see `graft inspect SOURCE`)")
        for k in a.target_keys:
            if k not in slots:
                raise PlanError(f"plan assignment names target slot {k!r}, which the target "
                                "model does not have", path=where,
                                expected=f"one of {listing(list(slots), 6)}",
                                fix="correct the key in the plan")
            if k in seen:
                raise PlanError(f"target slot {k!r} is filled twice (from {seen[k]!r} and "
                                f"{a.source_layer!r})", path=where, fix="remove one assignment")
            seen[k] = a.source_layer


_FLOAT = {"float16", "float32", "float64", "bfloat16"}


def _check_dtype(src_dtype: str, slot: Any, src_key: str, where: str) -> None:
    s_float, t_float = src_dtype in _FLOAT, slot.dtype in _FLOAT
    if s_float != t_float:
        raise ShapeMismatchError(f"source tensor {src_key} is {src_dtype} but slot {slot.key} "
                                 f"holds {slot.dtype}", path=where, tensor=src_key,
                                 expected="floating point into floating point, integers into "
                                          "integers", fix="check the plan pairs these tensors")


def check_shapes(a: Assignment, ckpt: Any, slots: Mapping[str, Any], where: str
                  ) -> dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]]:
    """For each target key: a loader producing the converted array, the steps, and the
    source keys it is made from.

    Raises before anything is assigned when a shape or dtype cannot fit.
    """
    from . import layouts

    kind = Kind(a.kind)
    src, dst = Convention(a.src_convention), Convention(a.dst_convention)
    s_roles, t_roles = list(a.source_roles), list(a.target_roles)
    out: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {}
    try:
        if per_tensor(kind, s_roles, t_roles):
            by_role = dict(zip(s_roles, a.source_keys))
            for tkey, role in zip(a.target_keys, t_roles):
                skey, slot = by_role[role], slots[tkey]
                entry = ckpt[skey]
                _check_dtype(entry.dtype, slot, skey, where)
                if role == Role.NUM_BATCHES_TRACKED.value:
                    tr = None
                    shape = entry.shape
                else:
                    tr = layouts.tensor_transform(kind, role, src, dst, a.context)
                    shape = simulate_shape(tr.ops, entry.shape)
                if tuple(shape) != tuple(slot.shape):
                    raise ShapeMismatchError(
                        f"{skey} {entry.shape} becomes {tuple(shape)} after "
                        f"{list(tr.steps) if tr else 'no change'}, but slot {tkey} is "
                        f"{tuple(slot.shape)}", path=where, tensor=skey,
                        expected=f"shape {tuple(slot.shape)}",
                        fix="the layers do not correspond: fix the plan or the rename rules")
                steps = tuple(tr.steps) if tr is not None else ()
                cast = _cast_step(entry.dtype, slot.dtype)
                out[tkey] = (_tensor_loader(entry, tr, slot.dtype), steps + cast, (skey,))
        else:
            out.update(_layer_loaders(a, kind, src, dst, ckpt, slots, where))
    except ShapeMismatchError:
        raise
    except WeightgraftError as exc:
        raise type(exc)(f"cannot convert {a.source_layer} -> {a.target_layer}: {exc.problem}",
                        path=where, expected=exc.expected, fix=exc.fix) from None
    return out


def _cast_step(src: str, dst: str) -> tuple[str, ...]:
    return () if src == dst else (f"cast {src} -> {dst}",)


def _tensor_loader(entry: Any, tr: Any, dtype: str) -> Any:
    def load() -> np.ndarray:
        arr = entry.load()
        if tr is not None:
            arr = tr.apply(arr)
        return np.require(arr.astype(_np_dtype(dtype), copy=False), requirements="C")
    return load


def _np_dtype(name: str) -> Any:
    return np.float32 if name == "bfloat16" else np.dtype(name)


def _layer_loaders(a: Assignment, kind: Kind, src: Convention, dst: Convention, ckpt: Any,
                   slots: Mapping[str, Any], where: str
                   ) -> dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]]:
    from . import layouts

    zeros = {r: np.zeros(ckpt[k].shape, np.float32) for r, k in zip(a.source_roles, a.source_keys)}
    probe = layouts.convert_layer(kind, src, dst, zeros, a.context)
    for tkey, role in zip(a.target_keys, a.target_roles):
        if role not in probe.arrays:
            raise ShapeMismatchError(f"converting {a.source_layer} gives no {role!r} for "
                                     f"{tkey}", path=where, expected=f"roles {sorted(probe.arrays)}",
                                     fix="fix the plan's target_roles")
        got = tuple(probe.arrays[role].shape)
        if got != tuple(slots[tkey].shape):
            raise ShapeMismatchError(f"{a.source_layer} converts to {role} {got}, but slot "
                                     f"{tkey} is {tuple(slots[tkey].shape)}", path=where,
                                     tensor=tkey, expected=f"shape {tuple(slots[tkey].shape)}",
                                     fix="the layers do not correspond: fix the plan")
    cache: dict[str, Any] = {}

    def convert() -> Mapping[str, np.ndarray]:
        if "arrays" not in cache:
            arrays = {r: ckpt[k].load() for r, k in zip(a.source_roles, a.source_keys)}
            cache["arrays"] = layouts.convert_layer(kind, src, dst, arrays, a.context).arrays
        return cache["arrays"]

    def loader(role: str, tkey: str, last: bool) -> Any:
        def load() -> np.ndarray:
            arr = np.require(np.asarray(convert()[role]).astype(
                _np_dtype(slots[tkey].dtype), copy=False), requirements="C")
            if last:
                cache.clear()
            return arr
        return load

    keys = list(zip(a.target_keys, a.target_roles))
    return {tkey: (loader(role, tkey, i == len(keys) - 1), tuple(probe.steps), a.source_keys)
            for i, (tkey, role) in enumerate(keys)}
