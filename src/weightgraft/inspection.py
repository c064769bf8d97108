"""What is in a checkpoint or a live model, as data: header, layers, totals, extras.

``inspect`` reads only headers and indexes (shapes, dtypes, names, configs); tensor bytes
are never loaded, so inspecting a 10 GB file takes as long as reading its index.
Rendering lives in ``weightgraft.report.inspect_view``.

Example:
    >>> import numpy as np
    >>> from weightgraft.checkpoint import Checkpoint, TensorEntry
    >>> k = TensorEntry.from_array("fc/kernel", np.zeros((3, 2), "float32"),
    ...                            layer="fc", kind="dense", role="kernel")
    >>> b = TensorEntry.from_array("fc/bias", np.zeros(2, "float32"),
    ...                            layer="fc", kind="dense", role="bias")
    >>> ins = inspect(Checkpoint([k, b], format="memory"))
    >>> ins.layers[0].formula, ins.total_params
    ('3x2 + 2 = 8', 8)
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import Checkpoint, Convention, Group, Kind, Role, TensorEntry
from .frameworks.shared import SharedLayer, shared_layers, weighted_depth  # re-exported

__all__ = [
    "Header", "Inspection", "LayerSummary", "ModelSummary", "OptimizerSummary", "SharedLayer",
    "TensorInfo", "Totals", "formula", "inspect", "shared_layers", "weighted_depth",
]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as inspection sees it: header facts only, never the bytes."""

    key: str
    layer: str
    kind: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    params: int
    nbytes: int
    trainable: bool | None = None
    convention: str = "unknown"
    group: str = "model"
    part: str | None = None
    buffer: bool = False
    shared: bool = False  # the same storage is counted under another key already
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerSummary:
    """A layer: its tensors, its parameter count and how that count is made up."""

    name: str
    kind: str
    class_name: str
    tensors: tuple[TensorInfo, ...]
    params: int
    formula: str
    trainable_params: int
    non_trainable_params: int
    output_shapes: tuple[tuple[int | None, ...], ...] = ()
    shared: bool = False  # the same layer object is called more than once
    calls: int = 1


@dataclass(frozen=True)
class Totals:
    """Parameter totals; shared or tied tensors are counted once.

    ``total`` counts every model tensor (weights and buffers, as Keras's ``count_params``);
    ``parameters`` leaves out buffers (as PyTorch's ``sum(p.numel() for p in parameters())``).
    ``unknown`` is what the source does not say is trainable or frozen.
    """

    total: int
    trainable: int
    non_trainable: int
    unknown: int
    parameters: int
    buffers: int
    tensors: int
    nbytes: int
    shared_tensors: int = 0


@dataclass(frozen=True)
class OptimizerSummary:
    """Optimizer state, kept apart from the model's weights."""

    tensors: int
    params: int
    nbytes: int
    groups: tuple[tuple[str, int, int], ...] = ()  # (name, tensors, params)


@dataclass(frozen=True)
class Header:
    """What the file or model says about itself, and how its convention was decided."""

    source: str
    format: str
    framework: str | None = None
    framework_version: str | None = None
    backend: str | None = None
    data_format: str | None = None
    convention: str = "unknown"
    convention_reason: str = ""
    theano_era: bool = False
    # What matters when a Theano-era file is loaded elsewhere, from what it holds:
    # "flipped_conv_kernels", "keras1_lstm_gates", "hard_sigmoid" (empty: no layout change).
    theano_concerns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    """Live models only: how many layer objects, and how deep in weighted layers."""

    layer_objects: int
    weighted_depth: int | None
    shared_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inspection:
    """Everything ``inspect`` found, ready for rendering or JSON."""

    header: Header
    layers: tuple[LayerSummary, ...]
    totals: Totals
    optimizer: OptimizerSummary | None = None
    other_tensors: tuple[TensorInfo, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)
    model: ModelSummary | None = None
    filter: str | None = None
    tensors_in_source: int = 0

    @property
    def total_params(self) -> int:
        return self.totals.total

    @property
    def tensors(self) -> list[TensorInfo]:
        """Every model tensor in layer order (the flat ``--tensors`` list)."""
        return [t for layer in self.layers for t in layer.tensors]


