"""The registered per-tensor rules: how each (kind, role) is stored in each convention.

Canonical is ``keras``. Only the way *to* canonical is written here; the way back is its
inverse (see ``registry``). Facts these rules encode, each proven by a test that runs the
real Keras 3 and PyTorch layers:

- Dense (in, out) / Linear (out, in). Conv kernels (*spatial, in, out) / (out, in, *spatial);
  both frameworks compute cross-correlation, so no flip between them.
- ``theano`` (Keras 1/2 saved under the Theano backend): Theano's conv2d computes a *true*
  convolution, so kernels are stored spatially flipped. With ``dim_ordering='th'`` (Keras 1;
  the default when the context says nothing) they are also (out, in, *spatial); with
  ``dim_ordering='tf'`` (Keras 1), or any ``data_format`` (Keras 2 normalised every kernel
  to (*spatial, in, out)), they are only flipped. ``dim_ordering='th'`` in the ``keras``
  convention (with ``keras_version`` "1") is a Keras 1 TensorFlow-backend file:
  (out, in, *spatial), not flipped. Keras 2's own loader flips when the file's ``backend``
  attribute is 'theano'; Keras 1 files carry none, so nothing there flips them.
- Keras 1.2 Convolution1D stores (k, 1, in, out) (a Conv2D in disguise); give
  ``context["keras_version"] = "1"`` (a source fact) to fold the singleton axis.
- Conv transpose: Keras (*spatial, out, in), PyTorch (in, out, *spatial): no flip. Keras 1
  Deconvolution2D (``keras_version`` "1") stored a Conv2D-shaped kernel.
- DepthwiseConv2D: Keras (kh, kw, in, mult), PyTorch groups=in weight (in*mult, 1, kh, kw);
  output channel ``i*mult + m`` in both.
- GRU gate blocks: Keras z, r, h; PyTorch r, z, n. LSTM: i, f, c, o in both.
- MultiHeadAttention per-projection PyTorch forms are the slices of ``in_proj_weight``.
"""

from __future__ import annotations

from ..checkpoint import Convention, Kind, Role
from ..errors import LayoutError
from .ops import Flip, MergeAxes, Op, ReorderBlocks, SplitAxis, Transpose
from .registry import Context, layer_only, register

K, T, TH = Convention.KERAS, Convention.TORCH, Convention.THEANO

_CONV = {Kind.CONV1D: 1, Kind.CONV2D: 2, Kind.CONV3D: 3}
_CONV_T = {Kind.CONV1D_TRANSPOSE: 1, Kind.CONV2D_TRANSPOSE: 2, Kind.CONV3D_TRANSPOSE: 3}
_SPATIAL = {1: "k", 2: "kh, kw", 3: "kd, kh, kw"}


def _identity(kind: Kind, roles: tuple[Role, ...], conventions: tuple[Convention, ...],
              layout: str = "same in every convention") -> None:
    for role in roles:
        for conv in conventions:
            register(kind, role, conv, layout)


def _channels_first_to_last(n: int, first: str, second: str) -> Transpose:
    """(first, second, *spatial) -> (*spatial, second, first)."""
    sp = _SPATIAL[n]
    return Transpose(tuple(range(2, n + 2)) + (1, 0),
                     f"({first}, {second}, {sp}) -> ({sp}, {second}, {first})")


def _keras1(ctx: Context) -> bool:
    return str(ctx.get("keras_version", "")).startswith("1")


def _kernel_ordering(ctx: Context, default: str) -> str:
    """How a conv kernel's axes are stored. Only Keras 1's ``dim_ordering`` changes them:
    Keras 2+ stores (*spatial, in, out) whatever its ``data_format``."""
    ordering = ctx.get("dim_ordering") or ("tf" if ctx.get("data_format") else default)
    if ordering not in ("th", "tf"):
        raise LayoutError(f"context dim_ordering is {ordering!r}", expected="'th' or 'tf'",
                          fix="pass the Keras 1 layer's dim_ordering")
    return str(ordering)


