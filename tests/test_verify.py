"""verify: twins agree across frameworks; each known fault is located and named.

Weights are copied between twins with small explicit numpy transposes written here, so the
tests do not lean on weightgraft.layouts (the code under test elsewhere). Every fault is
introduced on purpose into one twin, and verify must name the first layer it shows in and
the cause that was introduced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from weightgraft.frameworks import import_keras, import_torch

keras = import_keras("tests")
torch = import_torch("tests")
F = torch.nn.functional

from weightgraft.verify import VerifyResult, verify  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

H = W = 8


# -- twins -------------------------------------------------------------------------------------
def keras_cnn(seed: int = 0) -> keras.Model:
    """conv(relu) -> BN -> pool -> conv -> Flatten -> Dense(sigmoid), channels-last."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((H, W, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.BatchNormalization(epsilon=1e-3, name="bn1"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(6, 3, name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(5, activation="sigmoid", name="fc"),
    ])
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(seed + 1)
    # Small variances make epsilon visible; nonzero statistics make BN do something.
    bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4), rng.normal(0, 0.3, 4),
                    rng.uniform(0.005, 0.02, 4)])
    return model


class TorchCNN(torch.nn.Module):
    """The PyTorch twin: ReLU as a module, sigmoid as a plain function (not recorded)."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.bn1 = torch.nn.BatchNorm2d(4, eps=eps)
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(6 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.pool(self.bn1(self.relu(self.conv1(x)))))
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


def conv_to_torch(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW


def dense_after_flatten_to_torch(kernel: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    """Keras rows are flattened (h, w, c); torch columns (c, h, w)."""
    units = kernel.shape[1]
    return np.ascontiguousarray(
        kernel.reshape(h, w, c, units).transpose(2, 0, 1, 3).reshape(-1, units).T)


def copy_cnn(km: keras.Model, tm: TorchCNN, *, flip_conv1: bool = False,
             flatten_rows: bool = True) -> None:
    k1, b1 = km.get_layer("conv1").get_weights()
    gamma, beta, mean, var = km.get_layer("bn1").get_weights()
    k2, b2 = km.get_layer("conv2").get_weights()
    kd, bd = km.get_layer("fc").get_weights()
    t1 = conv_to_torch(k1)
    if flip_conv1:  # a Theano-era kernel that nobody flipped
        t1 = np.ascontiguousarray(t1[:, :, ::-1, ::-1])
    fc = dense_after_flatten_to_torch(kd, 2, 2, 6) if flatten_rows else np.ascontiguousarray(kd.T)
    state = {"conv1.weight": t1, "conv1.bias": b1, "bn1.weight": gamma, "bn1.bias": beta,
             "bn1.running_mean": mean, "bn1.running_var": var, "conv2.weight": conv_to_torch(k2),
             "conv2.bias": b2, "fc.weight": fc, "fc.bias": bd}
    tm.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()},
                       strict=False)


def cnn_pair(**faults: object) -> tuple[keras.Model, TorchCNN]:
    eps = float(faults.pop("eps", 1e-3))  # type: ignore[arg-type]
    km, tm = keras_cnn(), TorchCNN(eps=eps)
    copy_cnn(km, tm, **faults)  # type: ignore[arg-type]
    return km, tm


def torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# -- twins agree -------------------------------------------------------------------------------
def test_keras_and_torch_twins_pass_both_ways() -> None:
    km, tm = cnn_pair()
    x = np.random.default_rng(7).standard_normal((2, H, W, 3)).astype("float32")
    # Independent check of the twin itself: the frameworks agree before verify is asked.
    want = keras.ops.convert_to_numpy(km(x))
    tm.eval()
    with torch.no_grad():
        got = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    tm.train()  # verify must run it in inference mode by itself

    results = [verify(a, b, atol=1e-5) for a, b in ((km, tm), (tm, km))]
    for result in results:
        assert isinstance(result, VerifyResult)
        assert result.passed, result.first_divergence
        assert result.first_divergence is None and result.diagnosis is None
        assert [r.kind for r in result.layers] == ["conv2d", "batch_norm", "conv2d", "dense"]
        assert all(r.max_abs < 1e-5 for r in result.layers)
        assert result.outputs_max_abs < 1e-5
    assert results[0].input_shapes_a == ((2, H, W, 3),)
    assert results[0].input_shapes_b == ((2, 3, H, W),)


def test_user_inputs_from_npy_are_used(tmp_path) -> None:
    km, tm = cnn_pair()
    x = np.random.default_rng(3).standard_normal((3, H, W, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    result = verify(km, tm, inputs=tmp_path / "x.npy")
    assert result.passed and result.input_shapes_a == ((3, H, W, 3),)


def test_weights_alone_do_not_pass() -> None:
    """Two independently initialised twins must fail: verify is not vacuous."""
    result = verify(keras_cnn(), TorchCNN())
    assert not result.passed
    assert result.first_divergence.layer_a == "conv1"


# -- faults located and named ------------------------------------------------------------------
@pytest.mark.parametrize("keras_first", [True, False], ids=["keras-torch", "torch-keras"])
def test_unflipped_theano_kernel_is_named(keras_first: bool) -> None:
    km, tm = cnn_pair(flip_conv1=True)
    result = verify(km, tm) if keras_first else verify(tm, km)
    assert not result.passed
    assert (result.first_divergence.layer_a, result.first_divergence.layer_b) == ("conv1", "conv1")
    assert result.diagnosis.cause == "flipped_kernel"
    assert result.diagnosis.evidence["error_with_b_flipped"] < 1e-4
    assert result.diagnosis.evidence["error_before"] > 0.1


def test_flatten_ordered_dense_is_named() -> None:
    km, tm = cnn_pair(flatten_rows=False)
    result = verify(km, tm)
    assert not result.passed
    assert result.first_divergence.layer_a == "fc" and result.first_divergence.layer_b == "fc"
    assert [r.passed for r in result.layers[:3]] == [True, True, True]
    assert result.diagnosis.cause == "flatten_order"
    assert "hwc" in result.diagnosis.explanation and "chw" in result.diagnosis.explanation
    assert result.diagnosis.evidence["error_reordered_hwc -> chw"] < 1e-4


def test_pairs_from_a_match_plan() -> None:
    import weightgraft
    from weightgraft.verify import paired_views

    view_a, view_b = paired_views(*cnn_pair(flatten_rows=False))
    plan = weightgraft.match(view_a, view_b)
    result = verify(view_a, view_b, layer_pairs=plan)
    assert [(r.layer_a, r.layer_b) for r in result.layers] == [
        ("conv1", "conv1"), ("bn1", "bn1"), ("conv2", "conv2"), ("fc", "fc")]
    assert result.first_divergence.layer_a == "fc"
    assert result.diagnosis.cause == "flatten_order"


def test_batch_norm_epsilon_is_named() -> None:
    km, tm = cnn_pair(eps=1e-5)
    result = verify(km, tm)
    assert not result.passed
    assert result.first_divergence.layer_a == "bn1"
    assert result.diagnosis.cause == "batch_norm_epsilon"
    assert result.diagnosis.evidence["epsilon_a"] == pytest.approx(1e-3)
    assert result.diagnosis.evidence["epsilon_b"] == pytest.approx(1e-5)
    assert result.diagnosis.evidence["error_with_a_epsilon"] < 1e-4


def _keras_block(stride_on_1x1: bool) -> keras.Model:
    """A ResNet-style bottleneck: 1x1 -> 3x3 with a strided 1x1 shortcut, added."""
    keras.utils.set_random_seed(5)
    x = keras.Input((H, W, 4))
    s1, s3 = (2, 1) if stride_on_1x1 else (1, 2)
    y = keras.layers.Conv2D(4, 1, strides=s1, activation="relu", name="conv_a")(x)
    y = keras.layers.Conv2D(4, 3, strides=s3, padding="same", name="conv_b")(y)
    s = keras.layers.Conv2D(4, 1, strides=2, name="shortcut")(x)
    return keras.Model(x, keras.layers.Add(name="add")([y, s]))


class TorchBlock(torch.nn.Module):
    """The same block with its stride on the 3x3 (torchvision's ResNet v1.5 placement)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = torch.nn.Conv2d(4, 4, 1)
        self.conv_b = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.shortcut = torch.nn.Conv2d(4, 4, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(F.relu(self.conv_a(x))) + self.shortcut(x)


def test_stride_on_the_1x1_instead_of_the_3x3_is_an_architecture_difference() -> None:
    km, tm = _keras_block(stride_on_1x1=True), TorchBlock()
    tm.load_state_dict({f"{name}.{part}": torch.from_numpy(
        conv_to_torch(w) if part == "weight" else w)
        for name in ("conv_a", "conv_b", "shortcut")
        for part, w in zip(("weight", "bias"), km.get_layer(name).get_weights())})
    pairs = [("conv_a", "conv_a"), ("conv_b", "conv_b"), ("shortcut", "shortcut")]
    result = verify(km, tm, layer_pairs=pairs)
    assert not result.passed
    assert result.first_divergence.layer_a == "conv_a"
    assert result.first_divergence.shape_a == (2, 4, 4, 4)
    assert result.first_divergence.shape_b == (2, 8, 8, 4)
    assert result.diagnosis.cause == "architecture"
    placement = " ".join(result.diagnosis.evidence["stride_placement"])
    assert "conv_a" in placement and "conv_b" in placement
    assert result.diagnosis.evidence["strides_a"] == 2
    assert result.diagnosis.evidence["strides_b"] == 1


class LegacyHardSigmoid(keras.layers.Layer):
    """Keras 1/2's hard_sigmoid, 0.2x + 0.5 clipped (Keras 3 and PyTorch use x/6 + 0.5)."""

    def call(self, x):  # type: ignore[no-untyped-def]
        return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def test_hard_sigmoid_variant_is_named() -> None:
    keras.utils.set_random_seed(11)
    km = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="gate"),
                           LegacyHardSigmoid(name="legacy_hard_sigmoid")])
    linear = torch.nn.Linear(6, 4)
    kernel, bias = km.get_layer("gate").get_weights()
    linear.load_state_dict({"weight": torch.from_numpy(kernel.T.copy()),
                            "bias": torch.from_numpy(bias)})

    class TorchGate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.hardsigmoid(self.gate(x))

    result = verify(km, TorchGate())
    assert not result.passed
    assert result.layers[0].passed  # the Dense itself agrees: the activation differs after it
    assert result.first_divergence.layer_a == "(output)"
    assert result.diagnosis.cause == "activation_variant"
    assert result.diagnosis.evidence["a"].startswith("0.2x+0.5")
    assert result.diagnosis.evidence["b"].startswith("x/6+0.5")


