"""Naming rules: describe tensors whose file carries no layer metadata.

A PyTorch state dict, a safetensors file or an ``.npz`` says only ``features.0.weight``
and a shape. This module turns such keys into a *layer* (the key minus its role suffix), a
*kind* and a *role*, from the key, the shape and the layer's sibling tensors (a layer with
``running_var`` is a BatchNorm; an LSTM's gate count comes from ``weight_hh``'s shape).

The rules are one ordered table per key style; the first rule that matches a layer wins.
A layer no rule recognises keeps ``Kind.OTHER`` and its tensors ``Role.OTHER``: a name alone
is never turned into a confident guess.

Two key styles are understood:

- torch style, dot-separated (``layer1.0.bn1.running_var``, ``lstm.weight_hh_l0_reverse``,
  ``attn.in_proj_weight``, ``attn.out_proj.weight``);
- Keras style, slash-separated, in flat containers (``conv1/kernel:0``, ``dense_1/bias``,
  ``layers/dense/vars/0``).

Recurrent tensors of a multi-layer or bidirectional torch RNN share one layer; their
``part`` says which (``None`` for layer 0 forward, else ``"l1"``, ``"l0_reverse"``, ...).

Example:
    >>> import numpy as np
    >>> from weightgraft.checkpoint import TensorEntry
    >>> es = [TensorEntry.from_array("features.0.weight", np.zeros((8, 3, 3, 3))),
    ...       TensorEntry.from_array("bn1.running_var", np.ones(8))]
    >>> [(e.layer, e.kind.value, e.role.value) for e in describe_entries(es, "torch")]
    [('features.0', 'conv2d', 'kernel'), ('bn1', 'batch_norm', 'moving_variance')]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .checkpoint import Convention, Group, Kind, Role, TensorEntry

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModuleTensors:
    """One layer's undescribed tensors: the layer path, its leaf names and their shapes."""

    name: str
    leaves: Mapping[str, Shape]

    @property
    def short(self) -> str:
        """The last path component, lower-cased: where a class hint usually lives."""
        return re.split(r"[./]", self.name)[-1].lower() if self.name else ""

    def rank(self, leaf: str) -> int | None:
        shape = self.leaves.get(leaf)
        return None if shape is None else len(shape)

    def has(self, *leaves: str) -> bool:
        return all(leaf in self.leaves for leaf in leaves)

    def named(self, pattern: str) -> bool:
        """Whether the layer's own name (last component) matches a hint pattern."""
        return re.search(pattern, self.short) is not None


@dataclass(frozen=True)
class LayerRule:
    """One row of a rule table: when it applies, the kind it gives, and each leaf's role."""

    name: str
    applies: Callable[[ModuleTensors], bool]
    kind: Callable[[ModuleTensors], Kind]
    roles: Callable[[ModuleTensors, str], Role]


def _fixed(kind: Kind) -> Callable[[ModuleTensors], Kind]:
    return lambda _m: kind


def _table(roles: Mapping[str, Role]) -> Callable[[ModuleTensors, str], Role]:
    return lambda _m, leaf: roles.get(leaf, Role.OTHER)


# -- name hints (matched against the layer's last path component) ---------------------
_EMBED = r"embed|^wte$|^wpe$|^emb$|^emb_|_emb$|^tok_embeddings$|^lookup"
_BN = r"^bn\d*$|^bn_|_bn\d*$|batchnorm|batch_norm"
_GN = r"^gn\d*$|groupnorm|group_norm"
_LN = r"^ln(_?\w*)?$|_ln\d*$|norm"
_RMS = r"rms"
_PRELU = r"prelu|^act\d*$|^act_|_act$|activation"
_TRANSPOSE = r"deconv|transpose|convt|upconv"
_DEPTHWISE = r"^dw|_dw|depthwise"

