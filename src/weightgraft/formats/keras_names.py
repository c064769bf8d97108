"""Keras class names -> kinds, and Keras 1/2/3 variable names -> roles: one table for all readers.

Keras has named the same layers three ways: by class (``Conv2D``, Keras 1 ``Convolution2D``),
by auto-generated layer name (Keras 1 ``convolution2d_1``, Keras 2 ``conv2d_1``, Keras 3
``.weights.h5`` path segments ``conv2d_1``, the class in snake case), and by variable name
(Keras 1 ``convolution2d_1_W``, ``lstm_1_U_i``; Keras 2 ``conv2d_1/kernel:0``; Keras 3 stores
no variable names at all, only positions ``vars/0``, ``vars/1`` in each layer's own order).
Everything that maps those names lives here, so the three Keras readers agree.

Example:
    >>> kind_for_class("Convolution2D"), kind_for_layer_name("batch_normalization_3")
    (<Kind.CONV2D: 'conv2d'>, <Kind.BATCH_NORM: 'batch_norm'>)
    >>> role_for_variable("lstm_1_U_f", Kind.LSTM)
    (<Role.RECURRENT_KERNEL: 'recurrent_kernel'>, 'f')
    >>> role_for_variable("conv1_3/kernel:0", Kind.CONV2D)
    (<Role.KERNEL: 'kernel'>, None)
    >>> role_for_position(Kind.BATCH_NORM, 3, 4)
    <Role.MOVING_VARIANCE: 'moving_variance'>
"""

from __future__ import annotations

import re
from typing import Any

from ..checkpoint import Kind, Role

# Class name (Keras 1, 2 and 3 spellings; cells and CuDNN variants) -> kind.
CLASS_KINDS: dict[str, Kind] = {
    "Dense": Kind.DENSE, "EinsumDense": Kind.DENSE,
    "Conv1D": Kind.CONV1D, "Convolution1D": Kind.CONV1D, "AtrousConvolution1D": Kind.CONV1D,
    "Conv2D": Kind.CONV2D, "Convolution2D": Kind.CONV2D, "AtrousConvolution2D": Kind.CONV2D,
    "Conv3D": Kind.CONV3D, "Convolution3D": Kind.CONV3D,
    "DepthwiseConv2D": Kind.DEPTHWISE_CONV2D,
    "SeparableConv2D": Kind.SEPARABLE_CONV2D, "SeparableConvolution2D": Kind.SEPARABLE_CONV2D,
    "Conv1DTranspose": Kind.CONV1D_TRANSPOSE,
    "Conv2DTranspose": Kind.CONV2D_TRANSPOSE, "Deconvolution2D": Kind.CONV2D_TRANSPOSE,
    "Conv3DTranspose": Kind.CONV3D_TRANSPOSE, "Deconvolution3D": Kind.CONV3D_TRANSPOSE,
    "BatchNormalization": Kind.BATCH_NORM, "LayerNormalization": Kind.LAYER_NORM,
    "GroupNormalization": Kind.GROUP_NORM, "Embedding": Kind.EMBEDDING,
    "LSTM": Kind.LSTM, "LSTMCell": Kind.LSTM, "CuDNNLSTM": Kind.LSTM,
    "GRU": Kind.GRU, "GRUCell": Kind.GRU, "CuDNNGRU": Kind.GRU,
    "SimpleRNN": Kind.SIMPLE_RNN, "SimpleRNNCell": Kind.SIMPLE_RNN,
    "PReLU": Kind.PRELU, "MultiHeadAttention": Kind.MULTI_HEAD_ATTENTION,
}

# Wrappers whose weights belong to the layer they wrap.
WRAPPER_CLASSES = frozenset({"Bidirectional", "TimeDistributed"})
CONTAINER_CLASSES = frozenset({"Sequential", "Model", "Functional"})

CONV_KINDS = frozenset({Kind.CONV1D, Kind.CONV2D, Kind.CONV3D, Kind.CONV1D_TRANSPOSE,
                        Kind.CONV2D_TRANSPOSE, Kind.CONV3D_TRANSPOSE,
                        Kind.DEPTHWISE_CONV2D, Kind.SEPARABLE_CONV2D})
RECURRENT_KINDS = frozenset({Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN})


