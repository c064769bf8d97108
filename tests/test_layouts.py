"""Layout conversions proven on real layers: Keras 3 and PyTorch run the same weights.

For each layer kind: build the layer in both frameworks with the same configuration, give
one side seeded random weights, convert with ``convert_layer``, assign to the other side,
run both on the same seeded asymmetric input and compare outputs (float32, 1e-5). Both
directions. Round trips are checked exactly for every registered rule, and the Theano
convention against scipy's true convolution (independent of our code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from weightgraft.checkpoint import Convention, Kind, Role
from weightgraft.errors import LayoutError, ShapeMismatchError
from weightgraft.layouts import (
    Transform,
    convert_layer,
    convert_tensor,
    roles_in,
    rules,
    tensor_transform,
)

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = [pytest.mark.keras, pytest.mark.torch]

TOL = {"rtol": 1e-5, "atol": 1e-5}


# -- framework plumbing (tests only) ---------------------------------------------------

_KERAS_ROLE = {"attention_output/kernel": "output_kernel", "attention_output/bias": "output_bias"}


def keras_role(path: str) -> str:
    tail2 = "/".join(path.split("/")[-2:])
    if tail2 in _KERAS_ROLE:
        return _KERAS_ROLE[tail2]
    parent, name = path.split("/")[-2:]
    if parent in ("query", "key", "value"):
        return f"{parent}_{name}"
    return name


def keras_arrays(layer: Any) -> dict[str, np.ndarray]:
    return {keras_role(v.path): keras.ops.convert_to_numpy(v) for v in layer.weights}


def set_keras(layer: Any, arrays: dict[str, np.ndarray]) -> None:
    variables = {keras_role(v.path): v for v in layer.weights}
    assert sorted(variables) == sorted(arrays), (sorted(variables), sorted(arrays))
    for role, var in variables.items():
        assert tuple(var.shape) == arrays[role].shape, (role, var.shape, arrays[role].shape)
        var.assign(arrays[role].astype("float32"))


def randomize_keras(layer: Any, rng: np.random.Generator) -> None:
    for v in layer.weights:
        value = rng.normal(size=tuple(v.shape)).astype("float32")
        if v.path.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        v.assign(value)


def torch_arrays(module: Any, roles: dict[str, str]) -> dict[str, np.ndarray]:
    state = module.state_dict()
    return {roles[k]: state[k].detach().cpu().numpy() for k in roles}


def set_torch(module: Any, roles: dict[str, str], arrays: dict[str, np.ndarray]) -> None:
    assert sorted(roles.values()) == sorted(arrays), (sorted(roles.values()), sorted(arrays))
    state = {k: torch.from_numpy(np.ascontiguousarray(arrays[r])) for k, r in roles.items()}
    module.load_state_dict(state, strict=True)


def randomize_torch(module: Any, rng: np.random.Generator) -> None:
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            value = rng.normal(size=tuple(t.shape)).astype("float32")
            if name.endswith("running_var"):
                value = np.abs(value) + 0.5
            t.copy_(torch.from_numpy(value))


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, tuple):
        value = value[0]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return keras.ops.convert_to_numpy(value)


def cl_to_cf(x: np.ndarray) -> np.ndarray:
    """Channels-last (N, *spatial, C) -> channels-first (N, C, *spatial)."""
    return np.moveaxis(x, -1, 1)


# -- the cases ----------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    kind: str
    keras_layer: Callable[[], Any]
    torch_module: Callable[[], Any]
    torch_roles: dict[str, str]
    inputs: Callable[[np.random.Generator], tuple[np.ndarray, ...]]  # Keras-side inputs
    channels_first: bool = False  # torch takes channels-first inputs and gives them back
    context: dict[str, Any] = field(default_factory=dict)
    keras_call: Callable[[Any, tuple], Any] | None = None
    torch_call: Callable[[Any, tuple], Any] | None = None


def normal(*shape: int) -> Callable[[np.random.Generator], tuple[np.ndarray, ...]]:
    return lambda rng: (rng.normal(size=shape).astype("float32"),)


W = {"weight": "kernel", "bias": "bias"}
RNN = {"weight_ih_l0": "kernel", "weight_hh_l0": "recurrent_kernel",
       "bias_ih_l0": "bias", "bias_hh_l0": "recurrent_bias"}
BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
      "running_var": "moving_variance", "num_batches_tracked": "num_batches_tracked"}
L = keras.layers

CASES = [
    Case("dense", "dense", lambda: L.Dense(5), lambda: nn.Linear(4, 5), W, normal(2, 4)),
    Case("conv1d", "conv1d", lambda: L.Conv1D(4, 3), lambda: nn.Conv1d(3, 4, 3), W,
         normal(2, 7, 3), channels_first=True),
    Case("conv2d", "conv2d", lambda: L.Conv2D(4, (3, 2), strides=(2, 1)),
         lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1)), W, normal(2, 7, 5, 3),
         channels_first=True),
    Case("conv3d", "conv3d", lambda: L.Conv3D(3, (2, 3, 2)), lambda: nn.Conv3d(2, 3, (2, 3, 2)),
         W, normal(2, 4, 5, 3, 2), channels_first=True),
    Case("depthwise_conv2d_mult2", "depthwise_conv2d",
         lambda: L.DepthwiseConv2D((3, 2), depth_multiplier=2),
         lambda: nn.Conv2d(3, 6, (3, 2), groups=3), W, normal(2, 7, 5, 3),
         channels_first=True, context={"depth_multiplier": 2}),
    Case("separable_conv2d", "separable_conv2d",
         lambda: L.SeparableConv2D(4, (3, 2), depth_multiplier=2),
         lambda: nn.Sequential(nn.Conv2d(3, 6, (3, 2), groups=3, bias=False), nn.Conv2d(6, 4, 1)),
         {"0.weight": "depthwise_kernel", "1.weight": "pointwise_kernel", "1.bias": "bias"},
         normal(2, 7, 5, 3), channels_first=True, context={"depth_multiplier": 2}),
    Case("conv2d_transpose", "conv2d_transpose", lambda: L.Conv2DTranspose(4, (3, 2), strides=(2, 1)),
         lambda: nn.ConvTranspose2d(3, 4, (3, 2), stride=(2, 1)), W, normal(2, 7, 5, 3),
         channels_first=True),
    Case("conv1d_transpose", "conv1d_transpose", lambda: L.Conv1DTranspose(4, 3, strides=2),
         lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), W, normal(2, 7, 3), channels_first=True),
    Case("batch_norm", "batch_norm", lambda: L.BatchNormalization(epsilon=1e-3),
         lambda: nn.BatchNorm2d(3, eps=1e-3).eval(), BN, normal(2, 7, 5, 3), channels_first=True,
         keras_call=lambda layer, xs: layer(xs[0], training=False)),
    Case("layer_norm", "layer_norm", lambda: L.LayerNormalization(epsilon=1e-5),
         lambda: nn.LayerNorm(6, eps=1e-5), {"weight": "gamma", "bias": "beta"}, normal(2, 3, 6)),
    Case("embedding", "embedding", lambda: L.Embedding(11, 4), lambda: nn.Embedding(11, 4),
         {"weight": "embeddings"},
         lambda rng: (rng.integers(0, 11, size=(2, 7)).astype("int64"),)),
    Case("simple_rnn", "simple_rnn", lambda: L.SimpleRNN(4, return_sequences=True),
         lambda: nn.RNN(3, 4, batch_first=True), RNN, normal(2, 6, 3)),
    Case("lstm", "lstm", lambda: L.LSTM(4, return_sequences=True),
         lambda: nn.LSTM(3, 4, batch_first=True), RNN, normal(2, 6, 3)),
    Case("gru_reset_after", "gru", lambda: L.GRU(4, return_sequences=True, reset_after=True),
         lambda: nn.GRU(3, 4, batch_first=True), RNN, normal(2, 6, 3),
         context={"reset_after": True}),
    Case("prelu_shared_hw", "prelu", lambda: L.PReLU(shared_axes=[1, 2]), lambda: nn.PReLU(3),
         {"weight": "alpha"}, normal(2, 7, 5, 3), channels_first=True,
         context={"input_ndim": 3, "shared_axes": [1, 2]}),
    Case("prelu_dense", "prelu", lambda: L.PReLU(), lambda: nn.PReLU(6), {"weight": "alpha"},
         normal(2, 6)),
    Case("multi_head_attention", "multi_head_attention",
         lambda: L.MultiHeadAttention(num_heads=2, key_dim=4),
         lambda: nn.MultiheadAttention(8, 2, batch_first=True),
         {"in_proj_weight": "in_proj_kernel", "in_proj_bias": "in_proj_bias",
          "out_proj.weight": "output_kernel", "out_proj.bias": "output_bias"},
         lambda rng: tuple(rng.normal(size=(2, n, 8)).astype("float32") for n in (5, 6, 6)),
         context={"num_heads": 2},
         keras_call=lambda layer, xs: layer(xs[0], xs[2], key=xs[1]),
         torch_call=lambda m, xs: m(*xs, need_weights=False)),
    # Keys and values narrower than the queries: PyTorch keeps q/k/v_proj_weight apart.
    Case("multi_head_attention_kdim_vdim", "multi_head_attention",
         lambda: L.MultiHeadAttention(num_heads=2, key_dim=4),
         lambda: nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True),
         {"q_proj_weight": "query_kernel", "k_proj_weight": "key_kernel",
          "v_proj_weight": "value_kernel", "in_proj_bias": "in_proj_bias",
          "out_proj.weight": "output_kernel", "out_proj.bias": "output_bias"},
         lambda rng: (rng.normal(size=(2, 5, 8)).astype("float32"),
                      rng.normal(size=(2, 6, 6)).astype("float32"),
                      rng.normal(size=(2, 6, 5)).astype("float32")),
         context={"num_heads": 2, "separate_qkv": True},
         keras_call=lambda layer, xs: layer(xs[0], xs[2], key=xs[1]),
         torch_call=lambda m, xs: m(*xs, need_weights=False)),
]


def run_keras(case: Case, layer: Any, xs: tuple[np.ndarray, ...]) -> np.ndarray:
    call = case.keras_call or (lambda layer_, xs_: layer_(*xs_))
    return to_numpy(call(layer, xs))


def run_torch(case: Case, module: Any, xs: tuple[np.ndarray, ...]) -> np.ndarray:
    txs = tuple(torch.from_numpy(np.ascontiguousarray(cl_to_cf(x) if case.channels_first else x))
                for x in xs)
    call = case.torch_call or (lambda m, xs_: m(*xs_))
    with torch.no_grad():
        out = to_numpy(call(module, txs))
    return np.moveaxis(out, 1, -1) if case.channels_first else out


def build_pair(case: Case, rng: np.random.Generator) -> tuple[Any, Any, tuple[np.ndarray, ...]]:
    xs = case.inputs(rng)
    layer = case.keras_layer()
    run_keras(case, layer, xs)  # builds the weights
    torch.manual_seed(0)
    module = case.torch_module().eval()
    return layer, module, xs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_keras_weights_converted_to_torch_compute_the_same(case: Case, rng) -> None:
    layer, module, xs = build_pair(case, rng)
    randomize_keras(layer, rng)
    conv = convert_layer(case.kind, "keras", "torch", keras_arrays(layer), case.context)
    set_torch(module, case.torch_roles, dict(conv.arrays))
    expected = run_keras(case, layer, xs)
    np.testing.assert_allclose(run_torch(case, module, xs), expected, **TOL)
    assert np.abs(expected).max() > 1e-2  # the comparison is not between zeros


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_weights_converted_to_keras_compute_the_same(case: Case, rng) -> None:
    layer, module, xs = build_pair(case, rng)
    randomize_torch(module, rng)
    conv = convert_layer(case.kind, "torch", "keras", torch_arrays(module, case.torch_roles),
                         case.context)
    set_keras(layer, dict(conv.arrays))
    expected = run_torch(case, module, xs)
    np.testing.assert_allclose(run_keras(case, layer, xs), expected, **TOL)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_roles_in_lists_what_the_real_layers_hold(case: Case, rng) -> None:
    layer, module, _ = build_pair(case, rng)
    ctx = case.context
    assert sorted(roles_in(case.kind, "keras", ctx)) == sorted(keras_arrays(layer))
    assert sorted(roles_in(case.kind, "torch", ctx)) == sorted(case.torch_roles.values())


# -- exact round trips, for every registered rule ----------------------------------------

# Canonical (Keras) shape of each (kind, role) and the contexts to try it under. A rule
# registered for a (kind, role) missing here fails test_every_rule_has_a_round_trip_case.
_CONV_CTX = [{}, {"dim_ordering": "tf"}, {"dim_ordering": "th"}, {"data_format": "channels_first"},
             {"keras_version": "1", "dim_ordering": "th"}, {"keras_version": "1"}]
_ROUND_TRIP: dict[tuple[str, str], tuple[tuple[int, ...], list[dict[str, Any]]]] = {
    ("dense", "kernel"): ((4, 5), [{}]),
    ("dense", "bias"): ((5,), [{}]),
    ("conv1d", "kernel"): ((3, 2, 4), [{}, {"keras_version": "1"}]),
    ("conv2d", "kernel"): ((3, 2, 4, 5), _CONV_CTX),
    ("conv3d", "kernel"): ((2, 3, 2, 4, 5), _CONV_CTX),
    ("conv1d_transpose", "kernel"): ((3, 4, 2), [{}]),
    ("conv2d_transpose", "kernel"): ((3, 2, 4, 5), _CONV_CTX),
    ("conv3d_transpose", "kernel"): ((2, 3, 2, 4, 5), [{}]),
    ("depthwise_conv2d", "kernel"): ((3, 2, 3, 2), [{"depth_multiplier": 2}]),
    ("depthwise_conv2d", "depthwise_kernel"): ((3, 2, 3, 1), [{}]),
    ("depthwise_conv2d", "bias"): ((6,), [{}]),
    ("separable_conv2d", "depthwise_kernel"): ((3, 2, 3, 2), [{"depth_multiplier": 2}]),
    ("separable_conv2d", "pointwise_kernel"): ((1, 1, 6, 4), [{}]),
    ("separable_conv2d", "bias"): ((4,), [{}]),
    ("embedding", "embeddings"): ((11, 4), [{}]),
    ("prelu", "alpha"): ((1, 1, 3), [{"input_ndim": 3, "shared_axes": [1, 2]}]),
    ("simple_rnn", "kernel"): ((3, 4), [{}]),
    ("simple_rnn", "recurrent_kernel"): ((4, 4), [{}]),
    ("simple_rnn", "bias"): ((4,), [{}]),
    ("lstm", "kernel"): ((3, 16), [{}]),
    ("lstm", "recurrent_kernel"): ((4, 16), [{}]),
    ("lstm", "bias"): ((16,), [{}]),
    ("gru", "kernel"): ((3, 12), [{}]),
    ("gru", "recurrent_kernel"): ((4, 12), [{}]),
    ("gru", "bias"): ((2, 12), [{}]),
    ("multi_head_attention", "output_kernel"): ((2, 4, 8), [{"num_heads": 2}]),
    ("multi_head_attention", "output_bias"): ((8,), [{"num_heads": 2}]),
}
for _k in ("conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose", "conv3d_transpose"):
    _ROUND_TRIP[(_k, "bias")] = ((5,), [{}])
for _k in ("batch_norm",):
    for _r in ("gamma", "beta", "moving_mean", "moving_variance"):
        _ROUND_TRIP[(_k, _r)] = ((5,), [{}])
for _k in ("layer_norm", "group_norm"):
    for _r in ("gamma", "beta"):
        _ROUND_TRIP[(_k, _r)] = ((5,), [{}])
for _p in ("query", "key", "value"):
    _ROUND_TRIP[("multi_head_attention", f"{_p}_kernel")] = ((8, 2, 4), [{"num_heads": 2}])
    _ROUND_TRIP[("multi_head_attention", f"{_p}_bias")] = ((2, 4), [{"num_heads": 2}])


def test_every_rule_has_a_round_trip_case() -> None:
    missing = {(r.kind.value, r.role.value) for r in rules()} - set(_ROUND_TRIP)
    assert not missing, f"add canonical shapes for {sorted(missing)} to _ROUND_TRIP"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: f"{r.kind}-{r.role}-{r.convention}")
def test_rule_inverse_of_forward_is_exact(rule, rng) -> None:
    shape, contexts = _ROUND_TRIP[(rule.kind.value, rule.role.value)]
    for ctx in contexts:
        canonical = rng.normal(size=shape).astype("float32")
        stored = _apply(rule.from_canonical(ctx), canonical)
        back = _apply(rule.to_canonical(ctx), stored)
        assert back.dtype == canonical.dtype and np.array_equal(back, canonical)
        assert np.array_equal(_apply(rule.from_canonical(ctx), back), stored)
        for other in rules():
            if (other.kind, other.role) != (rule.kind, rule.role):
                continue
            t = tensor_transform(rule.kind, rule.role, rule.convention, other.convention, ctx)
            moved = t.apply(stored)
            assert np.array_equal(t.inverse().apply(moved), stored)
            assert Transform.from_dict(t.to_dict()) == t


def _apply(ops, array):
    for op in ops:
        array = op.apply(array)
    return array


def test_transform_to_dict_is_json_and_steps_are_words() -> None:
    import json

    t = tensor_transform("depthwise_conv2d", "kernel", "torch", "keras", {"depth_multiplier": 2})
    again = Transform.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again == t and again.steps == t.steps
    assert t.steps[0].startswith("transpose axes (2, 3, 1, 0): (in*mult, 1, kh, kw)")
    assert t.inverse().src is Convention.KERAS and t.inverse().dst is Convention.TORCH


# -- the theano convention against scipy's true convolution ------------------------------

def _true_conv(x_cf: np.ndarray, kernel_oi: Callable[[int, int], np.ndarray], out: int,
               bias: np.ndarray) -> np.ndarray:
    """Theano's convolution computed with scipy: y[n, o] = sum_i conv(x[n, i], k[o, i]) + b."""
    from scipy import signal

    n, cin = x_cf.shape[:2]
    return np.stack([np.stack([
        sum(signal.convolve(x_cf[b, i], kernel_oi(o, i), mode="valid") for i in range(cin)) + bias[o]
        for o in range(out)]) for b in range(n)]).astype("float32")