def formula(shapes: Sequence[tuple[int, ...]]) -> str:
    """How a parameter count is made up: ``3x3x64x128 + 128 = 73,856``.

    Example:
        >>> formula([(3, 3, 64, 128), (128,)])
        '3x3x64x128 + 128 = 73,856'
        >>> formula([(128,)])
        '128'
    """
    terms = ["x".join(str(d) for d in s) if s else "1" for s in shapes]
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    if not terms:
        return "0"
    if len(terms) == 1 and "x" not in terms[0]:
        return f"{total:,}"
    return f"{' + '.join(terms)} = {total:,}"


def inspect(obj: Any, *, filter: str | None = None) -> Inspection:
    """Describe a checkpoint file, a ``Checkpoint`` or a live model, without loading tensors.

    ``filter`` is a glob (``fnmatch``) over layer names and tensor keys; a layer whose name
    matches keeps all its tensors. Totals are those of what the filter keeps.

    Example:
        >>> ins = weightgraft.inspect("mnist_cnn.h5")             # doctest: +SKIP
        >>> ins.header.theano_era, ins.totals.total               # doctest: +SKIP
        (True, 600810)
        >>> weightgraft.inspect(torchvision.models.resnet18()).model.weighted_depth  # doctest: +SKIP
        18
    """
    if isinstance(obj, str | os.PathLike):
        from .formats import open_checkpoint

        with open_checkpoint(obj) as ck:
            return _inspect_checkpoint(ck, filter)
    if isinstance(obj, Checkpoint):
        return _inspect_checkpoint(obj, filter)
    from ._inspect_model import inspect_view
    from .modelview import view

    return inspect_view(view(obj), filter)


# -- checkpoints -------------------------------------------------------------------------

# Statistics a layer keeps, never trained, whatever the file says (or does not say).
_STATISTICS = frozenset({Role.MOVING_MEAN, Role.MOVING_VARIANCE, Role.NUM_BATCHES_TRACKED})

# Formats whose key order says nothing about the model's layer order.
_UNORDERED_FORMATS = frozenset({"safetensors", "safetensors-sharded"})

# Within a layer of an unordered format, tensors are listed in this order; every other
# format keeps the order it records (HDF5 weight_names, a state dict's insertion order,
# Keras 3 vars/0, vars/1, ...), which is the order the layer itself holds them in.
_ROLE_RANK = {role: i for i, role in enumerate(Role)}


def _tensor_info(e: TensorEntry, *, shared: bool = False, buffer: bool | None = None,
                 aliases: tuple[str, ...] = ()) -> TensorInfo:
    # Statistics are buffers in a file as in a live model (torch registers them as buffers;
    # the Keras adapter marks moving_mean/moving_variance so), whatever the file calls them.
    buffer = e.role in _STATISTICS if buffer is None else buffer
    trainable = False if e.trainable is None and e.role in _STATISTICS else e.trainable
    params = _prod(e.shape)
    return TensorInfo(
        key=e.key, layer=e.layer, kind=e.kind.value, role=e.role.value, shape=e.shape,
        dtype=e.dtype, params=params, nbytes=params * _itemsize(e.dtype), trainable=trainable,
        convention=e.convention.value, group=e.group.value, part=e.part, buffer=buffer,
        shared=shared, aliases=aliases,
    )


def _matches(pattern: str | None, *names: str) -> bool:
    return pattern is None or any(fnmatch.fnmatchcase(n, pattern) for n in names if n)


def _theano_era(ck: Checkpoint) -> bool:
    if ck.convention is Convention.THEANO:
        return True
    return str(ck.data_format or "").lower() in ("th", "theano")


_CONV_KINDS = frozenset({
    Kind.CONV1D, Kind.CONV2D, Kind.CONV3D, Kind.DEPTHWISE_CONV2D, Kind.SEPARABLE_CONV2D,
    Kind.CONV1D_TRANSPOSE, Kind.CONV2D_TRANSPOSE, Kind.CONV3D_TRANSPOSE})
_RECURRENT_KINDS = frozenset({Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN})


