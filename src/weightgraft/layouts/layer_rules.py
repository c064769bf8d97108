"""Whole-layer conversion for weights that do not map one tensor to one tensor.

``convert_layer`` brings a layer's arrays to canonical Keras form, then to the target
convention. Between the two it handles what per-tensor rules cannot:

- Keras 1 per-gate recurrent arrays (``"kernel:i"``, ``"recurrent_kernel:c"``, ``"bias:f"``
  ...; LSTM gates i, c, f, o stored, GRU z, r, h) joined in Keras 2/3 gate order;
- PyTorch's two recurrent biases: Keras -> PyTorch puts the Keras bias in ``bias_ih`` and
  zeros in ``bias_hh``; PyTorch -> Keras sums them (exact for what Keras wrote);
- GRU ``reset_after=True`` biases: Keras (2, 3H) rows = PyTorch bias_ih, bias_hh;
  ``reset_after=False`` (Keras 1 and Keras 2's default) has no PyTorch equivalent;
- PyTorch ``nn.MultiheadAttention``'s packed ``in_proj_weight``/``in_proj_bias``;
- BatchNorm's ``num_batches_tracked`` (PyTorch only);
- SeparableConv2D as a PyTorch depthwise + pointwise ``Conv2d`` pair.

Roles are convention-neutral names (``weightgraft.Role``): PyTorch ``weight_hh_l0`` is
``recurrent_kernel``, ``bias_hh_l0`` is ``recurrent_bias``, ``in_proj_weight`` is
``in_proj_kernel``, ``out_proj.weight`` is ``output_kernel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint import Convention, Kind, Role
from ..errors import LayoutError
from .ops import ReorderBlocks
from .registry import (
    Context,
    _convention,
    _kind,
    default_flatten_order,
    dim_ordering,
    side_context,
    tensor_transform,
)

K, T, TH = Convention.KERAS, Convention.TORCH, Convention.THEANO

# Gate letters in canonical (Keras 2/3) order, and the order Keras 1 stores them in.
GATES = {Kind.LSTM: "ifco", Kind.GRU: "zrh"}
KERAS1_GATES = {Kind.LSTM: "icfo", Kind.GRU: "zrh"}
_RECURRENT = (Kind.SIMPLE_RNN, Kind.LSTM, Kind.GRU)
_QKV = ((Role.QUERY_KERNEL, Role.QUERY_BIAS), (Role.KEY_KERNEL, Role.KEY_BIAS),
        (Role.VALUE_KERNEL, Role.VALUE_BIAS))
_GRU_KERAS_TO_TORCH = ReorderBlocks(0, (1, 0, 2), "gate blocks: z, r, h -> r, z, n")

RESET_AFTER_FALSE = (
    "Keras GRU(reset_after=False) (Keras 1 GRUs, and Keras 2's default) applies the reset "
    "gate before the recurrent matrix product; PyTorch's GRU applies it after, so no PyTorch "
    "weights compute the same function")


@dataclass(frozen=True)
class LayerConversion:
    """The converted arrays of one layer (keys are role values) and the steps taken.

    Example:
        >>> import numpy as np
        >>> c = convert_layer("lstm", "keras", "torch", {"kernel": np.zeros((3, 8)),
        ...     "recurrent_kernel": np.zeros((2, 8)), "bias": np.ones(8)})
        >>> sorted(c.arrays), c.arrays["recurrent_bias"].sum()
        (['bias', 'kernel', 'recurrent_bias', 'recurrent_kernel'], np.float64(0.0))
    """

    kind: Kind
    src: Convention
    dst: Convention
    arrays: Mapping[str, np.ndarray] = field(compare=False)
    steps: tuple[str, ...] = ()


def convert_layer(kind: Kind | str, src: Convention | str, dst: Convention | str,
                  arrays: Mapping[str, np.ndarray], context: Context | None = None
                  ) -> LayerConversion:
    """Convert all of one layer's arrays from ``src`` to ``dst`` convention.

    Example (a Keras 1 LSTM's 12 per-gate arrays to PyTorch):
        >>> import numpy as np
        >>> parts = {f"{r}:{g}": np.zeros(s) for g in "icfo" for r, s in
        ...          (("kernel", (3, 2)), ("recurrent_kernel", (2, 2)), ("bias", (2,)))}
        >>> c = convert_layer("lstm", "theano", "torch", parts)
        >>> c.arrays["kernel"].shape, c.steps[0]
        ((8, 3), 'join Keras 1 per-gate kernel arrays (i, f, c, o) along the last axis')
    """
    k, s, d = _kind(kind), _convention(src), _convention(dst)
    ctx: Context = context or {}
    steps: list[str] = []
    # Each half sees only its own side's facts; the canonical layout in between has none
    # (a shared keras_version "1" must not make the canonical array Keras 1 shaped).
    first: dict[str, Any] = {"src_context": side_context(ctx, "src")}
    second: dict[str, Any] = {"dst_context": side_context(ctx, "dst")}
    # The Flatten row permutation acts once, on the way to canonical, with the orders of
    # the real source and target (not of the canonical convention in between).
    if ctx.get("flatten"):
        spec = dict(ctx["flatten"])
        shape = spec.get("feature_shape") or {}
        spec["src_order"] = spec.get("src_order") or default_flatten_order(
            shape, s, dim_ordering(side_context(ctx, "src")))
        spec["dst_order"] = spec.get("dst_order") or default_flatten_order(
            shape, d, dim_ordering(side_context(ctx, "dst")))
        first["flatten"] = spec
    canonical = _to_canonical(k, s, dict(arrays), first, steps)
    out = _from_canonical(k, d, canonical, second, steps)
    return LayerConversion(k, s, d, out, tuple(steps))


def roles_in(kind: Kind | str, convention: Convention | str,
             context: Context | None = None) -> tuple[str, ...]:
    """The roles (array keys) a layer of ``kind`` holds in ``convention``.

    Context: ``use_bias`` (default True), ``per_gate`` (Keras 1 per-gate arrays),
    ``separate_qkv`` (PyTorch attention with kdim/vdim: q/k/v_proj_weight apart).

    Example:
        >>> roles_in("lstm", "torch")
        ('kernel', 'recurrent_kernel', 'bias', 'recurrent_bias')
        >>> roles_in("simple_rnn", "theano", {"use_bias": False})
        ('kernel', 'recurrent_kernel')
    """
    k, c = _kind(kind), _convention(convention)
    ctx: Context = context or {}
    bias = bool(ctx.get("use_bias", True))
    b = (Role.BIAS,) if bias else ()
    table: dict[Kind, tuple[Role, ...]] = {
        Kind.DENSE: (Role.KERNEL, *b),
        Kind.DEPTHWISE_CONV2D: (Role.KERNEL, *b),
        Kind.SEPARABLE_CONV2D: (Role.DEPTHWISE_KERNEL, Role.POINTWISE_KERNEL, *b),
        Kind.BATCH_NORM: (Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE)
        + ((Role.NUM_BATCHES_TRACKED,) if c is T else ()),
        Kind.LAYER_NORM: (Role.GAMMA, Role.BETA),
        Kind.GROUP_NORM: (Role.GAMMA, Role.BETA),
        Kind.EMBEDDING: (Role.EMBEDDINGS,),
        Kind.PRELU: (Role.ALPHA,),
    }
    for conv in (Kind.CONV1D, Kind.CONV2D, Kind.CONV3D, Kind.CONV1D_TRANSPOSE,
                 Kind.CONV2D_TRANSPOSE, Kind.CONV3D_TRANSPOSE):
        table[conv] = (Role.KERNEL, *b)
    if k in _RECURRENT:
        roles = (Role.KERNEL, Role.RECURRENT_KERNEL, *b)
        if c is T and bias:
            roles += (Role.RECURRENT_BIAS,)
        if ctx.get("per_gate") and k in GATES and c is not T:
            return tuple(f"{r.value}:{g}" for g in KERAS1_GATES[k] for r in roles)
        return tuple(r.value for r in roles)
    if k is Kind.MULTI_HEAD_ATTENTION:
        out_roles = (Role.OUTPUT_KERNEL, *((Role.OUTPUT_BIAS,) if bias else ()))
        if c is T:
            # PyTorch packs q, k, v kernels unless keys or values have their own width
            # (kdim/vdim): then q_proj_weight, k_proj_weight, v_proj_weight.
            kernels = (tuple(p[0] for p in _QKV) if ctx.get("separate_qkv")
                       else (Role.IN_PROJ_KERNEL,))
            in_roles: tuple[Role, ...] = (*kernels, *((Role.IN_PROJ_BIAS,) if bias else ()))
        else:
            in_roles = tuple(r for pair in _QKV for r in (pair if bias else pair[:1]))
        return tuple(r.value for r in (*in_roles, *out_roles))
    if k not in table:
        raise LayoutError(f"no role list for layer kind {k} in the {c} convention",
                          expected="a kind listed in docs/layouts.md")
    return tuple(r.value for r in table[k])


# -- to canonical -------------------------------------------------------------------------

def _to_canonical(kind: Kind, src: Convention, arrays: dict[str, np.ndarray], ctx: Context,
                  steps: list[str]) -> dict[str, np.ndarray]:
    if any(":" in key for key in arrays):
        arrays = _join_parts(kind, src, arrays, steps)
    if src is T:
        arrays = _unpack_torch(kind, arrays, ctx, steps)
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key == "_gru_bias":  # made canonical by _unpack_torch: no per-tensor rule exists
            out[key] = value
            continue
        t = tensor_transform(kind, key, src, K, ctx)
        out[key] = t.apply(value)
        steps.extend(f"{key}: {step}" for step in t.steps)
    return out


def _join_parts(kind: Kind, src: Convention, arrays: dict[str, np.ndarray],
                steps: list[str]) -> dict[str, np.ndarray]:
    if kind not in GATES or src is T:
        raise LayoutError(f"per-part arrays {sorted(arrays)} for a {kind} layer in the {src} "
                          "convention", expected="per-gate parts only for Keras 1 LSTM/GRU "
                          "(convention keras or theano)",
                          fix="pass whole arrays keyed by role ('kernel', 'bias', ...)")
    gates = GATES[kind]
    parts: dict[str, dict[str, np.ndarray]] = {}
    whole: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        role, _, part = key.partition(":")
        if part:
            parts.setdefault(role, {})[part] = np.asarray(value)
        else:
            whole[key] = value
    for role, by_gate in parts.items():
        if sorted(by_gate) != sorted(gates):
            raise LayoutError(f"{kind} {role} has parts {sorted(by_gate)}",
                              expected=f"one array per gate {', '.join(gates)}",
                              fix="pass every Keras 1 gate array, keyed like 'kernel:i'")
        whole[role] = np.concatenate([by_gate[g] for g in gates], axis=-1)
        steps.append(f"join Keras 1 per-gate {role} arrays ({', '.join(gates)}) "
                     "along the last axis")
    if kind is Kind.GRU:
        steps.append("Keras 1 GRUs reset before the recurrent product: reset_after=False")
    return whole


def _unpack_torch(kind: Kind, arrays: dict[str, np.ndarray], ctx: Context,
                  steps: list[str]) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    if kind is Kind.BATCH_NORM and arrays.pop(Role.NUM_BATCHES_TRACKED.value, None) is not None:
        steps.append("num_batches_tracked dropped (Keras keeps no batch count)")
    if kind in (Kind.SIMPLE_RNN, Kind.LSTM):
        hh = arrays.pop(Role.RECURRENT_BIAS.value, None)
        if hh is not None:
            ih = arrays.get(Role.BIAS.value)
            arrays[Role.BIAS.value] = hh if ih is None else np.asarray(ih) + np.asarray(hh)
            steps.append("bias = bias_ih + bias_hh (Keras keeps one bias)")
    if kind is Kind.GRU:
        if not side_context(ctx, "src").get("reset_after", True):
            raise LayoutError(RESET_AFTER_FALSE, expected="reset_after=True",
                              fix="use Keras GRU(reset_after=True) on the Keras side")
        ih, hh = arrays.pop(Role.BIAS.value, None), arrays.pop(Role.RECURRENT_BIAS.value, None)
        if (ih is None) != (hh is None):
            raise LayoutError("a PyTorch GRU with only one of bias_ih, bias_hh",
                              expected="both or neither")
        if ih is not None:
            inv = _GRU_KERAS_TO_TORCH.inverse()
            arrays["_gru_bias"] = np.stack([inv.apply(np.asarray(ih)), inv.apply(np.asarray(hh))])
            steps.append("bias = stack(bias_ih, bias_hh) with gates r, z, n -> z, r, h "
                         "(Keras reset_after=True)")
    if kind is Kind.MULTI_HEAD_ATTENTION:
        for packed, index in ((Role.IN_PROJ_KERNEL, 0), (Role.IN_PROJ_BIAS, 1)):
            value = arrays.pop(packed.value, None)
            if value is None:
                continue
            value = np.asarray(value)
            if value.shape[0] % 3:
                raise LayoutError(f"in_proj of shape {value.shape}", expected="3*E rows (q, k, v)")
            for pair, chunk in zip(_QKV, np.split(value, 3, axis=0)):
                arrays[pair[index].value] = chunk
            steps.append(f"split {packed.value} into query, key, value")
    return arrays



# -- from canonical -----------------------------------------------------------------------

def _from_canonical(kind: Kind, dst: Convention, canonical: dict[str, np.ndarray],
                    ctx: Context, steps: list[str]) -> dict[str, np.ndarray]:
    arrays = dict(canonical)
    if "_gru_bias" in arrays:
        arrays[Role.BIAS.value] = arrays.pop("_gru_bias")
    if dst is not T:
        out = {}
        for key, value in arrays.items():
            t = tensor_transform(kind, key, K, dst, ctx)
            out[key] = t.apply(value)
            steps.extend(f"{key}: {step}" for step in t.steps)
        return out
    special: dict[str, np.ndarray] = {}
    if kind is Kind.GRU and Role.BIAS.value in arrays:
        bias = np.asarray(arrays.pop(Role.BIAS.value))
        if bias.ndim != 2 or bias.shape[0] != 2:
            raise LayoutError(f"{RESET_AFTER_FALSE} (the Keras bias has shape {bias.shape})",
                              expected="a Keras GRU(reset_after=True) bias of shape (2, 3H)",
                              fix="retrain or rebuild the model with reset_after=True; "
                                  "weights cannot be converted exactly")
        special[Role.BIAS.value] = _GRU_KERAS_TO_TORCH.apply(bias[0])
        special[Role.RECURRENT_BIAS.value] = _GRU_KERAS_TO_TORCH.apply(bias[1])
        steps.append("bias rows (input, recurrent) -> bias_ih, bias_hh "
                     "with gates z, r, h -> r, z, n")
    elif kind is Kind.GRU and not side_context(ctx, "dst").get("reset_after", True):
        raise LayoutError(RESET_AFTER_FALSE, expected="reset_after=True",
                          fix="use Keras GRU(reset_after=True)")
    if kind in (Kind.SIMPLE_RNN, Kind.LSTM) and Role.BIAS.value in arrays:
        special[Role.RECURRENT_BIAS.value] = np.zeros_like(arrays[Role.BIAS.value])
        steps.append("bias -> bias_ih; bias_hh = 0 (PyTorch adds both)")
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        t = tensor_transform(kind, key, K, T, ctx)
        out[key] = t.apply(value)
        steps.extend(f"{key}: {step}" for step in t.steps)
    out.update(special)
    if kind is Kind.MULTI_HEAD_ATTENTION:
        for packed, index in ((Role.IN_PROJ_KERNEL, 0), (Role.IN_PROJ_BIAS, 1)):
            names = [pair[index].value for pair in _QKV]
            if not all(n in out for n in names):
                continue
            if len({out[n].shape for n in names}) > 1:
                # Keys or values of another width than the queries (PyTorch kdim/vdim):
                # PyTorch then keeps q_proj_weight, k_proj_weight, v_proj_weight apart.
                steps.append(f"keep {', '.join(names)} apart (widths differ: kdim/vdim)")
                continue
            out[packed.value] = np.concatenate([out.pop(n) for n in names], axis=0)
            steps.append(f"pack query, key, value into {packed.value}")
    if kind is Kind.BATCH_NORM and Role.MOVING_MEAN.value in out:
        out[Role.NUM_BATCHES_TRACKED.value] = np.zeros((), dtype=np.int64)
        steps.append("num_batches_tracked = 0 (Keras keeps no batch count)")
    return out
