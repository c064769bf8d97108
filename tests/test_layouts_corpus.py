"""Legacy Keras 1/2 single-layer files (real, from the corpus) load into Keras 3 and PyTorch.

Each file's layer is rebuilt in Keras 3 and PyTorch with weights converted by
``convert_layer``, run on a seeded random input, and compared with a numpy/scipy reference
written here from the stored arrays and the old layer's documented equations (Keras 1
LSTMs use hard_sigmoid = clip(0.2x + 0.5, 0, 1); Theano convolves, TensorFlow correlates).
The Dense, Conv2D and SeparableConv2D files hold ``np.arange`` values (corpus README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import signal

from weightgraft import open_checkpoint
from weightgraft.layouts import convert_layer

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
L, nn = keras.layers, torch.nn
pytestmark = [pytest.mark.corpus, pytest.mark.keras, pytest.mark.torch]

VERSIONS = [("tensorflow", "1"), ("tensorflow", "2"), ("theano", "1"), ("theano", "2")]
IDS = [f"{b}_{v}" for b, v in VERSIONS]


# -- reading: the library's own Keras 1/2 HDF5 reader ------------------------------------

def read_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Layer name -> {role, or 'role:gate' for Keras 1 per-gate arrays: array}."""
    with open_checkpoint(path) as ckpt:
        out: dict[str, dict[str, np.ndarray]] = {}
        for e in ckpt.model_entries():
            key = f"{e.role.value}:{e.part}" if e.part else e.role.value
            out.setdefault(e.layer.split("/")[-1], {})[key] = e.load()
        return out


def legacy(corpus: Path, stem: str, backend: str, version: str) -> tuple[dict, str, dict]:
    """The layers of one file, its convention and the context its weights need."""
    path = corpus / "legacy-keras-layers" / f"{stem}_{backend}_{version}.h5"
    # These files were saved with channels-last ordering under both backends (README);
    # under Theano the conv kernels are still flipped (Theano convolves).
    convention = "theano" if backend == "theano" else "keras"
    context = {"dim_ordering": "tf", "src_context": {"keras_version": version}}
    return read_layers(path), convention, context


def tolerance(ref: np.ndarray) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-5 * max(1.0, float(np.abs(ref).max()))}


def kout(value: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(value)


def assign_keras(layer: Any, arrays: dict[str, np.ndarray]) -> None:
    by_role = {v.path.split("/")[-1]: v for v in layer.weights}
    assert sorted(by_role) == sorted(arrays)
    for role, var in by_role.items():
        var.assign(arrays[role])


def assign_torch(module: Any, names: dict[str, str], arrays: dict[str, np.ndarray]) -> None:
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(arrays[r]))
                            for k, r in names.items()}, strict=True)