def _theano_concerns(ck: Checkpoint) -> tuple[str, ...]:
    """What a Theano-era file's weights need elsewhere, judged from the tensors it holds."""
    model = ck.model_entries()
    concerns = []
    # A kernel a reader found unflipped says convention 'torch'/'keras'; only the rest flip.
    # An undescribed tensor of rank 3 or more may be one: never tell a conv file "no change".
    if any(e.kind in _CONV_KINDS and e.role in (Role.KERNEL, Role.DEPTHWISE_KERNEL)
           and e.convention in (Convention.THEANO, Convention.UNKNOWN)
           or e.kind is Kind.OTHER and len(e.shape) >= 3 for e in model):
        concerns.append("flipped_conv_kernels")
    # Keras 1 keeps one array per LSTM gate (part = gate letter, "forward/i" when wrapped).
    if any(e.kind is Kind.LSTM and (e.part or "").rsplit("/", 1)[-1] in ("i", "c", "f", "o")
           for e in model):
        concerns.append("keras1_lstm_gates")
    if any(e.kind in _RECURRENT_KINDS for e in model):
        concerns.append("hard_sigmoid")
    return tuple(concerns)


def _header_for(ck: Checkpoint) -> Header:
    theano = _theano_era(ck)
    concerns = _theano_concerns(ck) if theano else ()
    notes = list(ck.notes)
    others = sum(1 for e in ck if e.group is Group.OTHER)
    if others and not ck.model_entries() and not any("no model weights" in n for n in notes):
        notes.insert(0, f"holds no model weights: its {others:,} "
                        f"{'tensor is' if others == 1 else 'tensors are'} data, listed as "
                        "stored (key, shape, dtype)")
    if theano and not any("theano" in n.lower() for n in notes):
        # Readers normally explain this themselves; never let a Theano file pass silently.
        notes.insert(0, "Theano-era file: conv kernels are flipped for true convolution; "
                        "loading them into Keras 3 or PyTorch needs them flipped back, and a "
                        "channels-first Dense after Flatten needs its rows reordered"
                        if "flipped_conv_kernels" in concerns else
                        "Theano-era file without conv kernels: nothing needs flipping")
    meta = {str(k): _plain(v) for k, v in (ck.metadata or {}).items()}
    return Header(
        source=str(ck.path) if ck.path else f"<{ck.format}>", format=ck.format,
        framework=ck.framework, framework_version=ck.framework_version, backend=ck.backend,
        data_format=ck.data_format, convention=str(ck.convention),
        convention_reason=ck.convention_reason, theano_era=theano,
        theano_concerns=concerns, notes=tuple(notes),
        metadata=meta,
    )


def _layer_summary(name: str, kind: str, class_name: str, tensors: Sequence[TensorInfo],
                   **extra: Any) -> LayerSummary:
    params = trainable = frozen = 0
    for t in tensors:
        if t.shared:
            continue
        params += t.params
        if t.trainable is False or t.buffer:
            frozen += t.params
        elif t.trainable is True:
            trainable += t.params
    own = formula([t.shape for t in tensors if not t.shared])
    tied = [t.shape for t in tensors if t.shared]
    if tied:  # counted where first seen; shown here so the layer's shapes still add up
        own = ("" if own == "0" else own + "; ") + "tied " + formula(tied)
    return LayerSummary(
        name=name, kind=kind, class_name=class_name, tensors=tuple(tensors), params=params,
        formula=own, trainable_params=trainable,
        non_trainable_params=frozen, **extra,
    )


def _totals(tensors: Iterable[TensorInfo]) -> Totals:
    tensors = list(tensors)
    counted = [t for t in tensors if not t.shared]
    total = sum(t.params for t in counted)
    trainable = sum(t.params for t in counted if t.trainable is True and not t.buffer)
    frozen = sum(t.params for t in counted if t.trainable is False or t.buffer)
    buffers = sum(t.params for t in counted if t.buffer)
    return Totals(
        total=total, trainable=trainable, non_trainable=frozen,
        unknown=total - trainable - frozen, parameters=total - buffers, buffers=buffers,
        tensors=len(counted), nbytes=sum(t.nbytes for t in counted),
        shared_tensors=len(tensors) - len(counted),
    )


