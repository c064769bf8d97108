"""Inspection of live models: layers in execution order, output shapes, sharing, depth.

Kept apart from ``weightgraft.inspection`` (results and checkpoint files), which calls
``inspect_view`` for anything that is not a path or a ``Checkpoint``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING

from .frameworks.shared import weighted_depth
from .inspection import (
    Header, Inspection, ModelSummary, TensorInfo, _itemsize, _layer_summary, _matches, _prod,
    _totals,
)

if TYPE_CHECKING:
    from .modelview import ModelView


def _framework_facts(mv: ModelView) -> tuple[str | None, str | None, str | None]:
    """Version, backend and image data format, from the framework the model already uses."""
    module = sys.modules.get("keras" if mv.framework == "keras" else "torch")
    version = getattr(module, "__version__", None)
    backend = data_format = None
    if mv.framework == "keras" and module is not None:
        backend = module.backend.backend()
        data_format = module.config.image_data_format()
    return version, backend, data_format


def inspect_view(mv: ModelView, pattern: str | None = None) -> Inspection:
    """Inspect a live model through its ``ModelView`` (``weightgraft.inspect`` calls this).

    Example:
        >>> inspect_view(weightgraft.view(model)).model.weighted_depth   # doctest: +SKIP
        50
    """
    slots = mv.slots
    counted: set[str] = set()
    layers = []
    seen_slots: set[str] = set()

    def describe(key: str) -> TensorInfo:
        s = slots[key]
        return TensorInfo(
            key=s.key, layer=s.layer, kind=str(s.kind), role=str(s.role), shape=s.shape,
            dtype=s.dtype, params=_prod(s.shape), nbytes=_prod(s.shape) * _itemsize(s.dtype),
            trainable=False if s.buffer else s.trainable, convention=str(s.convention),
            buffer=s.buffer, aliases=s.aliases,
        )

    def info(key: str) -> TensorInfo:
        shared = key in counted
        counted.add(key)
        counted.update(slots[key].aliases)
        seen_slots.add(key)
        return dataclasses.replace(describe(key), shared=shared)

    def alias(key: str, main: str, layer: str) -> TensorInfo:
        # A tied tensor under its second name: shown where it is used, counted once.
        return dataclasses.replace(describe(main), key=key, layer=layer, shared=True,
                                   aliases=(main,))

    # Tied tensors (one Parameter under two names) belong to the layer of each name.
    paths = sorted((lv.path for lv in mv.layers if lv.path), key=len, reverse=True)
    aliases: dict[str, list[tuple[str, str]]] = {}
    for key, s in slots.items():
        for name in s.aliases:
            owner = next((p for p in paths if name.startswith(p + ".")), "")
            aliases.setdefault(owner, []).append((name, key))

    for lv in mv.layers:
        tied = [(a, m) for a, m in aliases.get(lv.path, ())
                if _matches(pattern, lv.path) or _matches(pattern, a)]
        keep = (_matches(pattern, lv.path) or any(_matches(pattern, k) for k in lv.slots)
                or bool(tied))
        if not keep:
            continue
        keys = [k for k in lv.slots if k in slots
                and (_matches(pattern, lv.path) or _matches(pattern, k))]
        layers.append(_layer_summary(
            lv.path, str(lv.kind), lv.class_name,
            [info(k) for k in keys] + [alias(a, m, lv.path) for a, m in tied],
            output_shapes=tuple(lv.output_shapes), shared=lv.shared, calls=lv.calls,
        ))
    # Weights of layers the probe pass never reached still belong in the account.
    orphans: dict[str, list[str]] = {}
    for key, s in slots.items():
        if key not in seen_slots and _matches(pattern, key, s.layer):
            orphans.setdefault(s.layer, []).append(key)
    for layer, keys in orphans.items():
        first = slots[keys[0]]
        layers.append(_layer_summary(layer, str(first.kind), "", [info(k) for k in keys]))

    version, backend, data_format = _framework_facts(mv)
    model = getattr(mv, "model", None)
    source = type(model).__qualname__ if model is not None else mv.framework
    name = getattr(model, "name", None)
    if isinstance(name, str) and name:
        source = f"{name} ({source})"
    notes = ("the probe pass did not reach layers: " + ", ".join(orphans),) if orphans else ()
    header = Header(
        source=source, format=f"{mv.framework} model", framework=mv.framework,
        framework_version=version, backend=backend, data_format=data_format,
        convention=str(mv.convention), convention_reason=f"live {mv.framework} model",
        notes=notes,
    )
    summary = ModelSummary(
        layer_objects=len(mv.layers), weighted_depth=weighted_depth(mv),
        shared_layers=tuple(lv.path for lv in mv.layers if lv.shared),
    )
    return Inspection(
        header=header, layers=tuple(layers),
        totals=_totals(t for layer in layers for t in layer.tensors),
        model=summary, filter=pattern, tensors_in_source=len(slots),
    )
