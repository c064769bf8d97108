"""Both sides of a match as weighted layers: grouped tensors, canonical shapes, names.

Matching works on layers, not tensors: a convolution's kernel and bias travel together, an
LSTM's arrays travel together. Each side becomes a list of ``LayerGroup`` in execution order
(the checkpoint's layer list, or the live model's probe order). Shapes are compared in the
canonical convention (keras), computed from the layout rules without touching tensor data.

Example:
    >>> normalise_name("module.features/conv1_3:0")
    'features.conv1'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint import Checkpoint, Convention, Group, Kind, Role, TensorEntry
from ..modelview import ModelView

# Recurrent layers and attention convert as whole layers (their tensors do not map 1:1).
LAYER_KINDS = frozenset({Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN, Kind.MULTI_HEAD_ATTENTION})
GATES = {Kind.LSTM: 4, Kind.GRU: 3, Kind.SIMPLE_RNN: 1}
# Target slots that are state, not learned content: no source is expected for them.
OPTIONAL_ROLES = frozenset({Role.NUM_BATCHES_TRACKED})

_WRAPPERS = ("module", "_orig_mod", "model")
_COUNTER = re.compile(r"_\d+$")


def normalise_name(name: str) -> str:
    """A layer or key name with framework decoration removed.

    Strips ``:0`` suffixes, wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``),
    layer-name counters (``conv1_3`` -> ``conv1``), treats ``/`` and ``.`` alike, ``-`` as
    ``_``, ignores case, and collapses a repeated component (``conv1/conv1_3`` -> ``conv1``).
    """
    text = re.sub(r":\d+$", "", name).replace("/", ".").replace("-", "_").lower()
    parts = [p for p in text.split(".") if p]
    while len(parts) > 1 and parts[0] in _WRAPPERS:
        parts = parts[1:]
    out: list[str] = []
    for part in parts:
        part = _COUNTER.sub("", part) if not part.isdigit() else part
        if not out or out[-1] != part:
            out.append(part)
    return ".".join(out)


@dataclass
class LayerGroup:
    """The tensors of one weighted layer on one side of a match."""

    name: str
    kind: Kind
    keys: list[str]
    roles: list[str]  # role value, with ":part" for per-part arrays
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    conventions: list[Convention]
    config: dict[str, Any] = field(default_factory=dict)
    order: int = 0
    optional: list[str] = field(default_factory=list)  # keys left out of matching on purpose
    _signature: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    @property
    def convention(self) -> Convention:
        return next((c for c in self.conventions if c is not Convention.UNKNOWN),
                    Convention.UNKNOWN)

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    def signature(self) -> tuple[Any, ...]:
        """What must agree for two layers to be interchangeable (kind + canonical shapes)."""
        if self._signature is None:
            self._signature = (self.kind, layer_shape_signature(self))
        return self._signature


def base_role(key_role: str) -> Role:
    return Role(key_role.split(":", 1)[0])


def canonical_shape(kind: Kind, role: str, convention: Convention,
                    shape: tuple[int, ...], context: dict[str, Any] | None = None
                    ) -> tuple[int, ...] | None:
    """``shape`` as it would be in the keras convention, or None where no rule applies.

    Example:
        >>> canonical_shape(Kind.CONV2D, "kernel", Convention.TORCH, (8, 3, 5, 5))
        (5, 5, 3, 8)
    """
    if convention in (Convention.KERAS, Convention.UNKNOWN):
        return tuple(shape)
    from ..errors import LayoutError, ShapeMismatchError

    try:
        transform = cached_transform(kind, base_role(role), convention, Convention.KERAS, context)
    except (LayoutError, ValueError):
        return None
    try:
        return simulate_shape(transform.ops, tuple(shape))
    except ShapeMismatchError:
        return None


def cached_transform(kind: Kind, role: Role | str, src: Convention, dst: Convention,
                     context: Mapping[str, Any] | None = None) -> Any:
    """``layouts.tensor_transform``, memoised: planning asks the same question thousands of
    times (every conv kernel of a 10,000-tensor model)."""
    key = json.dumps(context, sort_keys=True, default=str) if context else ""
    return _transform(kind, Role(role) if not isinstance(role, Role) else role, src, dst, key)


@functools.lru_cache(maxsize=4096)
def _transform(kind: Kind, role: Role, src: Convention, dst: Convention, context: str) -> Any:
    from .. import layouts

    return layouts.tensor_transform(kind, role, src, dst, json.loads(context) if context else None)


def simulate_shape(ops: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a sequence of layout operations produces, without any data.

    Falls back to running the operations on a one-byte-per-element array for operation
    types it does not know.
    """
    out = list(shape)
    for op in ops:
        name = getattr(op, "name", "")
        if name == "transpose":
            if len(op.axes) != len(out):
                from ..errors import ShapeMismatchError
                raise ShapeMismatchError(f"rank {len(out)} cannot take {op.describe()}")
            out = [out[i] for i in op.axes]
        elif name in ("flip", "reorder_blocks"):
            continue
        elif name == "split_axis":
            sizes = list(op.sizes)
            if -1 in sizes:
                known = int(np.prod([s for s in sizes if s != -1]))
                sizes[sizes.index(-1)] = out[op.axis] // max(known, 1)
            out = out[:op.axis] + sizes + out[op.axis + 1:]
        elif name == "merge_axes":
            n = len(op.sizes)
            out = out[:op.axis] + [int(np.prod(out[op.axis:op.axis + n]))] + out[op.axis + n:]
        else:
            out = list(op.apply(np.empty(tuple(out), dtype=np.uint8)).shape)
    return tuple(out)