def _legacy_hard_sigmoid(x):  # type: ignore[no-untyped-def]
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def test_hard_sigmoid_fused_into_the_dense_is_named() -> None:
    keras.utils.set_random_seed(11)
    km = keras.Sequential([keras.Input((6,)),
                           keras.layers.Dense(4, activation=_legacy_hard_sigmoid, name="gate")])
    linear = torch.nn.Linear(6, 4)
    kernel, bias = km.get_layer("gate").get_weights()
    linear.load_state_dict({"weight": torch.from_numpy(kernel.T.copy()),
                            "bias": torch.from_numpy(bias)})

    class TorchGate(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.hardsigmoid(self.gate(x))

    result = verify(km, TorchGate())
    assert result.first_divergence.layer_a == "gate"
    assert result.diagnosis.cause == "activation_variant"
    assert result.diagnosis.evidence["a"].startswith("0.2x+0.5")


def test_asymmetric_same_padding_versus_symmetric_is_named() -> None:
    keras.utils.set_random_seed(2)
    km = keras.Sequential([keras.Input((H, W, 3)),
                           keras.layers.Conv2D(4, 3, strides=2, padding="same", name="down")])
    tm = torch.nn.Sequential()
    tm.add_module("down", torch.nn.Conv2d(3, 4, 3, stride=2, padding=1))
    kernel, bias = km.get_layer("down").get_weights()
    tm.load_state_dict({"down.weight": torch.from_numpy(conv_to_torch(kernel)),
                        "down.bias": torch.from_numpy(bias)})
    result = verify(km, tm)
    assert not result.passed
    assert result.first_divergence.layer_a == "down"
    assert result.diagnosis.cause == "padding"
    assert "TensorFlow" in result.diagnosis.explanation
    ev = result.diagnosis.evidence
    assert ev["a_vs_'same' as TensorFlow (extra row/column at the end)"] < 1e-4
    assert ev["b_vs_symmetric (PyTorch padding=k//2 on both sides)"] < 1e-4


def test_missing_bias_is_an_architecture_difference() -> None:
    keras.utils.set_random_seed(4)
    km = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, use_bias=False, name="fc")])
    tm = torch.nn.Sequential()
    tm.add_module("fc", torch.nn.Linear(6, 3))
    (kernel,) = km.get_layer("fc").get_weights()
    tm.load_state_dict({"fc.weight": torch.from_numpy(kernel.T.copy()),
                        "fc.bias": torch.tensor([0.5, -0.25, 0.125])})
    result = verify(km, tm)
    assert result.first_divergence.layer_a == "fc"
    assert result.diagnosis.cause == "architecture"
    assert "has a bias" in result.diagnosis.explanation
    assert result.diagnosis.evidence["error_without_b_bias"] < 1e-6
    assert tm.fc.bias.detach().numpy().tolist() == [0.5, -0.25, 0.125]  # restored