@pytest.mark.parametrize("ordering", ["th", "tf"])
def test_theano_conv2d_kernel_computes_true_convolution_in_keras_and_torch(ordering, rng) -> None:
    cin, cout = 3, 4
    x = rng.normal(size=(2, 7, 5, cin)).astype("float32")
    b = rng.normal(size=cout).astype("float32")
    if ordering == "th":
        w = rng.normal(size=(cout, cin, 3, 2)).astype("float32")
        ref = _true_conv(cl_to_cf(x), lambda o, i: w[o, i], cout, b)
    else:
        w = rng.normal(size=(3, 2, cin, cout)).astype("float32")
        ref = _true_conv(cl_to_cf(x), lambda o, i: w[:, :, i, o], cout, b)
    ctx = {"dim_ordering": ordering}
    layer = L.Conv2D(cout, (3, 2))
    layer.build(x.shape)
    set_keras(layer, {"kernel": convert_tensor(w, "conv2d", "kernel", "theano", "keras", ctx),
                      "bias": b})
    np.testing.assert_allclose(to_numpy(layer(x)), np.moveaxis(ref, 1, -1), **TOL)
    tw = convert_tensor(w, "conv2d", "kernel", "theano", "torch", ctx)
    got = torch.nn.functional.conv2d(torch.from_numpy(cl_to_cf(x).copy()), torch.from_numpy(tw),
                                     torch.from_numpy(b))
    np.testing.assert_allclose(got.numpy(), ref, **TOL)
    # Without the flip the result is silently different: the check can fail.
    assert not np.allclose(to_numpy(L.Conv2D(cout, (3, 2))(x)), np.moveaxis(ref, 1, -1), atol=1e-2)