def _conv_axes(n: int, ctx: Context, ordering: str) -> tuple[Op, ...]:
    """Stored kernel axes -> (*spatial, in, out), without flipping."""
    if n == 1:  # Convolution1D ignores dim_ordering; Keras 1.2 stored (k, 1, in, out)
        if _keras1(ctx):
            return (MergeAxes(0, (-1, 1), "Keras 1 (k, 1, in, out) -> (k, in, out)"),)
        return ()
    return (_channels_first_to_last(n, "out", "in"),) if ordering == "th" else ()


def _transpose_axes(n: int, ctx: Context, ordering: str) -> tuple[Op, ...]:
    """Keras 1 Deconvolution2D kept a Conv2D-shaped kernel, (kh, kw, in, out) or with 'th'
    (out, in, kh, kw); Keras 2+ stores (kh, kw, out, in) (Keras 2's legacy loader)."""
    if n != 2 or not _keras1(ctx):
        return ()
    if ordering == "th":
        return (Transpose((2, 3, 0, 1), "Keras 1 (out, in, kh, kw) -> (kh, kw, out, in)"),)
    return (Transpose((0, 1, 3, 2), "Keras 1 (kh, kw, in, out) -> (kh, kw, out, in)"),)


def _unflip(n: int, ordering: str) -> Flip:
    """Flip the spatial axes where they are stored: last with 'th', first with 'tf'."""
    axes = tuple(range(2, n + 2)) if ordering == "th" and n > 1 else tuple(range(n))
    return Flip(axes, "undo the true-convolution flip")


def _conv_rule(n: int, convention: Convention, transpose: bool) -> object:
    axes = _transpose_axes if transpose else _conv_axes

    def build(ctx: Context) -> tuple[Op, ...]:
        if convention is TH:  # a Theano-era file: 'th' unless it says otherwise
            ordering = _kernel_ordering(ctx, "th")
            return (_unflip(n, ordering),) + axes(n, ctx, ordering)
        # dim_ordering describes a Keras-convention kernel only in a Keras 1 file; a shared
        # context's 'th' for a Theano source must not reshape the Keras target.
        return axes(n, ctx, _kernel_ordering(ctx, "tf") if _keras1(ctx) else "tf")
    return build


def _register_convolutions() -> None:
    for kind, n in _CONV.items():
        sp = _SPATIAL[n]
        register(kind, Role.KERNEL, K, f"({sp}, in, out); Keras 1 'th': (out, in, {sp})",
                 _conv_rule(n, K, transpose=False))
        register(kind, Role.KERNEL, T, f"(out, in, {sp})",
                 (_channels_first_to_last(n, "out", "in"),))
        register(kind, Role.KERNEL, TH, f"flipped; 'th': (out, in, {sp}), 'tf': ({sp}, in, out)",
                 _conv_rule(n, TH, transpose=False))
        _identity(kind, (Role.BIAS,), (K, T, TH))
    for kind, n in _CONV_T.items():
        sp = _SPATIAL[n]
        register(kind, Role.KERNEL, K, f"({sp}, out, in)", _conv_rule(n, K, transpose=True))
        register(kind, Role.KERNEL, T, f"(in, out, {sp})",
                 (_channels_first_to_last(n, "in", "out"),))
        register(kind, Role.KERNEL, TH, f"flipped ({sp}, out, in)",
                 _conv_rule(n, TH, transpose=True))
        _identity(kind, (Role.BIAS,), (K, T, TH))


def _torch_depthwise(ctx: Context) -> tuple[Op, ...]:
    mult = int(ctx.get("depth_multiplier", 1))
    return (Transpose((2, 3, 1, 0), "(in*mult, 1, kh, kw) -> (kh, kw, 1, in*mult)"),
            MergeAxes(2, (1, -1), "(kh, kw, 1, in*mult) -> (kh, kw, in*mult)"),
            SplitAxis(2, (-1, mult), "(kh, kw, in*mult) -> (kh, kw, in, mult)"))