def layer_shape_signature(group: LayerGroup) -> tuple[Any, ...]:
    """Canonical shapes by role; recurrent layers by (input size, units, has bias)."""
    if group.kind in GATES:
        return _recurrent_signature(group)
    if group.kind is Kind.MULTI_HEAD_ATTENTION:
        return _attention_signature(group)
    items = []
    conv = group.convention
    # Only Theano-era kernels and Keras 1 Conv1D depend on the layer's own config.
    ctx = layer_context(group.config) if conv is not Convention.TORCH else None
    for role, shape in zip(group.roles, group.shapes):
        canon = canonical_shape(group.kind, role, conv, shape, ctx)
        if canon is not None and _is_depthwise(group.kind, role) and len(canon) == 4:
            # (kh, kw, in, mult): PyTorch stores in*mult without telling the split.
            canon = (canon[0], canon[1], canon[2] * canon[3])
        items.append((role, canon if canon is not None else ("raw", tuple(sorted(shape)))))
    return tuple(sorted(items, key=lambda x: x[0]))


def _is_depthwise(kind: Kind, role: str) -> bool:
    return role == Role.DEPTHWISE_KERNEL.value or (kind is Kind.DEPTHWISE_CONV2D
                                                    and role == Role.KERNEL.value)


def depth_multiplier(*groups: LayerGroup) -> int | None:
    """The depthwise multiplier, read from whichever side stores it as its own axis (Keras)."""
    for g in groups:
        if g.convention is Convention.TORCH:
            continue
        for role, shape in zip(g.roles, g.shapes):
            if _is_depthwise(g.kind, role) and len(shape) == 4:
                return int(shape[3])
    return None


def layer_context(config: dict[str, Any]) -> dict[str, Any]:
    """What the layout rules need from a source layer's own config (``dim_ordering``...)."""
    ctx: dict[str, Any] = {}
    # Keras 1 records dim_ordering, which decides how its kernels are stored; Keras 2+
    # records data_format, which decides only the Flatten order (kernels are always
    # (*spatial, in, out)), so it is passed on as it is rather than turned into 'th'/'tf'.
    if config.get("dim_ordering") in ("th", "tf"):
        ctx["dim_ordering"] = config["dim_ordering"]
    elif config.get("data_format") in ("channels_first", "channels_last"):
        ctx["data_format"] = config["data_format"]
    for key in ("keras_version", "depth_multiplier", "reset_after", "num_heads", "use_bias"):
        if key in config:
            ctx[key] = config[key]
    return ctx