def test_keras1_tensorflow_th_ordering_kernel_is_oihw_and_not_flipped(rng) -> None:
    """Keras 1 on TensorFlow with dim_ordering='th': (out, in, kh, kw), cross-correlation."""
    from scipy import signal

    x = rng.normal(size=(2, 7, 5, 3)).astype("float32")
    w = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    ref = np.stack([np.stack([sum(signal.correlate(x[n, :, :, i], w[o, i], mode="valid")
                                  for i in range(3)) for o in range(4)], axis=-1) for n in range(2)])
    ctx = {"keras_version": "1", "dim_ordering": "th"}  # facts about the source file
    layer = L.Conv2D(4, (3, 2), use_bias=False)
    layer.build(x.shape)
    set_keras(layer, {"kernel": convert_tensor(w, "conv2d", "kernel", "keras", "keras", ctx)})
    np.testing.assert_allclose(to_numpy(layer(x)), ref, **TOL)
    assert convert_tensor(w, "conv2d", "kernel", "keras", "torch", ctx).tolist() == w.tolist()


def test_keras1_theano_conv1d_kernel_computes_true_convolution(rng) -> None:
    x = rng.normal(size=(2, 9, 3)).astype("float32")
    w = rng.normal(size=(3, 1, 3, 4)).astype("float32")  # Keras 1 Convolution1D (k, 1, in, out)
    b = rng.normal(size=4).astype("float32")
    ref = _true_conv(cl_to_cf(x), lambda o, i: w[:, 0, i, o], 4, b)
    layer = L.Conv1D(4, 3)
    layer.build(x.shape)
    kernel = convert_tensor(w, "conv1d", "kernel", "theano", "keras",
                            {"src_context": {"keras_version": "1"}})
    set_keras(layer, {"kernel": kernel, "bias": b})
    np.testing.assert_allclose(to_numpy(layer(x)), np.moveaxis(ref, 1, -1), **TOL)