def _register_depthwise() -> None:
    # Keras 3 names the DepthwiseConv2D variable "kernel", Keras 2 "depthwise_kernel".
    for role in (Role.KERNEL, Role.DEPTHWISE_KERNEL):
        register(Kind.DEPTHWISE_CONV2D, role, K, "(kh, kw, in, mult)")
        register(Kind.DEPTHWISE_CONV2D, role, T, "groups=in: (in*mult, 1, kh, kw)",
                 _torch_depthwise)
    _identity(Kind.DEPTHWISE_CONV2D, (Role.BIAS,), (K, T))
    s = Kind.SEPARABLE_CONV2D
    register(s, Role.DEPTHWISE_KERNEL, K, "(kh, kw, in, mult)")
    register(s, Role.DEPTHWISE_KERNEL, T, "depthwise Conv2d groups=in: (in*mult, 1, kh, kw)",
             _torch_depthwise)
    register(s, Role.POINTWISE_KERNEL, K, "(1, 1, in*mult, out)")
    register(s, Role.POINTWISE_KERNEL, T, "pointwise Conv2d: (out, in*mult, 1, 1)",
             (_channels_first_to_last(2, "out", "in*mult"),))
    _identity(s, (Role.BIAS,), (K, T), "(out,); PyTorch: the pointwise conv's bias")


def _register_dense_and_norms() -> None:
    register(Kind.DENSE, Role.KERNEL, K, "(in, out)")
    register(Kind.DENSE, Role.KERNEL, TH, "(in, out)")
    register(Kind.DENSE, Role.KERNEL, T, "(out, in)",
             (Transpose((1, 0), "(out, in) -> (in, out)"),))
    _identity(Kind.DENSE, (Role.BIAS,), (K, T, TH))
    bn_roles = (Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE)
    _identity(Kind.BATCH_NORM, bn_roles, (K, T, TH),
              "(C,); PyTorch weight, bias, running_mean, running_var")
    layer_only(Kind.BATCH_NORM, Role.NUM_BATCHES_TRACKED, T,
               "Keras keeps no batch count (convert_layer drops it, or sets it to 0)")
    for kind in (Kind.LAYER_NORM, Kind.GROUP_NORM):
        _identity(kind, (Role.GAMMA, Role.BETA), (K, T, TH), "(C,); PyTorch weight, bias")
    _identity(Kind.EMBEDDING, (Role.EMBEDDINGS,), (K, T, TH), "(vocab, dim)")


def _prelu_shape(ctx: Context) -> tuple[int, ...]:
    if "alpha_shape" in ctx:
        shape = tuple(int(d) for d in ctx["alpha_shape"])
    else:
        ndim = int(ctx.get("input_ndim", 1))
        shared = {int(a) for a in ctx.get("shared_axes") or ()}
        shape = tuple(1 if i + 1 in shared else -1 for i in range(ndim))
    free = [i for i, d in enumerate(shape) if d != 1]
    if len(free) > 1 or (free and free[0] != len(shape) - 1):
        raise LayoutError(
            f"a Keras PReLU alpha of shape {shape} has one parameter per position along "
            f"axes {[i + 1 for i in free]}, but PyTorch PReLU holds one per channel (or one)",
            expected="shared_axes covering every axis except the channel axis",
            fix="build the Keras layer with shared_axes=[1, ..., ndim-1]")
    return shape


def _torch_prelu(ctx: Context) -> tuple[Op, ...]:
    return (SplitAxis(0, _prelu_shape(ctx), "(num_parameters,) -> Keras alpha shape"),)


def _register_prelu() -> None:
    register(Kind.PRELU, Role.ALPHA, K, "input shape with shared axes set to 1")
    register(Kind.PRELU, Role.ALPHA, TH, "input shape with shared axes set to 1")
    register(Kind.PRELU, Role.ALPHA, T, "(num_parameters,)", _torch_prelu)