def _recurrent_signature(group: LayerGroup) -> tuple[Any, ...]:
    gates = GATES[group.kind]
    conv = group.convention
    inputs = units = None
    for role, shape in zip(group.roles, group.shapes):
        base, _, part = role.partition(":")
        if base != Role.KERNEL.value or len(shape) != 2:
            continue
        if part:  # Keras 1 per-gate array (in, units)
            inputs, units = shape
        elif conv is Convention.TORCH:  # (gates*units, in)
            inputs, units = shape[1], shape[0] // gates
        else:  # (in, gates*units)
            inputs, units = shape[0], shape[1] // gates
    has_bias = any(r.startswith(Role.BIAS.value) for r in group.roles)
    return ("recurrent", inputs, units, has_bias)


def _attention_signature(group: LayerGroup) -> tuple[Any, ...]:
    """(query, key, value widths, projected width, output width, has bias): the same for a
    Keras MultiHeadAttention (per-projection (dim, heads, head_dim) kernels) and a PyTorch
    MultiheadAttention (packed in_proj_weight, or q/k/v_proj_weight with kdim/vdim)."""
    dims: dict[str, int] = {}
    torch = group.convention is Convention.TORCH
    for role, shape in zip(group.roles, group.shapes):
        r = base_role(role)
        if r is Role.IN_PROJ_KERNEL and len(shape) == 2:  # (3 * inner, E)
            dims.update(query=shape[1], key=shape[1], value=shape[1], inner=shape[0] // 3)
        elif r in (Role.QUERY_KERNEL, Role.KEY_KERNEL, Role.VALUE_KERNEL):
            name = r.value.split("_")[0]
            if torch and len(shape) == 2:  # (inner, dim)
                dims[name], dims["inner"] = shape[1], shape[0]
            elif len(shape) == 3:  # (dim, heads, head_dim)
                dims[name], dims["inner"] = shape[0], shape[1] * shape[2]
        elif r is Role.OUTPUT_KERNEL:
            dims["out"] = shape[0] if torch and len(shape) == 2 else shape[-1]
    has_bias = any(base_role(r) in (Role.IN_PROJ_BIAS, Role.QUERY_BIAS, Role.OUTPUT_BIAS)
                   for r in group.roles)
    return ("attention", *(dims.get(k) for k in ("query", "key", "value", "inner", "out")),
            has_bias)


def _layer_of(entry: TensorEntry) -> str:
    if entry.layer:
        return entry.layer
    for sep in ("/", "."):
        if sep in entry.key:
            return entry.key.rsplit(sep, 1)[0]
    return entry.key


def _role_key(entry: TensorEntry) -> str:
    return entry.role.value + (f":{entry.part}" if entry.part else "")


def source_groups(ckpt: Checkpoint, layer_order: list[str] | None = None,
                  configs: dict[str, dict[str, Any]] | None = None,
                  convention: Convention | None = None) -> tuple[list[LayerGroup], list[str]]:
    """The checkpoint's model tensors grouped by layer, in the model's layer order.

    Returns the groups and the keys left out (optimizer state, non-model entries).
    ``convention`` overrides every entry's own convention (``--source-convention``).
    """
    ignored = [e.key for e in ckpt.entries if e.group is not Group.MODEL]
    layer_configs = dict(configs or {})
    order_names = list(layer_order or [])
    for info in ckpt.layers:
        layer_configs.setdefault(info.name, dict(info.config))
        if info.name not in order_names:
            order_names.append(info.name)
        for k in info.keys:
            if k in ckpt:
                layer_configs.setdefault(_layer_of(ckpt[k]), dict(info.config))
    rank = {name: i for i, name in enumerate(order_names)}
    groups: dict[str, LayerGroup] = {}
    first_seen: dict[str, int] = {}
    for i, entry in enumerate(ckpt.model_entries()):
        name = _layer_of(entry)
        conv = convention or entry.convention
        if conv is Convention.UNKNOWN:
            conv = ckpt.convention
        g = groups.get(name)
        if g is None:
            g = groups[name] = LayerGroup(name, entry.kind, [], [], [], [], [],
                                          config=layer_configs.get(name, {}))
            first_seen[name] = i
        if entry.role in OPTIONAL_ROLES:
            g.optional.append(entry.key)
            continue
        g.keys.append(entry.key)
        g.roles.append(_role_key(entry))
        g.shapes.append(entry.shape)
        g.dtypes.append(entry.dtype)
        g.conventions.append(conv)
    big = len(rank) + 1

    def position(name: str) -> tuple[int, int]:
        if name in rank:
            return (rank[name], first_seen[name])
        top = name.split("/")[0]
        return (rank.get(top, big), first_seen[name])

    ordered = sorted(groups.values(), key=lambda g: position(g.name))
    for i, g in enumerate(ordered):
        g.order = i
    return ordered, ignored


def target_groups(target: ModelView) -> list[LayerGroup]:
    """The live model's weighted layers in execution order, one group per layer."""
    slots = target.slots
    layers = {lv.path: lv for lv in target.layers}
    by_layer: dict[str, list[str]] = {}
    for key, slot in slots.items():
        by_layer.setdefault(slot.layer, []).append(key)
    exec_rank = {lv.path: i for i, lv in enumerate(target.layers)}
    first = {n: i for i, n in enumerate(by_layer)}
    names = sorted(by_layer, key=lambda n: (exec_rank.get(n, len(exec_rank)), first[n]))
    out = []
    for i, name in enumerate(names):
        head = slots[by_layer[name][0]]
        lv = layers.get(name)
        g = LayerGroup(name, lv.kind if lv is not None else head.kind, [], [], [], [], [],
                       config=dict(lv.config) if lv is not None else {}, order=i)
        for key in by_layer[name]:
            slot = slots[key]
            if slot.role in OPTIONAL_ROLES:
                g.optional.append(key)
                continue
            g.keys.append(key)
            g.roles.append(slot.role.value)
            g.shapes.append(tuple(slot.shape))
            g.dtypes.append(slot.dtype)
            g.conventions.append(slot.convention)
        out.append(g)
    return out


def merge_separable(groups: list[LayerGroup]) -> tuple[list[LayerGroup], dict[str, list[str]]]:
    """Present each depthwise conv (no bias) directly followed by a 1x1 conv as one separable
    layer, the way Keras' SeparableConv2D holds them, for the structure tier.

    Returns the new list and, for each merged group, the names of the layers it replaced.

    Example:
        >>> merge_separable([])
        ([], {})
    """
    out: list[LayerGroup] = []
    merged: dict[str, list[str]] = {}
    i = 0
    while i < len(groups):
        dw = groups[i]
        pw = groups[i + 1] if i + 1 < len(groups) else None
        if pw is not None and _separable_pair(dw, pw):
            g = LayerGroup(f"{dw.name}+{pw.name}", Kind.SEPARABLE_CONV2D,
                           [dw.keys[0], *pw.keys], [], [dw.shapes[0], *pw.shapes],
                           [dw.dtypes[0], *pw.dtypes], [dw.conventions[0], *pw.conventions],
                           config={**pw.config, **dw.config}, order=dw.order,
                           optional=dw.optional + pw.optional)
            g.roles = [Role.DEPTHWISE_KERNEL.value,
                       *(Role.POINTWISE_KERNEL.value if r == Role.KERNEL.value else r
                         for r in pw.roles)]
            merged[g.name] = [dw.name, pw.name]
            out.append(g)
            i += 2
            continue
        out.append(dw)
        i += 1
    return out, merged


def _separable_pair(dw: LayerGroup, pw: LayerGroup) -> bool:
    if dw.kind is not Kind.DEPTHWISE_CONV2D or pw.kind is not Kind.CONV2D:
        return False
    if len(dw.keys) != 1 or dw.roles[0] not in (Role.KERNEL.value, Role.DEPTHWISE_KERNEL.value):
        return False
    kernel = next((s for r, s in zip(pw.roles, pw.shapes) if r == Role.KERNEL.value), None)
    if kernel is None or len(kernel) != 4:
        return False
    spatial = kernel[2:] if pw.convention is Convention.TORCH else kernel[:2]
    return tuple(spatial) == (1, 1)