def test_theano_th_conv3d_kernel_computes_true_convolution(rng) -> None:
    x = rng.normal(size=(2, 4, 5, 3, 2)).astype("float32")
    w = rng.normal(size=(3, 2, 2, 3, 2)).astype("float32")  # (out, in, kd, kh, kw)
    b = rng.normal(size=3).astype("float32")
    ref = _true_conv(cl_to_cf(x), lambda o, i: w[o, i], 3, b)
    layer = L.Conv3D(3, (2, 3, 2))
    layer.build(x.shape)
    set_keras(layer, {"kernel": convert_tensor(w, "conv3d", "kernel", "theano", "keras"), "bias": b})
    np.testing.assert_allclose(to_numpy(layer(x)), np.moveaxis(ref, 1, -1), **TOL)


# -- the Dense after a Flatten -----------------------------------------------------------

FEATURES = {
    "1d": {"w": 5, "c": 3},
    "2d": {"c": 3, "h": 4, "w": 5},
    "3d": {"c": 2, "d": 2, "h": 3, "w": 4},
}


def _feature_map(rng, shape: dict[str, int]) -> tuple[np.ndarray, str]:
    """A channels-first feature map (N, C, *spatial) and its axis letters."""
    letters = "c" + "".join(a for a in "dhw" if a in shape)
    return rng.normal(size=(2, *(shape[a] for a in letters))).astype("float32"), letters


