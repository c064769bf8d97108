"""What a PyTorch module is, for ``TorchModelView``: kind, config, slot roles, op layouts.

Example:
    >>> module_kind(torch.nn.Conv2d(4, 4, 3, groups=4))        # doctest: +SKIP
    <Kind.DEPTHWISE_CONV2D: 'depthwise_conv2d'>
    >>> slot_role(Kind.LSTM, "weight_hh_l0")
    <Role.RECURRENT_KERNEL: 'recurrent_kernel'>
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..checkpoint import Kind, Role

# Modules that use their children's weights themselves (their children never run alone).
ATOMIC = ("MultiheadAttention", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")
# Torch ops that only move elements: their outputs are never "the feature map".
RESHAPES = frozenset({
    "permute", "transpose", "view", "reshape", "flatten", "unflatten", "contiguous", "clone",
    "unsqueeze", "squeeze", "movedim", "moveaxis", "swapaxes", "swapdims", "view_as",
    "reshape_as", "expand", "expand_as", "detach", "to", "t", "__get__",
})
# How an op lays out the tensor it returns: NC... (conv, pooling, norms over channels) or
# N...C (sequence ops: embeddings, RNNs, attention, linear). Other ops keep their input's.
CHANNELS_FIRST_OPS = frozenset({
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "batch_norm", "instance_norm", "group_norm", "interpolate",
    "pixel_shuffle", "max_pool2d_with_indices", "lp_pool2d",
})
CHANNELS_LAST_OPS = frozenset({
    "embedding", "linear", "layer_norm", "lstm", "gru", "rnn_tanh", "rnn_relu",
    "multi_head_attention_forward", "scaled_dot_product_attention", "rms_norm",
})
SEQUENCE_KINDS = frozenset({Kind.EMBEDDING, Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN,
                             Kind.MULTI_HEAD_ATTENTION, Kind.DENSE, Kind.LAYER_NORM})
_ACTIVATIONS = {
    "ReLU": "relu", "ReLU6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "GELU": "gelu",
    "SiLU": "silu", "ELU": "elu", "SELU": "selu", "LeakyReLU": "leaky_relu",
    "Softmax": "softmax", "Softplus": "softplus", "Hardsigmoid": "hard_sigmoid",
    "Hardswish": "hard_swish", "Mish": "mish", "Softsign": "softsign",
}
_NORM_ROLES = {"weight": Role.GAMMA, "bias": Role.BETA}
_ROLES = {
    "weight": Role.KERNEL, "bias": Role.BIAS, "running_mean": Role.MOVING_MEAN,
    "running_var": Role.MOVING_VARIANCE, "num_batches_tracked": Role.NUM_BATCHES_TRACKED,
    "in_proj_weight": Role.IN_PROJ_KERNEL, "in_proj_bias": Role.IN_PROJ_BIAS,
    "q_proj_weight": Role.QUERY_KERNEL, "k_proj_weight": Role.KEY_KERNEL,
    "v_proj_weight": Role.VALUE_KERNEL, "out_proj.weight": Role.OUTPUT_KERNEL,
    "out_proj.bias": Role.OUTPUT_BIAS,
}


def layer_modules(model: Any) -> Iterator[tuple[str, Any]]:
    """(path, module) for leaf modules and atomic ones, each object once."""
    seen: set[int] = set()
    skip: list[str] = []
    for path, module in model.named_modules():
        if id(module) in seen or any(path.startswith(s + ".") for s in skip):
            continue
        children = list(module.children())
        atomic = type(module).__name__ in ATOMIC
        if atomic:
            skip.append(path)
        if not children or atomic:
            seen.add(id(module))
            yield path, module


def slot_owner(key: str, objects: Mapping[str, Any]) -> str:
    """The layer a state-dict key belongs to: its longest layer-path prefix."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in objects:
            return prefix
    return ".".join(parts[:-1])


def module_kind(module: Any) -> Kind:
    """The module's kind by class; a ``Conv2d`` with ``groups == in_channels`` is depthwise.

    Example:
        >>> module_kind(torch.nn.GRU(3, 4))                   # doctest: +SKIP
        <Kind.GRU: 'gru'>
    """
    name = type(module).__name__
    if name.startswith("Conv") and not name.startswith("ConvTranspose"):
        rank = name[-2]
        if rank == "2" and module.groups == module.in_channels and module.in_channels > 1:
            return Kind.DEPTHWISE_CONV2D
        return {"1": Kind.CONV1D, "2": Kind.CONV2D, "3": Kind.CONV3D}.get(rank, Kind.OTHER)
    if name.startswith("ConvTranspose"):
        return {"1": Kind.CONV1D_TRANSPOSE, "2": Kind.CONV2D_TRANSPOSE,
                "3": Kind.CONV3D_TRANSPOSE}.get(name[-2], Kind.OTHER)
    if name in ("Linear", "NonDynamicallyQuantizableLinear", "LazyLinear"):
        return Kind.DENSE
    if "BatchNorm" in name:
        return Kind.BATCH_NORM
    return {"LayerNorm": Kind.LAYER_NORM, "GroupNorm": Kind.GROUP_NORM,
            "Embedding": Kind.EMBEDDING, "LSTM": Kind.LSTM, "GRU": Kind.GRU,
            "RNN": Kind.SIMPLE_RNN, "LSTMCell": Kind.LSTM, "GRUCell": Kind.GRU,
            "RNNCell": Kind.SIMPLE_RNN, "PReLU": Kind.PRELU,
            "MultiheadAttention": Kind.MULTI_HEAD_ATTENTION}.get(name, Kind.OTHER)