def tout(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        y = module(torch.from_numpy(np.ascontiguousarray(x)))
    return (y[0] if isinstance(y, tuple) else y).numpy()


# -- Dense and Conv2D: np.arange values -------------------------------------------------------

@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_dense_file_loads_into_keras3_and_torch(corpus, backend, version, rng) -> None:
    layers, conv, ctx = legacy(corpus, "dense", backend, version)
    (arrays,) = layers.values()
    assert np.array_equal(arrays["kernel"], np.arange(24, dtype="float32").reshape(4, 6))
    assert np.array_equal(arrays["bias"], np.arange(6, dtype="float32"))
    x = rng.normal(size=(2, 4)).astype("float32")
    ref = x @ np.arange(24.0).reshape(4, 6) + np.arange(6.0)
    dense = L.Dense(6)
    dense.build((2, 4))
    assign_keras(dense, dict(convert_layer("dense", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(dense(x)), ref, **tolerance(ref))
    linear = nn.Linear(4, 6)
    assign_torch(linear, {"weight": "kernel", "bias": "bias"},
                 dict(convert_layer("dense", conv, "torch", arrays, ctx).arrays))
    np.testing.assert_allclose(tout(linear, x), ref, **tolerance(ref))


def _conv2d_reference(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, flip: bool) -> np.ndarray:
    """Valid 2-D conv of channels-last x with an HWIO kernel: correlate, or convolve (Theano)."""
    op = signal.convolve if flip else signal.correlate
    return np.stack([np.stack([
        sum(op(x[n, :, :, i], kernel[:, :, i, o], mode="valid") for i in range(kernel.shape[2]))
        + bias[o] for o in range(kernel.shape[3])], axis=-1) for n in range(x.shape[0])])


@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_conv2d_file_loads_into_keras3_and_torch(corpus, backend, version, rng) -> None:
    layers, conv, ctx = legacy(corpus, "conv2d", backend, version)
    (arrays,) = layers.values()
    stored = np.arange(270, dtype="float32").reshape(3, 3, 5, 6)
    assert np.array_equal(arrays["kernel"], stored)
    x = rng.normal(size=(2, 5, 5, 5)).astype("float32")
    ref = _conv2d_reference(x, stored, np.arange(6.0), flip=backend == "theano")
    layer = L.Conv2D(6, 3)
    layer.build(x.shape)
    assign_keras(layer, dict(convert_layer("conv2d", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(layer(x)), ref, **tolerance(ref))
    module = nn.Conv2d(5, 6, 3)
    assign_torch(module, {"weight": "kernel", "bias": "bias"},
                 dict(convert_layer("conv2d", conv, "torch", arrays, ctx).arrays))
    got = np.moveaxis(tout(module, np.moveaxis(x, -1, 1)), 1, -1)
    np.testing.assert_allclose(got, ref, **tolerance(ref))


def test_sepconv2d_file_loads_into_keras3_and_a_torch_depthwise_pointwise_pair(corpus, rng) -> None:
    layers, conv, ctx = legacy(corpus, "sepconv2d", "tensorflow", "2")
    (arrays,) = layers.values()
    assert np.array_equal(arrays["depthwise_kernel"], np.arange(90, dtype="float32").reshape(3, 3, 5, 2))
    assert np.array_equal(arrays["pointwise_kernel"], np.arange(60, dtype="float32").reshape(1, 1, 10, 6))
    x = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    dw, pw = arrays["depthwise_kernel"], arrays["pointwise_kernel"][0, 0]
    depthwise = np.stack([signal.correlate(x[n, :, :, i], dw[:, :, i, m], mode="valid")
                          for n in range(2) for i in range(5) for m in range(2)])
    depthwise = np.moveaxis(depthwise.reshape(2, 10, 1, 2), 1, -1)  # channel i*2 + m
    ref = depthwise @ pw + arrays["bias"]
    ctx = {**ctx, "depth_multiplier": 2}
    layer = L.SeparableConv2D(6, 3, depth_multiplier=2)
    layer.build(x.shape)
    assign_keras(layer, dict(convert_layer("separable_conv2d", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(layer(x)), ref, **tolerance(ref))
    pair = nn.Sequential(nn.Conv2d(5, 10, 3, groups=5, bias=False), nn.Conv2d(10, 6, 1))
    assign_torch(pair, {"0.weight": "depthwise_kernel", "1.weight": "pointwise_kernel",
                        "1.bias": "bias"},
                 dict(convert_layer("separable_conv2d", conv, "torch", arrays, ctx).arrays))
    got = np.moveaxis(tout(pair, np.moveaxis(x, -1, 1)), 1, -1)
    np.testing.assert_allclose(got, ref, **tolerance(ref))


# -- recurrent layers against numpy references --------------------------------------------

def keras1_hard_sigmoid(x: Any) -> Any:
    """Keras 1/2's hard_sigmoid (Keras 3's is x/6 + 0.5)."""
    return np.clip(0.2 * x + 0.5, 0.0, 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(x: np.ndarray, gates: dict[str, tuple[np.ndarray, ...]], gate_fn) -> np.ndarray:
    """Keras 1's LSTM step from its per-gate (W, U, b); returns every step's h."""
    h = np.zeros((x.shape[0], gates["i"][1].shape[0]))
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        pre = {g: x[:, t] @ w + h @ u + b for g, (w, u, b) in gates.items()}
        i, f, o = gate_fn(pre["i"]), gate_fn(pre["f"]), gate_fn(pre["o"])
        c = f * c + i * np.tanh(pre["c"])
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1)


def lstm_gates(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per-gate (W, U, b) from a file: Keras 1 parts, or Keras 2's joined i, f, c, o blocks."""
    if "kernel:i" in arrays:
        return {g: tuple(arrays[f"{r}:{g}"].astype("float64")
                         for r in ("kernel", "recurrent_kernel", "bias")) for g in "icfo"}
    split = {r: np.split(arrays[r].astype("float64"), 4, axis=-1)
             for r in ("kernel", "recurrent_kernel", "bias")}
    return {g: tuple(split[r][n] for r in ("kernel", "recurrent_kernel", "bias"))
            for n, g in enumerate("ifco")}


def _check_lstm(arrays, conv, ctx, x) -> None:
    units = lstm_gates(arrays)["i"][1].shape[0]
    ref = lstm_reference(x, lstm_gates(arrays), keras1_hard_sigmoid)
    layer = L.LSTM(units, return_sequences=True,
                   recurrent_activation=lambda v: keras.ops.clip(0.2 * v + 0.5, 0.0, 1.0))
    layer.build(x.shape)
    assign_keras(layer, dict(convert_layer("lstm", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(layer(x)), ref, **tolerance(ref))
    # PyTorch's LSTM has a logistic sigmoid: compare with the same reference using it.
    module = nn.LSTM(x.shape[2], units, batch_first=True)
    assign_torch(module, {"weight_ih_l0": "kernel", "weight_hh_l0": "recurrent_kernel",
                          "bias_ih_l0": "bias", "bias_hh_l0": "recurrent_bias"},
                 dict(convert_layer("lstm", conv, "torch", arrays, ctx).arrays))
    ref_sigmoid = lstm_reference(x, lstm_gates(arrays), sigmoid)
    np.testing.assert_allclose(tout(module, x), ref_sigmoid, **tolerance(ref_sigmoid))
    # the two activations really differ here, so the comparisons can tell them apart
    assert np.abs(ref - ref_sigmoid).max() > 1e-3


@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_lstm_file_loads_into_keras3_and_torch(corpus, backend, version, rng) -> None:
    layers, conv, ctx = legacy(corpus, "lstm", backend, version)
    (arrays,) = layers.values()
    assert len(arrays) == (12 if version == "1" else 3)
    _check_lstm(arrays, conv, ctx, rng.normal(size=(2, 4, 1)).astype("float32"))


@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_embedding_lstm_file_loads_into_keras3_and_torch(corpus, backend, version, rng) -> None:
    layers, conv, ctx = legacy(corpus, "embedding_lstm", backend, version)
    emb = next(a for name, a in layers.items() if name.startswith("embedding"))
    lstm = next(a for name, a in layers.items() if name.startswith("lstm"))
    ids = rng.integers(0, 4, size=(2, 10))
    table = emb["embeddings"]
    k_emb = L.Embedding(4, 5)
    k_emb.build((2, 10))
    assign_keras(k_emb, dict(convert_layer("embedding", conv, "keras", emb, ctx).arrays))
    np.testing.assert_array_equal(kout(k_emb(ids)), table[ids])
    t_emb = nn.Embedding(4, 5)
    assign_torch(t_emb, {"weight": "embeddings"},
                 dict(convert_layer("embedding", conv, "torch", emb, ctx).arrays))
    np.testing.assert_array_equal(tout(t_emb, ids), table[ids])
    # the file's embeddings are ~0.05; scale the sequence so the gates leave their linear range
    _check_lstm(lstm, conv, ctx, (table[ids] * 40).astype("float32"))


@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_simple_rnn_file_loads_into_keras3_and_torch(corpus, backend, version, rng) -> None:
    layers, conv, ctx = legacy(corpus, "simple_rnn", backend, version)
    (arrays,) = layers.values()
    x = rng.normal(size=(2, 4, 1)).astype("float32")
    w, u, b = (arrays[r].astype("float64") for r in ("kernel", "recurrent_kernel", "bias"))
    h, outs = np.zeros((2, 6)), []
    for t in range(4):
        h = np.tanh(x[:, t] @ w + h @ u + b)
        outs.append(h)
    ref = np.stack(outs, axis=1)
    layer = L.SimpleRNN(6, return_sequences=True)
    layer.build(x.shape)
    assign_keras(layer, dict(convert_layer("simple_rnn", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(layer(x)), ref, **tolerance(ref))
    module = nn.RNN(1, 6, batch_first=True)
    assign_torch(module, {"weight_ih_l0": "kernel", "weight_hh_l0": "recurrent_kernel",
                          "bias_ih_l0": "bias", "bias_hh_l0": "recurrent_bias"},
                 dict(convert_layer("simple_rnn", conv, "torch", arrays, ctx).arrays))
    np.testing.assert_allclose(tout(module, x), ref, **tolerance(ref))


@pytest.mark.parametrize("backend,version", VERSIONS, ids=IDS)
def test_embedding_conv1d_file_conv1d_loads_into_keras3_and_torch(corpus, backend, version,
                                                                   rng) -> None:
    layers, conv, ctx = legacy(corpus, "embedding_conv1d", backend, version)
    arrays = next(a for name, a in layers.items() if name.startswith(("conv", "convolution")))
    kernel = arrays["kernel"]
    assert kernel.shape == ((3, 1, 5, 6) if version == "1" else (3, 5, 6))  # Keras 1: (k, 1, in, out)
    kernel = kernel.reshape(3, 5, 6)
    x = rng.normal(size=(2, 10, 5)).astype("float32")
    op = signal.convolve if backend == "theano" else signal.correlate
    ref = np.stack([np.stack([sum(op(x[n, :, i], kernel[:, i, o], mode="valid") for i in range(5))
                              + arrays["bias"][o] for o in range(6)], axis=-1) for n in range(2)])
    layer = L.Conv1D(6, 3)
    layer.build(x.shape)
    assign_keras(layer, dict(convert_layer("conv1d", conv, "keras", arrays, ctx).arrays))
    np.testing.assert_allclose(kout(layer(x)), ref, **tolerance(ref))
    module = nn.Conv1d(5, 6, 3)
    assign_torch(module, {"weight": "kernel", "bias": "bias"},
                 dict(convert_layer("conv1d", conv, "torch", arrays, ctx).arrays))
    got = np.moveaxis(tout(module, np.moveaxis(x, -1, 1)), 1, -1)
    np.testing.assert_allclose(got, ref, **tolerance(ref))


# -- the Theano-era MNIST CNN: known accuracy on 100 digits -------------------------------

def _mnist(corpus: Path, backend: str) -> tuple[dict, str, dict, np.ndarray, np.ndarray]:
    import json

    folder = corpus / "keras1-mnist-cnn"
    layers = read_layers(folder / f"mnist_cnn_{backend}_keras_1_weights.h5")
    config = json.loads((folder / f"mnist_cnn_{backend}_keras_1_config.json").read_text())
    ordering = config["config"][0]["config"]["dim_ordering"]
    convention = "theano" if backend == "th" else "keras"
    with h5py.File(folder / "digits_inputs_and_outputs.h5", "r") as f:
        x = np.asarray(f["inputs/dense_input_1"], dtype="float32").reshape(100, 28, 28, 1)
        labels = np.asarray(f["outputs/activation_2"]).argmax(axis=1)
    return layers, convention, {"dim_ordering": ordering}, x, labels


def _mnist_weights(layers, convention, ctx, dst, *, flip_kernels: bool = True):
    out = {}
    for name in ("convolution2d_1", "convolution2d_2"):
        src = convention if flip_kernels else "torch"  # "torch": same axes, no flip
        if convention == "keras":
            src = "keras"
        out[name] = convert_layer("conv2d", src, dst, layers[name], ctx).arrays
    flat = {"flatten": {"feature_shape": {"c": 32, "h": 12, "w": 12}}}
    out["dense_1"] = convert_layer("dense", convention, dst, layers["dense_1"], {**ctx, **flat}).arrays
    out["dense_2"] = convert_layer("dense", convention, dst, layers["dense_2"], ctx).arrays
    return out


def _keras_mnist_accuracy(weights, x, labels) -> int:
    model = keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu", name="convolution2d_1"),
        L.Conv2D(32, 3, activation="relu", name="convolution2d_2"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(128, activation="relu", name="dense_1"),
        L.Dense(10, activation="softmax", name="dense_2")])
    for name, arrays in weights.items():
        assign_keras(model.get_layer(name), dict(arrays))
    return int((kout(model(x)).argmax(axis=1) == labels).sum())


def _torch_mnist_accuracy(weights, x, labels) -> int:
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4608, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    for index, name in zip((0, 2, 6, 8), weights):
        assign_torch(model[index], {"weight": "kernel", "bias": "bias"}, dict(weights[name]))
    return int((tout(model, np.moveaxis(x, -1, 1)).argmax(axis=1) == labels).sum())


@pytest.mark.parametrize("backend,correct", [("th", 98), ("tf", 99)])
def test_keras1_mnist_cnn_scores_its_known_accuracy_in_keras3_and_torch(corpus, backend,
                                                                       correct) -> None:
    layers, convention, ctx, x, labels = _mnist(corpus, backend)
    assert _keras_mnist_accuracy(_mnist_weights(layers, convention, ctx, "keras"), x, labels) == correct
    assert _torch_mnist_accuracy(_mnist_weights(layers, convention, ctx, "torch"), x, labels) == correct


def test_keras1_mnist_cnn_without_the_theano_flip_scores_worse(corpus) -> None:
    layers, convention, ctx, x, labels = _mnist(corpus, "th")
    unflipped = _mnist_weights(layers, convention, ctx, "keras", flip_kernels=False)
    assert _keras_mnist_accuracy(unflipped, x, labels) < 90  # the README measured 81