def _flatten(fmap: np.ndarray, letters: str, order: str) -> np.ndarray:
    perm = (0, *(1 + letters.index(a) for a in order))
    return np.transpose(fmap, perm).reshape(fmap.shape[0], -1)


@pytest.mark.parametrize("dims", sorted(FEATURES))
def test_dense_after_flatten_rows_follow_the_flatten_order(dims, rng) -> None:
    shape = FEATURES[dims]
    fmap, letters = _feature_map(rng, shape)
    keras_order = "".join(a for a in "dhw" if a in shape) + "c"
    torch_order = "c" + keras_order[:-1]
    dense = L.Dense(6)
    x_keras = _flatten(fmap, letters, keras_order)
    dense.build(x_keras.shape)
    randomize_keras(dense, rng)
    ctx = {"flatten": {"feature_shape": shape, "src_order": keras_order, "dst_order": torch_order}}
    conv = convert_layer("dense", "keras", "torch", keras_arrays(dense), ctx)
    linear = nn.Linear(x_keras.shape[1], 6)
    set_torch(linear, W, dict(conv.arrays))
    expected = to_numpy(dense(x_keras))
    got = to_numpy(linear(torch.from_numpy(_flatten(fmap, letters, torch_order))))
    np.testing.assert_allclose(got, expected, **TOL)
    # orders default to each convention's own flatten order
    default = convert_tensor(keras_arrays(dense)["kernel"], "dense", "kernel", "keras", "torch",
                             {"flatten": {"feature_shape": shape}})
    assert np.array_equal(default, conv.arrays["kernel"])
    # and back: PyTorch rows (c first) into Keras rows (c last)
    back = convert_layer("dense", "torch", "keras", dict(conv.arrays),
                         {"flatten": {"feature_shape": shape, "src_order": torch_order,
                                      "dst_order": keras_order}})
    assert np.array_equal(back.arrays["kernel"], keras_arrays(dense)["kernel"])
    assert any(f"Flatten order: {keras_order} -> {torch_order}" in s for s in conv.steps)


