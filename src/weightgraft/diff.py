"""What changed between two checkpoints or models, tensor by tensor, most-changed layer first.

Tensors are paired by key, then by a normalised key (wrapper prefixes, ``:0`` suffixes,
``/`` versus ``.``). Across frameworks, where keys cannot pair, the transplant matcher pairs
them and the layout rules bring B's tensors into A's layout before comparing. Only one pair
of tensors is in memory at a time.

Example:
    >>> import numpy as np, weightgraft as wg
    >>> a = wg.Checkpoint([wg.TensorEntry.from_array("w", np.ones(4, "float32"))], format="memory")
    >>> b = wg.Checkpoint([wg.TensorEntry.from_array("w", np.array([1, 1, 1, 2], "float32"))],
    ...                   format="memory")
    >>> d = diff(a, b)
    >>> d.tensors[0].status, d.tensors[0].frac_changed
    ('changed', 0.25)
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, TensorEntry

ADDED, REMOVED, UNCHANGED, CHANGED, RESHAPED = "added", "removed", "unchanged", "changed", "reshaped"


@dataclass(frozen=True)
class TensorDiff:
    """How one tensor differs between A and B (statistics are ``None`` where not comparable)."""

    key: str
    key_b: str | None
    layer: str
    status: str
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    dtype_a: str | None
    dtype_b: str | None
    max_abs: float | None = None
    mean_abs: float | None = None
    rel_change: float | None = None  # ||B - A|| / ||A||
    frac_changed: float | None = None  # fraction of elements whose value differs
    norm_a: float | None = None
    norm_delta: float | None = None
    transform: str | None = None  # layout conversion applied to B before comparing


@dataclass(frozen=True)
class LayerDiff:
    """A layer's tensors summarised: ``rel_change`` is ||delta|| / ||A|| over all of them."""

    layer: str
    status: str
    tensors: int
    changed: int
    rel_change: float | None
    max_abs: float | None


@dataclass(frozen=True)
class DiffResult:
    """Every tensor's difference plus a per-layer summary sorted most-changed first."""

    a: str
    b: str
    atol: float
    rtol: float
    tensors: tuple[TensorDiff, ...]
    layers: tuple[LayerDiff, ...]
    notes: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    def tensor(self, key: str) -> TensorDiff:
        for t in self.tensors:
            if t.key == key or t.key_b == key:
                return t
        raise KeyError(key)

    def layer(self, name: str) -> LayerDiff:
        for layer in self.layers:
            if layer.layer == name:
                return layer
        raise KeyError(name)

    @property
    def identical(self) -> bool:
        return all(t.status == UNCHANGED for t in self.tensors)


_PREFIX = re.compile(r"^(?:module\.|_orig_mod\.|model\.)+")


def normalise_key(key: str) -> str:
    """A key with wrapper prefixes, ``:0`` suffixes and separator style removed.

    >>> normalise_key("module.features.0.weight"), normalise_key("conv1/kernel:0")
    ('features.0.weight', 'conv1.kernel')
    """
    key = re.sub(r":\d+$", "", key)
    key = key.replace("/", ".")
    return _PREFIX.sub("", key)


def _as_checkpoint(obj: Any) -> tuple[Checkpoint, str, bool]:
    """(checkpoint, label, opened_here) for a path, Checkpoint, ModelView or live model."""
    if isinstance(obj, Checkpoint):
        return obj, obj.path or "<checkpoint>", False
    if isinstance(obj, str | os.PathLike):
        from .formats import open_checkpoint

        return open_checkpoint(obj), os.fspath(obj), True
    from .modelview import view

    mv = view(obj)
    return mv.as_checkpoint(), f"<{mv.framework} model>", False