def to_snake_case(name: str) -> str:
    """Keras's own class -> path-segment rule (``PReLU`` -> ``p_re_lu``).

    Example:
        >>> to_snake_case("BatchNormalization"), to_snake_case("Conv2D")
        ('batch_normalization', 'conv2d')
    """
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# Auto-generated layer names: Keras 1 used the lower-cased class name, Keras 2/3 snake case.
_NAME_KINDS: dict[str, Kind] = {}
for _cls, _kind in CLASS_KINDS.items():
    _NAME_KINDS.setdefault(_cls.lower(), _kind)
    _NAME_KINDS.setdefault(to_snake_case(_cls), _kind)
_COUNTER = re.compile(r"_\d+$")


def kind_for_class(class_name: str) -> Kind:
    """The kind of a Keras layer class (``Kind.OTHER`` for classes without weights we know).

    Example:
        >>> kind_for_class("SeparableConvolution2D")
        <Kind.SEPARABLE_CONV2D: 'separable_conv2d'>
    """
    return CLASS_KINDS.get(class_name, Kind.OTHER)


def kind_for_layer_name(name: str) -> Kind:
    """Guess a kind from an auto-generated layer name or Keras 3 path segment.

    Example:
        >>> kind_for_layer_name("convolution2d_1"), kind_for_layer_name("p_re_lu")
        (<Kind.CONV2D: 'conv2d'>, <Kind.PRELU: 'prelu'>)
    """
    base = name.rsplit("/", 1)[-1]
    for candidate in (base, _COUNTER.sub("", base)):
        if candidate in _NAME_KINDS:
            return _NAME_KINDS[candidate]
    return Kind.OTHER


# Keras 2 (and tf.keras) variable base names -> roles.
_K2_ROLES: dict[str, Role] = {
    "kernel": Role.KERNEL, "bias": Role.BIAS, "recurrent_kernel": Role.RECURRENT_KERNEL,
    "gamma": Role.GAMMA, "beta": Role.BETA, "moving_mean": Role.MOVING_MEAN,
    "moving_variance": Role.MOVING_VARIANCE, "depthwise_kernel": Role.DEPTHWISE_KERNEL,
    "pointwise_kernel": Role.POINTWISE_KERNEL, "embeddings": Role.EMBEDDINGS,
    "alpha": Role.ALPHA,
}
# Keras 1 suffixes. ``running_std`` is a misnomer kept for compatibility: from Keras 1.0 on,
# BatchNormalization stored the running *variance* under it.
_K1_SUFFIX_ROLES: dict[str, Role] = {
    "gamma": Role.GAMMA, "beta": Role.BETA, "running_mean": Role.MOVING_MEAN,
    "running_std": Role.MOVING_VARIANCE, "alphas": Role.ALPHA,
    "depthwise_kernel": Role.DEPTHWISE_KERNEL, "pointwise_kernel": Role.POINTWISE_KERNEL,
}
_K1_GATED = re.compile(r"_(?P<base>[WUb])(?:_(?P<gate>[a-z]))?$")
_K1_SUFFIX = re.compile(r"_(?P<suffix>" + "|".join(_K1_SUFFIX_ROLES) + r")$")


def role_for_variable(name: str, kind: Kind) -> tuple[Role, str | None]:
    """Role and part (Keras 1 gate letter) of a Keras 1 or Keras 2 weight name.

    ``W`` is the input kernel (the embedding matrix for ``Embedding``), ``U`` the recurrent
    kernel, ``b`` the bias; a trailing gate letter (``W_i``, ``U_z``) becomes the part.

    Example:
        >>> role_for_variable("embedding_1_W", Kind.EMBEDDING)
        (<Role.EMBEDDINGS: 'embeddings'>, None)
        >>> role_for_variable("batchnormalization_1_running_std", Kind.BATCH_NORM)
        (<Role.MOVING_VARIANCE: 'moving_variance'>, None)
    """
    role, part = _variable_role(name, kind)
    # Keras 3 calls a DepthwiseConv2D's only kernel ``kernel``; Keras 2 said depthwise_kernel.
    if kind is Kind.DEPTHWISE_CONV2D and role is Role.DEPTHWISE_KERNEL:
        role = Role.KERNEL
    return role, part