def test_keras1_theano_dense_rows_reordered_for_keras3(rng) -> None:
    shape = {"c": 3, "h": 4, "w": 5}
    fmap, letters = _feature_map(rng, shape)
    kernel_th = rng.normal(size=(60, 6)).astype("float32")  # rows in (c, h, w) order
    expected = _flatten(fmap, letters, "chw") @ kernel_th
    kernel = convert_tensor(kernel_th, "dense", "kernel", "theano", "keras",
                            {"flatten": {"feature_shape": shape}})
    dense = L.Dense(6, use_bias=False)
    dense.build((2, 60))
    set_keras(dense, {"kernel": kernel})
    np.testing.assert_allclose(to_numpy(dense(_flatten(fmap, letters, "hwc"))), expected, **TOL)


# -- refusals ------------------------------------------------------------------------------

def test_missing_rule_names_kind_role_and_conventions() -> None:
    with pytest.raises(LayoutError) as info:
        tensor_transform("depthwise_conv2d", "kernel", "theano", "torch")
    text = str(info.value)
    for word in ("depthwise_conv2d", "kernel", "theano", "torch"):
        assert word in text


def test_gru_reset_after_false_has_no_torch_equivalent(rng) -> None:
    arrays = {"kernel": rng.normal(size=(3, 12)), "recurrent_kernel": rng.normal(size=(4, 12)),
              "bias": rng.normal(size=12)}
    with pytest.raises(LayoutError, match="reset_after=False.*no PyTorch weights"):
        convert_layer("gru", "keras", "torch", arrays)
    with pytest.raises(LayoutError, match="reset_after=False"):
        convert_layer("gru", "torch", "keras", {}, {"reset_after": False})
    parts = {f"{r}:{g}": v[..., :4] for g in "zrh" for r, v in arrays.items()}
    with pytest.raises(LayoutError, match="reset_after=False"):
        convert_layer("gru", "theano", "torch", parts)