def _optimizer_summary(entries: Sequence[TensorEntry]) -> OptimizerSummary | None:
    if not entries:
        return None
    groups: dict[str, list[int]] = {}
    for e in entries:
        name = e.layer or (e.key.rsplit("/", 1)[0] if "/" in e.key else e.key.rsplit(".", 1)[0])
        g = groups.setdefault(name, [0, 0])
        g[0] += 1
        g[1] += e.num_params
    return OptimizerSummary(
        tensors=len(entries), params=sum(e.num_params for e in entries),
        nbytes=sum(e.nbytes for e in entries),
        groups=tuple((name, n, p) for name, (n, p) in groups.items()),
    )


_DIGITS = re.compile(r"(\d+)")


def _natural(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in _DIGITS.split(name) if part]


def _plain(value: Any) -> Any:
    """Non-tensor extras as plain, short JSON-able values (never the object itself)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) or len(value) <= 200 else value[:197] + "..."
    if isinstance(value, list | tuple) and len(value) <= 16:
        return [_plain(v) for v in value]
    if isinstance(value, dict) and len(value) <= 32:
        return {str(k): _plain(v) for k, v in value.items()}
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _tied_keys(ck: Checkpoint) -> dict[str, tuple[str, ...]]:
    """Keys that repeat an earlier key's tensor (same storage, same shape), with that key.

    Readers that can tell (PyTorch pickles) list keys sharing one storage in
    ``metadata["tied"]``; a tied embedding/output pair is stored once and counted once.
    """
    out: dict[str, tuple[str, ...]] = {}
    for group in ck.metadata.get("tied") or ():
        keys = [k for k in group if k in ck]
        if not keys:
            continue
        first = ck[keys[0]]
        for key in keys[1:]:
            if ck[key].shape == first.shape and ck[key].dtype == first.dtype:
                out[key] = (keys[0],)
    return out


def _inspect_checkpoint(ck: Checkpoint, pattern: str | None) -> Inspection:
    model = [e for e in ck.model_entries()
             if _matches(pattern, e.key, e.layer)]
    info_by_layer = {li.name: li for li in ck.layers}
    tied = _tied_keys(ck)
    grouped: dict[str, list[TensorEntry]] = {}
    # The file's own layer list fixes the order (and shows weightless layers) where it has one.
    with_tensors = {e.layer for e in model}
    for li in ck.layers:
        if li.name in with_tensors or _matches(pattern, li.name):
            grouped.setdefault(li.name, [])
    for e in model:
        grouped.setdefault(e.layer, []).append(e)
    if not ck.layers and ck.format in _UNORDERED_FORMATS:
        # These files order keys by their own rules (safetensors: dtype, then name), not by
        # the model; natural name order ("layer2" before "layer10") reads best.
        grouped = dict(sorted(grouped.items(), key=lambda item: _natural(item[0])))
    layers = []
    for name, entries in grouped.items():
        if len(entries) > 1 and ck.format in _UNORDERED_FORMATS:
            entries = sorted(entries, key=lambda e: (_ROLE_RANK.get(e.role, 99), e.part or ""))
        li = info_by_layer.get(name)
        kind = str(entries[0].kind) if entries else (str(li.kind) if li else "other")
        class_name = li.class_name if li else ""
        infos = [_tensor_info(e, shared=e.key in tied, aliases=tied.get(e.key, ()))
                 for e in entries]
        layers.append(_layer_summary(name, kind, class_name, infos))
    opt = [e for e in ck.optimizer_entries() if _matches(pattern, e.key, e.layer)]
    other = [_tensor_info(e) for e in ck if e.group is Group.OTHER
             and _matches(pattern, e.key, e.layer)]
    return Inspection(
        header=_header_for(ck), layers=tuple(layers),
        totals=_totals(t for layer in layers for t in layer.tensors),
        optimizer=_optimizer_summary(opt), other_tensors=tuple(other),
        extras={str(k): _plain(v) for k, v in ck.extras.items()}, filter=pattern,
        tensors_in_source=len(ck),
    )


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@functools.lru_cache(maxsize=None)
def _itemsize(dtype: str) -> int:
    import numpy as np

    try:
        return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    except TypeError:  # a framework dtype numpy does not know (e.g. float8)
        return 1