def slot_role(kind: Kind, rel: str) -> Role:
    """The role of state-dict entry ``rel`` (relative to its layer) in a layer of ``kind``.

    Example:
        >>> slot_role(Kind.BATCH_NORM, "weight"), slot_role(Kind.MULTI_HEAD_ATTENTION, "out_proj.bias")
        (<Role.GAMMA: 'gamma'>, <Role.OUTPUT_BIAS: 'output_bias'>)
    """
    if kind in (Kind.BATCH_NORM, Kind.LAYER_NORM, Kind.GROUP_NORM) and rel in _NORM_ROLES:
        return _NORM_ROLES[rel]
    if rel == "weight" and kind is Kind.EMBEDDING:
        return Role.EMBEDDINGS
    if rel == "weight" and kind is Kind.PRELU:
        return Role.ALPHA
    if kind in (Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN):
        for prefix, role in (("weight_ih", Role.KERNEL), ("weight_hh", Role.RECURRENT_KERNEL),
                             ("bias_ih", Role.BIAS), ("bias_hh", Role.RECURRENT_BIAS)):
            if rel.startswith(prefix):
                return role
        return Role.OTHER
    return _ROLES.get(rel, Role.OTHER)


def module_config(module: Any) -> dict[str, Any]:
    """What matters for equivalence, in Keras-style names where Keras has one."""
    name = type(module).__name__
    c: dict[str, Any] = {}
    if name in _ACTIVATIONS:
        c["activation"] = _ACTIVATIONS[name]
        if name == "GELU":
            c["approximate"] = module.approximate
        if name == "LeakyReLU":
            c["negative_slope"] = module.negative_slope
    if hasattr(module, "kernel_size"):  # convolutions (and pooling)
        c.update(kernel_size=_tuple(module.kernel_size), strides=_tuple(module.stride),
                 padding=module.padding if isinstance(module.padding, str)
                 else _tuple(module.padding),
                 dilation_rate=_tuple(module.dilation), data_format="channels_first")
        for attr in ("groups", "padding_mode", "in_channels", "out_channels"):
            if hasattr(module, attr):
                c[attr] = getattr(module, attr)
        if hasattr(module, "output_padding"):
            c["output_padding"] = _tuple(module.output_padding)
        if hasattr(module, "groups"):
            c["use_bias"] = module.bias is not None
        if module_kind(module) is Kind.DEPTHWISE_CONV2D:  # Keras's name for out/in channels
            c["depth_multiplier"] = module.out_channels // module.in_channels
    if name in ("Linear", "NonDynamicallyQuantizableLinear"):
        c.update(in_features=module.in_features, out_features=module.out_features,
                 use_bias=module.bias is not None)
    for attr, as_name in (("eps", "epsilon"), ("momentum", "momentum"), ("affine", "affine"),
                          ("track_running_stats", "track_running_stats"),
                          ("num_groups", "num_groups"),
                          ("elementwise_affine", "elementwise_affine"),
                          ("normalized_shape", "normalized_shape"),
                          ("num_embeddings", "input_dim"), ("embedding_dim", "output_dim"),
                          ("padding_idx", "padding_idx"), ("input_size", "input_size"),
                          ("hidden_size", "units"), ("num_layers", "num_layers"),
                          ("batch_first", "batch_first"), ("bidirectional", "bidirectional"),
                          ("nonlinearity", "activation"), ("proj_size", "proj_size"),
                          ("num_parameters", "num_parameters"), ("embed_dim", "embed_dim"),
                          ("num_heads", "num_heads"), ("kdim", "kdim"), ("vdim", "vdim")):
        if hasattr(module, attr) and not callable(getattr(module, attr)):
            value = getattr(module, attr)
            c[as_name] = _tuple(value) if isinstance(value, tuple | list) else value
    if name in ATOMIC and hasattr(module, "bias") and isinstance(module.bias, bool):
        c["use_bias"] = module.bias
    return c


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, tuple | list) else value