def _variable_role(name: str, kind: Kind) -> tuple[Role, str | None]:
    base = name.split(":", 1)[0]
    if "/" in base:  # Keras 2: <layer path>/<variable>
        leaf = base.rsplit("/", 1)[-1]
        return _K2_ROLES.get(leaf, Role.OTHER), None
    if (m := _K1_SUFFIX.search(base)) is not None:
        return _K1_SUFFIX_ROLES[m["suffix"]], None
    if (m := _K1_GATED.search(base)) is not None:
        if m["base"] == "W":
            role = Role.EMBEDDINGS if kind is Kind.EMBEDDING else Role.KERNEL
        elif m["base"] == "U":
            role = Role.RECURRENT_KERNEL
        else:
            role = Role.BIAS
        return role, m["gate"]
    return _K2_ROLES.get(base, Role.OTHER), None


# Keras 3 stores each layer's variables by position, trainable first then non-trainable,
# in the order the layer's build() created them.
_K3_ORDER: dict[Kind, tuple[Role, ...]] = {
    Kind.DENSE: (Role.KERNEL, Role.BIAS),
    Kind.CONV1D: (Role.KERNEL, Role.BIAS), Kind.CONV2D: (Role.KERNEL, Role.BIAS),
    Kind.CONV3D: (Role.KERNEL, Role.BIAS),
    Kind.CONV1D_TRANSPOSE: (Role.KERNEL, Role.BIAS),
    Kind.CONV2D_TRANSPOSE: (Role.KERNEL, Role.BIAS),
    Kind.CONV3D_TRANSPOSE: (Role.KERNEL, Role.BIAS),
    Kind.DEPTHWISE_CONV2D: (Role.KERNEL, Role.BIAS),
    Kind.SEPARABLE_CONV2D: (Role.DEPTHWISE_KERNEL, Role.POINTWISE_KERNEL, Role.BIAS),
    Kind.BATCH_NORM: (Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE),
    Kind.LAYER_NORM: (Role.GAMMA, Role.BETA), Kind.GROUP_NORM: (Role.GAMMA, Role.BETA),
    Kind.EMBEDDING: (Role.EMBEDDINGS,), Kind.PRELU: (Role.ALPHA,),
    Kind.LSTM: (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS),
    Kind.GRU: (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS),
    Kind.SIMPLE_RNN: (Role.KERNEL, Role.RECURRENT_KERNEL, Role.BIAS),
}
# MultiHeadAttention keeps its projections in named sub-layers.
MHA_SUBLAYER_ROLES: dict[str, tuple[Role, Role]] = {
    "query_dense": (Role.QUERY_KERNEL, Role.QUERY_BIAS),
    "key_dense": (Role.KEY_KERNEL, Role.KEY_BIAS),
    "value_dense": (Role.VALUE_KERNEL, Role.VALUE_BIAS),
    "output_dense": (Role.OUTPUT_KERNEL, Role.OUTPUT_BIAS),
}


def role_for_position(kind: Kind, index: int, count: int,
                      config: dict[str, object] | None = None) -> Role:
    """The role of Keras 3 variable ``vars/<index>`` of a layer with ``count`` variables.

    Optional variables are dropped by the layer's config (``use_bias``, BatchNormalization
    ``center``/``scale``); without a config, a missing trailing bias is the only gap assumed.

    Example:
        >>> role_for_position(Kind.BATCH_NORM, 0, 3, {"scale": False})
        <Role.BETA: 'beta'>
    """
    order = list(_K3_ORDER.get(kind, ()))
    cfg = config or {}
    if kind is Kind.BATCH_NORM or kind in (Kind.LAYER_NORM, Kind.GROUP_NORM):
        if cfg.get("scale") is False:
            order.remove(Role.GAMMA)
        if cfg.get("center") is False:
            order.remove(Role.BETA)
    elif cfg.get("use_bias") is False and Role.BIAS in order:
        order.remove(Role.BIAS)
    if 0 <= index < len(order) and (count == len(order) or index < count):
        return order[index]
    return Role.OTHER