# -- torch style ----------------------------------------------------------------------
_RNN_LEAF = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
_RNN_ROLE = {
    ("weight", "ih"): Role.KERNEL,
    ("weight", "hh"): Role.RECURRENT_KERNEL,
    ("bias", "ih"): Role.BIAS,
    ("bias", "hh"): Role.RECURRENT_BIAS,
}
_GATES = {4: Kind.LSTM, 3: Kind.GRU, 1: Kind.SIMPLE_RNN}
_TORCH_AFFINE = {"weight": Role.KERNEL, "bias": Role.BIAS}
_TORCH_NORM = {"weight": Role.GAMMA, "bias": Role.BETA}
_TORCH_BN = {
    "weight": Role.GAMMA,
    "bias": Role.BETA,
    "running_mean": Role.MOVING_MEAN,
    "running_var": Role.MOVING_VARIANCE,
    "num_batches_tracked": Role.NUM_BATCHES_TRACKED,
}
_TORCH_MHA = {
    "in_proj_weight": Role.IN_PROJ_KERNEL,
    "in_proj_bias": Role.IN_PROJ_BIAS,
    "q_proj_weight": Role.QUERY_KERNEL,
    "k_proj_weight": Role.KEY_KERNEL,
    "v_proj_weight": Role.VALUE_KERNEL,
    "out_proj.weight": Role.OUTPUT_KERNEL,
    "out_proj.bias": Role.OUTPUT_BIAS,
}
_CONV = {3: Kind.CONV1D, 4: Kind.CONV2D, 5: Kind.CONV3D}
_CONV_T = {3: Kind.CONV1D_TRANSPOSE, 4: Kind.CONV2D_TRANSPOSE, 5: Kind.CONV3D_TRANSPOSE}