def test_gru_reset_after_is_named() -> None:
    """A Keras 1/2-style GRU (reset before the recurrent matmul) against PyTorch's GRU."""
    keras.utils.set_random_seed(8)
    km = keras.Sequential([keras.Input((5, 3)),
                           keras.layers.GRU(4, reset_after=False, name="gru")])
    kernel, recurrent, bias = km.get_layer("gru").get_weights()

    def torch_gates(a: np.ndarray) -> np.ndarray:  # Keras (z, r, h) -> PyTorch (r, z, n)
        z, r, h = np.split(a, 3, axis=-1)
        return np.ascontiguousarray(np.concatenate([r, z, h], axis=-1))

    class TorchGRU(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gru(x)[0][:, -1]

    tm = TorchGRU()
    tm.load_state_dict({
        "gru.weight_ih_l0": torch.from_numpy(torch_gates(kernel).T.copy()),
        "gru.weight_hh_l0": torch.from_numpy(torch_gates(recurrent).T.copy()),
        "gru.bias_ih_l0": torch.from_numpy(torch_gates(bias)),
        "gru.bias_hh_l0": torch.zeros(12)})
    result = verify(km, tm)
    assert not result.passed
    assert result.first_divergence.layer_a == "gru"
    assert result.diagnosis.cause == "gru_reset_after"
    ev = result.diagnosis.evidence
    assert ev["reset_after_a"] is False and ev["reset_after_b"] is True
    assert ev["error_a_reset_after_false"] < 1e-5 < ev["error_a_reset_after_true"]


def test_models_are_unchanged_after_verify() -> None:
    km, tm = cnn_pair(flip_conv1=True)  # diverges, so the diagnosis re-runs b with new weights
    tm.train()
    km_before = [w.copy() for w in km.get_weights()]
    tm_before = torch_state(tm)
    result = verify(km, tm)
    assert result.diagnosis.cause == "flipped_kernel"
    assert tm.training and all(m.training for m in tm.modules())
    for key, value in torch_state(tm).items():
        np.testing.assert_array_equal(value, tm_before[key], err_msg=key)
    for before, after in zip(km_before, km.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_result_serialises_to_json() -> None:
    km, tm = cnn_pair(eps=1e-5)
    data = json.loads(json.dumps(verify(km, tm).to_dict()))
    assert data["passed"] is False
    assert data["first_divergence"]["layer_a"] == "bn1"
    assert data["diagnosis"]["cause"] == "batch_norm_epsilon"


# -- command line ------------------------------------------------------------------------------
TORCH_FACTORY = '''
import torch


class Net(torch.nn.Module):
    def __init__(self, eps):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.bn1 = torch.nn.BatchNorm2d(4, eps=eps)
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(24, 5)

    def forward(self, x):
        x = self.conv2(self.pool(self.bn1(self.relu(self.conv1(x)))))
        return torch.sigmoid(self.fc(torch.flatten(x, 1)))


def build(eps=1e-3):
    return Net(eps)
'''


def test_cli_verify_exit_status_and_json(tmp_path) -> None:
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    km, tm = cnn_pair()
    km.save(tmp_path / "a.keras")
    # num_batches_tracked is a training counter, not a weight: leave it out of the file.
    torch.save({k: v for k, v in tm.state_dict().items() if "num_batches" not in k},
               tmp_path / "b.pt")
    (tmp_path / "nets.py").write_text(TORCH_FACTORY)
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(tmp_path / "a.keras"), f"{tmp_path}/nets.py:build",
                             "--weights-b", str(tmp_path / "b.pt")])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output and "fc" in ok.output

    bad = runner.invoke(cli, ["verify", str(tmp_path / "a.keras"), f"{tmp_path}/nets.py:build",
                              "--arg-b", "eps=1e-5", "--weights-b", str(tmp_path / "b.pt"),
                              "--json"])
    assert bad.exit_code == 1, bad.output
    data = json.loads(bad.output)
    assert data["passed"] is False and data["first_divergence"]["layer_a"] == "bn1"
    assert data["diagnosis"]["cause"] == "batch_norm_epsilon"

    missing = runner.invoke(cli, ["verify", str(tmp_path / "a.keras"), "nowhere.py:build"])
    assert missing.exit_code == 2 and "nowhere.py" in missing.output


ODD_SIZE_NETS = Path(__file__).parent / "factories" / "odd_size_nets.py"


def test_cli_verify_two_torch_modules_needs_and_takes_an_input_shape(tmp_path) -> None:
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    a = f"{ODD_SIZE_NETS}:build"
    runner = CliRunner()
    unknown = runner.invoke(cli, ["verify", a, a])
    assert unknown.exit_code == 2
    assert "--input-shape" in " ".join(unknown.output.split())

    same = runner.invoke(cli, ["verify", a, a, "--input-shape", "3,20,20", "--json"])
    assert same.exit_code == 0, same.output
    assert json.loads(same.output)["input_shapes_b"] == [[2, 3, 20, 20]]

    # The same inputs given as a file also tell the shape.
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(3, 3, 20, 20))
            .astype("float32"))
    other = runner.invoke(cli, ["verify", a, a, "--arg-b", "seed=1", "--inputs",
                                str(tmp_path / "x.npy"), "--json"])
    assert other.exit_code == 1, other.output
    assert json.loads(other.output)["first_divergence"]["layer_a"] == "conv"

    bad = runner.invoke(cli, ["verify", a, a, "--input-shape", "3,x,20"])
    assert bad.exit_code == 2 and "is not a shape" in bad.output