def _compare(ea: TensorEntry, eb: TensorEntry, atol: float, rtol: float,
             load: Callable[[], np.ndarray] | None = None, transform: str | None = None,
             key_b: str | None = None, converts_a: bool = False) -> TensorDiff:
    """Statistics of B - A; ``load`` gives B converted to A's layout (or, with
    ``converts_a``, A converted to B's)."""
    base = dict(key=ea.key, key_b=key_b or eb.key, layer=ea.layer or _layer_of(ea.key),
                shape_a=ea.shape, shape_b=eb.shape, dtype_a=ea.dtype, dtype_b=eb.dtype,
                transform=transform)
    xb = load() if load is not None and not converts_a else eb.load()
    xa = load() if load is not None and converts_a else ea.load()
    if xa.shape != xb.shape:
        return TensorDiff(status=RESHAPED, **base)
    if xa.dtype == xb.dtype and np.array_equal(xa, xb, equal_nan=xa.dtype.kind in "fc"):
        norm = float(np.linalg.norm(xa.astype(np.float64).ravel())) if xa.size else 0.0
        return TensorDiff(status=UNCHANGED, max_abs=0.0, mean_abs=0.0, rel_change=0.0,
                          frac_changed=0.0, norm_a=norm, norm_delta=0.0, **base)
    fa = xa.astype(np.float64, copy=False).ravel()
    fb = xb.astype(np.float64, copy=False).ravel()
    delta = fb - fa
    absd = np.abs(delta)
    norm_a = float(np.linalg.norm(fa))
    norm_d = float(np.linalg.norm(delta))
    differs = absd > (atol + rtol * np.abs(fa)) if (atol or rtol) else (fa != fb)
    status = CHANGED if differs.any() or ea.dtype != eb.dtype else UNCHANGED
    return TensorDiff(
        status=status,
        max_abs=float(absd.max()) if absd.size else 0.0,
        mean_abs=float(absd.mean()) if absd.size else 0.0,
        rel_change=norm_d / norm_a if norm_a > 0 else (math.inf if norm_d > 0 else 0.0),
        frac_changed=float(differs.mean()) if differs.size else 0.0,
        norm_a=norm_a, norm_delta=norm_d, **base,
    )


def _layer_of(key: str) -> str:
    parts = re.split(r"[./]", re.sub(r":\d+$", "", key))
    return ".".join(parts[:-1]) if len(parts) > 1 else parts[0]


def _pair_by_key(a: Checkpoint, b: Checkpoint) -> tuple[list[tuple[TensorEntry, TensorEntry]],
                                                        list[TensorEntry], list[TensorEntry]]:
    a_entries, b_entries = a.model_entries(), b.model_entries()
    b_exact = {e.key: e for e in b_entries}
    pairs: list[tuple[TensorEntry, TensorEntry]] = []
    used: set[str] = set()
    left: list[TensorEntry] = []
    for ea in a_entries:
        eb = b_exact.get(ea.key)
        if eb is not None:
            pairs.append((ea, eb))
            used.add(eb.key)
        else:
            left.append(ea)
    b_norm: dict[str, list[TensorEntry]] = {}
    for eb in b_entries:
        if eb.key not in used:
            b_norm.setdefault(normalise_key(eb.key), []).append(eb)
    still: list[TensorEntry] = []
    for ea in left:
        cands = b_norm.get(normalise_key(ea.key), [])
        if len(cands) == 1:
            pairs.append((ea, cands[0]))
            used.add(cands[0].key)
            b_norm[normalise_key(ea.key)] = []
        else:
            still.append(ea)
    # Last, by layer name and role: a Keras 3 file keys ``layers/dense/vars/0`` what the live
    # model calls ``d1/kernel``; both know the layer is d1 and the tensor its kernel.
    by_slot: dict[tuple[str, str, str], list[TensorEntry]] = {}
    for eb in b_entries:
        if eb.key not in used and eb.layer:
            by_slot.setdefault(_slot(eb), []).append(eb)
    a_slots: dict[tuple[str, str, str], int] = {}
    for ea in still:
        if ea.layer:
            a_slots[_slot(ea)] = a_slots.get(_slot(ea), 0) + 1
    removed: list[TensorEntry] = []
    for ea in still:
        cands = by_slot.get(_slot(ea), []) if ea.layer else []
        if len(cands) == 1 and a_slots[_slot(ea)] == 1 and str(ea.role.value) != "other":
            pairs.append((ea, cands[0]))
            used.add(cands[0].key)
        else:
            removed.append(ea)
    added = [eb for eb in b_entries if eb.key not in used]
    return pairs, removed, added