_GRU_TORCH_TO_KERAS = (1, 0, 2)  # Keras z, r, h from PyTorch r, z, n


def _register_recurrent() -> None:
    to_in_first = Transpose((1, 0), "(gates*H, in) -> (in, gates*H)")
    for kind in (Kind.SIMPLE_RNN, Kind.LSTM, Kind.GRU):
        for role in (Role.KERNEL, Role.RECURRENT_KERNEL):
            register(kind, role, K, "(in, gates*H)")
            register(kind, role, TH, "(in, gates*H)")
            ops: tuple[Op, ...] = (to_in_first,)
            if kind is Kind.GRU:
                ops += (ReorderBlocks(1, _GRU_TORCH_TO_KERAS, "gate blocks: r, z, n -> z, r, h"),)
            register(kind, role, T, "weight_ih / weight_hh (gates*H, in)", ops)
        _identity(kind, (Role.BIAS,), (K, TH), "(gates*H,); GRU reset_after=True: (2, 3H)")
        layer_only(kind, Role.RECURRENT_BIAS, T,
                   "PyTorch's bias_hh is summed into Keras's single bias")
    for kind in (Kind.SIMPLE_RNN, Kind.LSTM):
        register(kind, Role.BIAS, T, "bias_ih (gates*H,)")  # bias_hh: see convert_layer
    layer_only(Kind.GRU, Role.BIAS, T,
               "Keras GRU(reset_after=True) keeps input and recurrent biases as rows of one "
               "(2, 3H) array; PyTorch keeps bias_ih and bias_hh")


def _mha_heads(ctx: Context) -> int:
    if "num_heads" not in ctx:
        raise LayoutError("multi-head attention needs context['num_heads']",
                          expected="the layer's number of heads",
                          fix="pass context={'num_heads': ...} "
                              "(Keras MultiHeadAttention.num_heads)")
    return int(ctx["num_heads"])


def _register_attention() -> None:
    m = Kind.MULTI_HEAD_ATTENTION
    for kernel, bias in ((Role.QUERY_KERNEL, Role.QUERY_BIAS), (Role.KEY_KERNEL, Role.KEY_BIAS),
                         (Role.VALUE_KERNEL, Role.VALUE_BIAS)):
        register(m, kernel, K, "(E, heads, head_dim)")
        register(m, kernel, T, "slice of in_proj_weight: (heads*head_dim, E)", lambda ctx: (
            Transpose((1, 0), "(heads*head_dim, E) -> (E, heads*head_dim)"),
            SplitAxis(1, (_mha_heads(ctx), -1), "(E, heads*head_dim) -> (E, heads, head_dim)")))
        register(m, bias, K, "(heads, head_dim)")
        register(m, bias, T, "slice of in_proj_bias: (heads*head_dim,)", lambda ctx: (
            SplitAxis(0, (_mha_heads(ctx), -1), "(heads*head_dim,) -> (heads, head_dim)"),))
    register(m, Role.OUTPUT_KERNEL, K, "(heads, head_dim, E)")
    register(m, Role.OUTPUT_KERNEL, T, "out_proj.weight (E, heads*head_dim)", lambda ctx: (
        Transpose((1, 0), "(E, heads*head_dim) -> (heads*head_dim, E)"),
        SplitAxis(0, (_mha_heads(ctx), -1), "(heads*head_dim, E) -> (heads, head_dim, E)")))
    _identity(m, (Role.OUTPUT_BIAS,), (K, T), "(E,)")
    for role in (Role.IN_PROJ_KERNEL, Role.IN_PROJ_BIAS):
        layer_only(m, role, T, "PyTorch packs query, key and value into one array")


def register_all() -> None:
    """Register every built-in rule (idempotent)."""
    _register_dense_and_norms()
    _register_convolutions()
    _register_depthwise()
    _register_prelu()
    _register_recurrent()
    _register_attention()


register_all()