def owner_of_variable(name: str) -> str:
    """The layer a Keras 1/2 weight name belongs to (``dense_3/kernel:0`` -> ``dense_3``).

    Example:
        >>> owner_of_variable("lstm_2_U_f"), owner_of_variable("model_1/conv1/kernel:0")
        ('lstm_2', 'model_1/conv1')
    """
    base = name.split(":", 1)[0]
    if "/" in base:
        return base.rsplit("/", 1)[0]
    for pattern in (_K1_SUFFIX, _K1_GATED):
        if (m := pattern.search(base)) is not None:
            return base[: m.start()]
    return base


def config_index(model_config: dict[str, Any] | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Layer path (nested names joined by ``/``) and bare name -> (class, config).

    Reads Keras 1/2/3 model configs alike (Sequential as a list or with ``layers``, Model and
    Functional with ``layers``, wrappers with ``layer``).

    Example:
        >>> cfg = {"class_name": "Sequential", "config": [
        ...     {"class_name": "Dense", "config": {"name": "dense_1"}}]}
        >>> config_index(cfg)["dense_1"][0]
        'Dense'
    """
    out: dict[str, tuple[str, dict[str, Any]]] = {}

    def visit(node: Any, prefix: str, root: bool) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, prefix, root)
            return
        if not isinstance(node, dict):
            return
        cls, cfg = node.get("class_name"), node.get("config")
        if isinstance(cls, str) and isinstance(cfg, list):  # Keras 1/2.1 Sequential
            visit(cfg, prefix, False)
        elif isinstance(cls, str) and isinstance(cfg, dict):
            name = cfg.get("name")
            inner = prefix
            if isinstance(name, str) and not root:
                out.setdefault(prefix + name, (cls, cfg))
                out.setdefault(name, (cls, cfg))
                inner = prefix + name + "/"
            for key in ("layers", "layer", "forward_layer", "backward_layer", "cell"):
                if key in cfg:
                    visit(cfg[key], inner if key == "layers" else prefix, False)
        else:
            for value in node.values():
                visit(value, prefix, root)

    visit(model_config, "", True)
    return out


def kind_for_config(cls: str, cfg: dict[str, Any]) -> Kind:
    """Kind of a layer from its class and config; wrappers take the wrapped layer's kind.

    Example:
        >>> kind_for_config("Bidirectional", {"layer": {"class_name": "LSTM"}})
        <Kind.LSTM: 'lstm'>
    """
    if cls in WRAPPER_CLASSES:
        inner = cfg.get("layer") or cfg.get("forward_layer") or {}
        return kind_for_class(inner.get("class_name", "")) if isinstance(inner, dict) else Kind.OTHER
    return kind_for_class(cls)


def kind_from_tensors(roles: list[tuple[Role, tuple[int, ...]]]) -> Kind:
    """A layer's kind from its tensors' roles and shapes alone (names told us nothing).

    Recurrent layers are told apart by gates per unit (kernel columns / recurrent rows).

    Example:
        >>> kind_from_tensors([(Role.KERNEL, (512, 1, 1, 128)), (Role.BIAS, (128,))])
        <Kind.CONV2D: 'conv2d'>
    """
    by_role = {r: s for r, s in roles}
    if Role.RECURRENT_KERNEL in by_role and Role.KERNEL in by_role:
        units = by_role[Role.RECURRENT_KERNEL][0]
        gates = by_role[Role.KERNEL][-1] // max(units, 1)
        return {4: Kind.LSTM, 3: Kind.GRU}.get(gates, Kind.SIMPLE_RNN)
    if Role.POINTWISE_KERNEL in by_role:
        return Kind.SEPARABLE_CONV2D
    if Role.MOVING_MEAN in by_role or Role.MOVING_VARIANCE in by_role:
        return Kind.BATCH_NORM
    if Role.GAMMA in by_role or Role.BETA in by_role:
        return Kind.LAYER_NORM
    if Role.EMBEDDINGS in by_role:
        return Kind.EMBEDDING
    if Role.ALPHA in by_role:
        return Kind.PRELU
    if Role.DEPTHWISE_KERNEL in by_role:
        return Kind.DEPTHWISE_CONV2D
    rank = len(by_role.get(Role.KERNEL, ()))
    return {2: Kind.DENSE, 3: Kind.CONV1D, 4: Kind.CONV2D, 5: Kind.CONV3D}.get(rank, Kind.OTHER)