def _slot(e: TensorEntry) -> tuple[str, str, str]:
    return (e.layer.rsplit("/", 1)[-1], str(e.role.value), str(e.part or ""))


# (entry in A, entry in B, loader of the converted side, its transforms, key in B,
#  whether the loader gives A converted (True) or B converted (False))
Pair = tuple[TensorEntry, TensorEntry, "Callable[[], np.ndarray] | None", "str | None",
             "str | None", bool]


def _pair_by_match(a_obj: Any, b_obj: Any, a: Checkpoint, b: Checkpoint
                   ) -> tuple[list[Pair], set[str], set[str]] | None:
    """Pair across frameworks with the transplant matcher, converting one side's tensors
    into the other's layout with the same rules a transplant uses.

    The matcher fills a live model: A is the target when it is one (B converted into A's
    layout), else B (A converted into B's layout; norms are unchanged by layout moves, so
    the statistics mean the same). ``None`` when neither side is a live model.
    """
    from .match import match
    from .modelview import view
    from .transplant_loading import check_shapes

    def live(obj: Any) -> Any:
        if isinstance(obj, str | os.PathLike | Checkpoint):
            return None
        try:
            return view(obj)
        except Exception:  # noqa: BLE001 - not a model this library can view
            return None

    swapped = False
    target, src_ckpt, src_obj, dst_ckpt = live(a_obj), b, b_obj, a
    if target is None:
        target, src_ckpt, src_obj, dst_ckpt, swapped = live(b_obj), a, a_obj, b, True
    if target is None:
        return None
    from .errors import WeightgraftError

    src_live = live(src_obj)
    try:
        plan = match(src_live if src_live is not None else src_ckpt, target)
    except WeightgraftError:  # nothing the matcher can pair: keep the pairing by key
        return None
    pairs: list[Pair] = []
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    for asg in plan.assignments:
        if not all(k in src_ckpt for k in asg.source_keys):
            continue
        try:
            loaders = check_shapes(asg, src_ckpt, target.slots, src_ckpt.path or "source")
        except WeightgraftError:  # the layers do not correspond after all: leave unpaired
            continue
        for tkey, (load, steps, src_keys) in loaders.items():
            if tkey not in dst_ckpt:
                continue
            label = "; ".join(steps) or None
            if swapped:  # A converted into B's layout, compared with B as it is
                pairs.append((src_ckpt[src_keys[0]], dst_ckpt[tkey], load, label, tkey, True))
                seen_a.update(src_keys)
                seen_b.add(tkey)
            else:
                pairs.append((dst_ckpt[tkey], src_ckpt[src_keys[0]], load, label,
                              "+".join(src_keys), False))
                seen_a.add(tkey)
                seen_b.update(src_keys)
    return pairs, seen_a, seen_b