def _rnn_kind(m: ModuleTensors) -> Kind:
    """Gate multiple of ``weight_hh_l0`` (G*H, H) relative to the hidden size H."""
    hh = m.leaves.get("weight_hh_l0")
    if hh is None or len(hh) != 2 or hh[1] == 0:
        return Kind.OTHER
    hidden = hh[1]
    hr = m.leaves.get("weight_hr_l0")
    if hr is not None and len(hr) == 2:  # LSTM with proj_size: weight_hh is (4H, P)
        hidden = hr[1]
    if hh[0] % hidden:
        return Kind.OTHER
    return _GATES.get(hh[0] // hidden, Kind.OTHER)


def _rnn_role(_m: ModuleTensors, leaf: str) -> Role:
    match = _RNN_LEAF.match(leaf)
    return _RNN_ROLE.get((match.group(1), match.group(2)), Role.OTHER) if match else Role.OTHER


def _rank1_weight(m: ModuleTensors) -> bool:
    return m.rank("weight") == 1 and (m.rank("bias") in (None, 1))


def _single_alpha(m: ModuleTensors) -> bool:
    shape = m.leaves.get("weight")
    return shape is not None and math.prod(shape) == 1 and set(m.leaves) == {"weight"}


TORCH_RULES: tuple[LayerRule, ...] = (
    LayerRule("recurrent", lambda m: any(_RNN_LEAF.match(k) for k in m.leaves), _rnn_kind,
              _rnn_role),
    LayerRule("multi_head_attention", lambda m: m.has("in_proj_weight") or m.has("q_proj_weight"),
              _fixed(Kind.MULTI_HEAD_ATTENTION), _table(_TORCH_MHA)),
    LayerRule("batch_norm (running stats)",
              lambda m: m.has("running_mean") or m.has("running_var"),
              _fixed(Kind.BATCH_NORM), _table(_TORCH_BN)),
    LayerRule("batch_norm (name)", lambda m: _rank1_weight(m) and m.named(_BN),
              _fixed(Kind.BATCH_NORM), _table(_TORCH_BN)),
    LayerRule("group_norm (name)", lambda m: _rank1_weight(m) and m.named(_GN),
              _fixed(Kind.GROUP_NORM), _table(_TORCH_NORM)),
    LayerRule("prelu", lambda m: m.rank("weight") == 1 and not m.has("bias")
              and (m.named(_PRELU) or _single_alpha(m)),
              _fixed(Kind.PRELU), _table({"weight": Role.ALPHA})),
    LayerRule("layer_norm (name)",
              lambda m: _rank1_weight(m) and m.named(_LN) and not m.named(_RMS),
              _fixed(Kind.LAYER_NORM), _table(_TORCH_NORM)),
    LayerRule("embedding", lambda m: m.rank("weight") == 2 and not m.has("bias")
              and m.named(_EMBED), _fixed(Kind.EMBEDDING),
              _table({"weight": Role.EMBEDDINGS})),
    LayerRule("conv transpose (name)", lambda m: m.rank("weight") in _CONV_T
              and m.named(_TRANSPOSE), lambda m: _CONV_T[len(m.leaves["weight"])],
              _table(_TORCH_AFFINE)),
    LayerRule("depthwise conv (name)", lambda m: m.rank("weight") == 4
              and m.leaves["weight"][1] == 1 and m.named(_DEPTHWISE),
              _fixed(Kind.DEPTHWISE_CONV2D),
              _table({"weight": Role.DEPTHWISE_KERNEL, "bias": Role.BIAS})),
    LayerRule("conv (rank)", lambda m: m.rank("weight") in _CONV,
              lambda m: _CONV[len(m.leaves["weight"])], _table(_TORCH_AFFINE)),
    LayerRule("dense (rank 2)", lambda m: m.rank("weight") == 2, _fixed(Kind.DENSE),
              _table(_TORCH_AFFINE)),
)

# -- Keras style ----------------------------------------------------------------------
_KERAS_ROLES = {r.value: r for r in (
    Role.KERNEL, Role.BIAS, Role.RECURRENT_KERNEL, Role.DEPTHWISE_KERNEL,
    Role.POINTWISE_KERNEL, Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE,
    Role.EMBEDDINGS, Role.ALPHA)}
_MHA_PARTS = {
    "query": (Role.QUERY_KERNEL, Role.QUERY_BIAS),
    "key": (Role.KEY_KERNEL, Role.KEY_BIAS),
    "value": (Role.VALUE_KERNEL, Role.VALUE_BIAS),
    "attention_output": (Role.OUTPUT_KERNEL, Role.OUTPUT_BIAS),
}
_KERAS_CONV = {3: Kind.CONV1D, 4: Kind.CONV2D, 5: Kind.CONV3D}


def _keras_rnn_kind(m: ModuleTensors) -> Kind:
    """Gate multiple of ``recurrent_kernel`` (H, G*H)."""
    rk = m.leaves["recurrent_kernel"]
    if len(rk) != 2 or rk[0] == 0 or rk[1] % rk[0]:
        return Kind.OTHER
    return _GATES.get(rk[1] // rk[0], Kind.OTHER)


def _keras_role(_m: ModuleTensors, leaf: str) -> Role:
    return _KERAS_ROLES.get(leaf, Role.OTHER)


def _keras_mha_role(_m: ModuleTensors, leaf: str) -> Role:
    part, _, role = leaf.partition("/")
    pair = _MHA_PARTS.get(part)
    if pair is None or role not in ("kernel", "bias"):
        return Role.OTHER
    return pair[0] if role == "kernel" else pair[1]


def _keras_norm_kind(m: ModuleTensors) -> Kind:
    if m.named(r"group"):
        return Kind.GROUP_NORM
    if m.named(r"layer_norm|layernorm|^ln|_ln") and not m.named(_RMS):
        return Kind.LAYER_NORM
    return Kind.OTHER  # gamma/beta say the roles; the layer class is not recorded


KERAS_RULES: tuple[LayerRule, ...] = (
    LayerRule("multi_head_attention", lambda m: any("/" in k for k in m.leaves),
              _fixed(Kind.MULTI_HEAD_ATTENTION), _keras_mha_role),
    LayerRule("recurrent", lambda m: m.has("kernel", "recurrent_kernel"), _keras_rnn_kind,
              _keras_role),
    LayerRule("separable conv", lambda m: m.has("depthwise_kernel", "pointwise_kernel"),
              lambda m: Kind.SEPARABLE_CONV2D if m.rank("depthwise_kernel") == 4 else Kind.OTHER,
              _keras_role),
    LayerRule("depthwise conv", lambda m: m.rank("depthwise_kernel") == 4,
              _fixed(Kind.DEPTHWISE_CONV2D), _keras_role),
    # Keras 3 names a DepthwiseConv2D's weight plain ``kernel`` (kh, kw, C, multiplier).
    LayerRule("depthwise conv (name)", lambda m: m.rank("kernel") == 4 and m.named(_DEPTHWISE),
              _fixed(Kind.DEPTHWISE_CONV2D),
              _table({"kernel": Role.DEPTHWISE_KERNEL, "bias": Role.BIAS})),
    LayerRule("batch_norm", lambda m: m.has("moving_mean") or m.has("moving_variance"),
              _fixed(Kind.BATCH_NORM), _keras_role),
    LayerRule("normalization", lambda m: m.has("gamma") or m.has("beta"), _keras_norm_kind,
              _keras_role),
    LayerRule("embedding", lambda m: m.rank("embeddings") == 2, _fixed(Kind.EMBEDDING),
              _keras_role),
    LayerRule("prelu", lambda m: m.has("alpha"), _fixed(Kind.PRELU), _keras_role),
    LayerRule("einsum dense", lambda m: m.has("kernel") and m.named(r"einsum"),
              _fixed(Kind.OTHER), _keras_role),
    LayerRule("conv transpose (name)", lambda m: m.rank("kernel") in _CONV_T
              and m.named(_TRANSPOSE), lambda m: _CONV_T[len(m.leaves["kernel"])], _keras_role),
    LayerRule("conv (rank)", lambda m: m.rank("kernel") in _KERAS_CONV,
              lambda m: _KERAS_CONV[len(m.leaves["kernel"])], _keras_role),
    LayerRule("dense (rank 2)", lambda m: m.rank("kernel") == 2, _fixed(Kind.DENSE), _keras_role),
)

# Keras 3 ``vars/N`` keys hold no variable names: the order comes from each layer class's
# ``build()``. Only used when the layer's auto-generated name says the class, and only when
# the number of variables is one that class produces (BatchNorm without gamma shifts the order).
_VARS_ORDER: tuple[tuple[str, Kind, tuple[Role, ...], frozenset[int]], ...] = (
    (r"^separable_conv", Kind.SEPARABLE_CONV2D,
     (Role.DEPTHWISE_KERNEL, Role.POINTWISE_KERNEL, Role.BIAS), frozenset({2, 3})),
    (r"^depthwise_conv", Kind.DEPTHWISE_CONV2D, (Role.DEPTHWISE_KERNEL, Role.BIAS),
     frozenset({1, 2})),
    (r"^conv\dd_transpose", Kind.OTHER, (Role.KERNEL, Role.BIAS), frozenset({1, 2})),
    (r"^conv\dd", Kind.OTHER, (Role.KERNEL, Role.BIAS), frozenset({1, 2})),
    (r"^dense", Kind.DENSE, (Role.KERNEL, Role.BIAS), frozenset({1, 2})),
    (r"^batch_normalization", Kind.BATCH_NORM,
     (Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE), frozenset({4})),
    (r"^layer_normalization", Kind.LAYER_NORM, (Role.GAMMA, Role.BETA), frozenset({2})),
    (r"^group_normalization", Kind.GROUP_NORM, (Role.GAMMA, Role.BETA), frozenset({2})),
    (r"^embedding", Kind.EMBEDDING, (Role.EMBEDDINGS,), frozenset({1})),
    (r"^p_re_lu|^prelu", Kind.PRELU, (Role.ALPHA,), frozenset({1})),
    (r"^lstm", Kind.LSTM, (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS), frozenset({2, 3})),
    (r"^gru", Kind.GRU, (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS), frozenset({2, 3})),
    (r"^simple_rnn", Kind.SIMPLE_RNN, (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS),
     frozenset({2, 3})),
)
_VARS_KEY = re.compile(r"^(?P<layer>.*)/vars/(?P<index>\d+)$")


def _vars_describe(m: ModuleTensors) -> tuple[Kind, dict[str, Role]]:
    parts = [p.lower() for p in m.name.split("/") if p not in ("cell", "layers")]
    hint = parts[-1] if parts else ""
    for pattern, kind, order, counts in _VARS_ORDER:
        if not re.search(pattern, hint) or len(m.leaves) not in counts:
            continue
        if sorted(int(k) for k in m.leaves) != list(range(len(m.leaves))):
            break
        if kind is Kind.OTHER:  # conv family: the kernel's rank says 1d/2d/3d
            rank = m.rank("0") or 0
            table = _CONV_T if "transpose" in pattern else _KERAS_CONV
            kind = table.get(rank, Kind.OTHER)
        return kind, {str(i): role for i, role in enumerate(order)}
    return Kind.OTHER, {}


# -- splitting keys -------------------------------------------------------------------
def _split_torch(key: str) -> tuple[str, str]:
    layer, _, leaf = key.rpartition(".")
    return layer, leaf


def _split_keras(key: str) -> tuple[str, str]:
    bare = re.sub(r":\d+$", "", key)
    vars_match = _VARS_KEY.match(bare)
    if vars_match:
        return vars_match.group("layer"), vars_match.group("index")
    layer, _, leaf = bare.rpartition("/")
    return layer, leaf


def _is_keras_style(key: str) -> bool:
    return "/" in key


def _group(
    entries: Sequence[TensorEntry], split: Callable[[str], tuple[str, str]],
    merge_child: Callable[[str, str, Mapping[str, Mapping[str, Shape]]], bool],
) -> tuple[dict[str, dict[str, Shape]], dict[str, tuple[str, str]]]:
    """Leaves per layer, and each key's (layer, leaf); children folded into their parent
    where a rule says the child is part of it (MHA ``out_proj``, Keras MHA ``query``)."""
    modules: dict[str, dict[str, Shape]] = {}
    where: dict[str, tuple[str, str]] = {}
    for e in entries:
        layer, leaf = split(e.key)
        modules.setdefault(layer, {})[leaf] = e.shape
        where[e.key] = (layer, leaf)
    for key, (layer, leaf) in list(where.items()):
        sep = "/" if _is_keras_style(key) else "."
        parent, _, child = layer.rpartition(sep)
        if parent and parent != layer and merge_child(parent, child, modules):
            merged = f"{child}/{leaf}" if sep == "/" else f"{child}.{leaf}"
            modules.setdefault(parent, {})[merged] = modules[layer].pop(leaf)
            where[key] = (parent, merged)
    return {k: v for k, v in modules.items() if v}, where


def _torch_merge(parent: str, child: str, modules: Mapping[str, Mapping[str, Shape]]) -> bool:
    leaves = modules.get(parent, {})
    return child == "out_proj" and ("in_proj_weight" in leaves or "q_proj_weight" in leaves)


def _keras_merge(parent: str, child: str, modules: Mapping[str, Mapping[str, Shape]]) -> bool:
    if child not in _MHA_PARTS:
        return False
    siblings = {p.rpartition("/")[2] for p in modules if p.rpartition("/")[0] == parent}
    return {"query", "key", "value"} <= siblings


def _describe_modules(
    modules: Mapping[str, Mapping[str, Shape]], rules: Iterable[LayerRule],
) -> dict[str, tuple[Kind, Callable[[str], Role]]]:
    out: dict[str, tuple[Kind, Callable[[str], Role]]] = {}
    for name, leaves in modules.items():
        m = ModuleTensors(name, leaves)
        if leaves and all(k.isdigit() for k in leaves):  # Keras 3 ``vars/N``
            kind, roles = _vars_describe(m)
            out[name] = (kind, lambda leaf, roles=roles: roles.get(leaf, Role.OTHER))
            continue
        for rule in rules:
            if rule.applies(m):
                out[name] = (rule.kind(m), lambda leaf, m=m, rule=rule: rule.roles(m, leaf))
                break
        else:
            out[name] = (Kind.OTHER, lambda _leaf: Role.OTHER)
    return out


def _rnn_part(leaf: str) -> str | None:
    match = _RNN_LEAF.match(leaf)
    if not match:
        return None
    part = f"l{match.group(3)}{match.group(4) or ''}"
    return None if part == "l0" else part


def describe_entries(
    entries: Sequence[TensorEntry], convention: Convention | str | None = None,
) -> list[TensorEntry]:
    """Fill ``layer``, ``kind``, ``role`` (and ``convention``) of entries that lack them.

    Entries already described (kind or role set, e.g. by a Keras reader with metadata) and
    non-model entries (optimizer state) are returned unchanged. ``convention`` is the layout
    the file is known to use; when it is ``None``/``unknown``, a described tensor gets the
    convention its naming style implies (``weight`` keys: torch, ``kernel`` keys: keras),
    and an undescribed one keeps ``unknown``. The order of ``entries`` is kept.

    Example:
        >>> import numpy as np
        >>> from weightgraft.checkpoint import TensorEntry
        >>> es = [TensorEntry.from_array("lstm.weight_hh_l0", np.zeros((12, 3))),
        ...       TensorEntry.from_array("dense_1/kernel:0", np.zeros((4, 2)))]
        >>> [(e.layer, e.kind.value, e.role.value, e.convention.value)
        ...  for e in describe_entries(es)]
        [('lstm', 'lstm', 'recurrent_kernel', 'torch'), ('dense_1', 'dense', 'kernel', 'keras')]
    """
    given = Convention(convention) if convention else Convention.UNKNOWN
    todo = [e for e in entries
            if e.group is Group.MODEL and e.kind is Kind.OTHER and e.role is Role.OTHER]
    torch_style = [e for e in todo if not _is_keras_style(e.key)]
    keras_style = [e for e in todo if _is_keras_style(e.key)]
    described: dict[str, TensorEntry] = {}
    for batch, split, merge, rules, implied in (
        (torch_style, _split_torch, _torch_merge, TORCH_RULES, Convention.TORCH),
        (keras_style, _split_keras, _keras_merge, KERAS_RULES, Convention.KERAS),
    ):
        modules, where = _group(batch, split, merge)
        kinds = _describe_modules(modules, rules)
        for e in batch:
            layer, leaf = where[e.key]
            kind, role_of = kinds.get(layer, (Kind.OTHER, lambda _l: Role.OTHER))
            role = role_of(leaf)
            conv = e.convention
            if conv is Convention.UNKNOWN:
                conv = given if given is not Convention.UNKNOWN else (
                    implied if role is not Role.OTHER else Convention.UNKNOWN)
            changes: dict[str, object] = {"layer": e.layer or layer, "kind": kind, "role": role,
                                          "convention": conv}
            part = _rnn_part(leaf) if kind in (Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN) else None
            if part is not None and e.part is None:
                changes["part"] = part
            described[e.key] = e.with_(**changes)
    return [described.get(e.key, e) for e in entries]


def implied_convention(entries: Sequence[TensorEntry]) -> tuple[Convention, str]:
    """The one convention every described model tensor shares, and why; else ``unknown``.

    Example:
        >>> import numpy as np
        >>> from weightgraft.checkpoint import TensorEntry
        >>> implied_convention(describe_entries([TensorEntry.from_array("fc.weight",
        ...                                                             np.zeros((2, 3)))]))
        (<Convention.TORCH: 'torch'>, "inferred from tensor names: PyTorch ('weight', 'running_var') style")
    """
    found = {e.convention for e in entries
             if e.group is Group.MODEL and e.role is not Role.OTHER} - {Convention.UNKNOWN}
    if len(found) != 1:
        mixed = ", ".join(sorted(c.value for c in found))
        return Convention.UNKNOWN, (f"tensor names mix conventions ({mixed})" if found
                                    else "the file records no layout and no name says one")
    (only,) = found
    style = {Convention.TORCH: "PyTorch ('weight', 'running_var')",
             Convention.KERAS: "Keras ('kernel', 'moving_variance')"}.get(only, only.value)
    return only, f"inferred from tensor names: {style} style"