def test_prelu_with_unshared_spatial_axes_is_refused_for_torch(rng) -> None:
    with pytest.raises(LayoutError, match="one per channel"):
        convert_tensor(rng.normal(size=(7, 5, 3)), "prelu", "alpha", "keras", "torch",
                       {"input_ndim": 3, "shared_axes": []})


def test_wrong_rank_is_a_shape_error_not_a_numpy_traceback() -> None:
    with pytest.raises(ShapeMismatchError, match=r"shape \(3, 3\).*rank 4"):
        convert_tensor(np.zeros((3, 3)), "conv2d", "kernel", "keras", "torch")
    with pytest.raises(ShapeMismatchError):
        convert_tensor(np.zeros((50, 6)), "dense", "kernel", "keras", "torch",
                       {"flatten": {"feature_shape": {"c": 3, "h": 4, "w": 5}}})


def test_attention_without_num_heads_says_which_context_is_missing() -> None:
    with pytest.raises(LayoutError, match="num_heads"):
        tensor_transform("multi_head_attention", "query_kernel", "torch", "keras")


def test_num_batches_tracked_only_converts_with_its_layer() -> None:
    with pytest.raises(LayoutError, match="convert_layer"):
        tensor_transform("batch_norm", "num_batches_tracked", "torch", "keras")
    out = convert_layer("batch_norm", "torch", "keras",
                        {r: np.ones(3, "float32") for r in ("gamma", "beta", "moving_mean",
                                                            "moving_variance")}
                        | {"num_batches_tracked": np.array(7)})
    assert sorted(out.arrays) == ["beta", "gamma", "moving_mean", "moving_variance"]
    assert Kind.BATCH_NORM is out.kind and Role.GAMMA.value in out.arrays