def diff(a: Any, b: Any, *, atol: float = 0.0, rtol: float = 0.0,
         filter: str | None = None) -> DiffResult:
    """Compare every tensor of ``a`` and ``b`` (paths, Checkpoints or live models).

    ``atol``/``rtol`` call element changes within ``atol + rtol * |a|`` unchanged.
    ``filter`` keeps only keys matching a glob.
    """
    ca, label_a, close_a = _as_checkpoint(a)
    cb, label_b, close_b = _as_checkpoint(b)
    notes: list[str] = []
    try:
        pairs, removed, added = _pair_by_key(ca, cb)
        pairs4: list[Pair] = [(x, y, None, None, None, False) for x, y in pairs]
        if len(pairs) < len(ca.model_entries()) // 2:
            matched = _pair_by_match(a, b, ca, cb)
            if matched is not None:
                pairs4, seen_a, seen_b = matched
                removed = [e for e in ca.model_entries() if e.key not in seen_a]
                added = [e for e in cb.model_entries() if e.key not in seen_b]
                which = "A to B's" if matched[0] and matched[0][0][5] else "B to A's"
                notes.append(f"keys differ ({ca.framework or '?'} / {cb.framework or '?'}): "
                             f"tensors were paired by the transplant matcher, {which} layout")
        if filter:
            keep = (lambda k: fnmatch.fnmatchcase(k, filter))
            pairs4 = [p for p in pairs4 if keep(p[0].key) or keep(p[1].key)]
            removed = [e for e in removed if keep(e.key)]
            added = [e for e in added if keep(e.key)]
        results = [_compare(x, y, atol, rtol, load, steps, kb, a_side)
                   for x, y, load, steps, kb, a_side in pairs4]
        results += [TensorDiff(key=e.key, key_b=None, layer=e.layer or _layer_of(e.key),
                               status=REMOVED, shape_a=e.shape, shape_b=None, dtype_a=e.dtype,
                               dtype_b=None) for e in removed]
        results += [TensorDiff(key=e.key, key_b=e.key, layer=e.layer or _layer_of(e.key),
                               status=ADDED, shape_a=None, shape_b=e.shape, dtype_a=None,
                               dtype_b=e.dtype) for e in added]
    finally:
        if close_a:
            ca.close()
        if close_b:
            cb.close()
    layers = _summarise(results)
    notes += _tiny_change_notes(layers)
    counts: dict[str, int] = {}
    for t in results:
        counts[t.status] = counts.get(t.status, 0) + 1
    return DiffResult(a=label_a, b=label_b, atol=atol, rtol=rtol, tensors=tuple(results),
                      layers=tuple(layers), notes=tuple(notes), counts=counts)


def _summarise(results: Iterable[TensorDiff]) -> list[LayerDiff]:
    grouped: dict[str, list[TensorDiff]] = {}
    for t in results:
        grouped.setdefault(t.layer, []).append(t)
    out = []
    for name, ts in grouped.items():
        statuses = {t.status for t in ts}
        status = statuses.pop() if len(statuses) == 1 else CHANGED
        comparable = [t for t in ts if t.norm_a is not None]
        if comparable:
            na = math.sqrt(sum(t.norm_a**2 for t in comparable))  # type: ignore[operator]
            nd = math.sqrt(sum(t.norm_delta**2 for t in comparable))  # type: ignore[operator]
            rel = nd / na if na > 0 else (math.inf if nd > 0 else 0.0)
            mx = max(t.max_abs or 0.0 for t in comparable)
        else:
            rel, mx = None, None
        out.append(LayerDiff(layer=name, status=status, tensors=len(ts),
                             changed=sum(t.status != UNCHANGED for t in ts),
                             rel_change=rel, max_abs=mx))
    order = {ADDED: 1, REMOVED: 1, RESHAPED: 1}
    out.sort(key=lambda d: (-order.get(d.status, 0), -(d.rel_change or 0.0)))
    return out


def _tiny_change_notes(layers: list[LayerDiff]) -> list[str]:
    """Explain layers whose change is tiny next to the others (so 1e-7 is not read as zero).

    Only layers whose status is ``changed`` count: a layer within ``atol``/``rtol`` is
    unchanged by the caller's own definition, and must not be called changed here.
    """
    changed = [d for d in layers if d.status == CHANGED and d.rel_change
               and math.isfinite(d.rel_change)]
    if len(changed) < 2:
        return []
    median = float(np.median([d.rel_change for d in changed]))  # type: ignore[misc]
    notes = []
    for d in changed:
        if d.rel_change and median > 0 and d.rel_change < median / 100:
            notes.append(
                f"{d.layer}: changed, but only by {d.rel_change:.3g} relative — "
                f"{median / d.rel_change:,.0f}x less than the median changed layer "
                f"({median:.3g}); it trained very little or is nearly frozen"
            )
    return notes


def format_rel(value: float | None) -> str:
    """A relative change readable at any scale: ``1.23e-07`` rather than ``0.0000``.

    >>> format_rel(1.234e-7), format_rel(0.0123), format_rel(0.0)
    ('1.23e-07', '0.0123', '0')
    """
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return "inf"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"