# -- Keras 1 per-gate arrays ---------------------------------------------------------------

def test_keras1_gru_gate_arrays_join_into_keras3_gru_reset_before(rng) -> None:
    """Keras 1 GRU (z, r, h arrays; reset applied before U_h) against a numpy reference."""
    n_in, units = 3, 4
    parts = {f"{role}:{g}": rng.normal(size=shape).astype("float32") for g in "zrh"
             for role, shape in (("kernel", (n_in, units)), ("recurrent_kernel", (units, units)),
                                 ("bias", (units,)))}
    x = rng.normal(size=(2, 5, n_in)).astype("float32")

    def sig(v):
        return 1 / (1 + np.exp(-v))

    p = {k: v.astype("float64") for k, v in parts.items()}
    h, outs = np.zeros((2, units)), []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = sig(xt @ p["kernel:z"] + h @ p["recurrent_kernel:z"] + p["bias:z"])
        r = sig(xt @ p["kernel:r"] + h @ p["recurrent_kernel:r"] + p["bias:r"])
        hh = np.tanh(xt @ p["kernel:h"] + (r * h) @ p["recurrent_kernel:h"] + p["bias:h"])
        h = z * h + (1 - z) * hh
        outs.append(h)
    conv = convert_layer("gru", "theano", "keras", parts)
    layer = L.GRU(units, reset_after=False, return_sequences=True)
    layer.build(x.shape)
    set_keras(layer, dict(conv.arrays))
    np.testing.assert_allclose(to_numpy(layer(x)), np.stack(outs, axis=1), **TOL)
    assert any("reset_after=False" in s for s in conv.steps)


def test_keras1_lstm_parts_are_joined_in_keras2_gate_order(rng) -> None:
    parts = {f"{r}:{g}": np.full((2, 3) if r == "kernel" else (3,), "icfo".index(g), "float32")
             for g in "icfo" for r in ("kernel", "bias")}
    out = convert_layer("lstm", "keras", "keras", parts).arrays
    # Keras 2/3 order is i, f, c, o (keras/engine/saving.py joins W_i, W_f, W_c, W_o)
    assert out["bias"].tolist() == [0] * 3 + [2] * 3 + [1] * 3 + [3] * 3
    assert roles_in("lstm", "theano", {"per_gate": True})[:3] == ("kernel:i", "recurrent_kernel:i",
                                                                  "bias:i")
    with pytest.raises(LayoutError, match="one array per gate"):
        convert_layer("lstm", "keras", "keras", {"kernel:i": np.zeros((2, 3))})


def test_shared_keras1_context_does_not_leak_into_the_target_layout(rng) -> None:
    kernel = rng.normal(size=(3, 1, 5, 6)).astype("float32")  # Keras 1.2 Convolution1D
    out = convert_layer("conv1d", "theano", "keras", {"kernel": kernel}, {"keras_version": "1"})
    assert out.arrays["kernel"].shape == (3, 5, 6)
    assert np.array_equal(out.arrays["kernel"], kernel[::-1, 0])
