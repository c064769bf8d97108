"""``weightgraft.inspect``: counts, formulas, grouping, and never touching tensor bytes."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from weightgraft import Checkpoint, Convention, Group, Kind, LayerInfo, Role, TensorEntry
from weightgraft.inspection import formula, inspect


def _exploding(key: str, shape: tuple[int, ...], dtype: str = "float32", **fields) -> TensorEntry:
    def loader() -> np.ndarray:
        raise AssertionError(f"inspect loaded the bytes of {key}")

    return TensorEntry(key, shape, dtype, loader, **fields)


def _conv_checkpoint() -> Checkpoint:
    # A Keras-2-like full model: two convs, a BN with frozen statistics, a dense, an optimizer.
    entries = [
        _exploding("conv1/kernel:0", (3, 3, 3, 64), layer="conv1", kind="conv2d", role="kernel",
                   trainable=True, convention="keras"),
        _exploding("conv1/bias:0", (64,), layer="conv1", kind="conv2d", role="bias",
                   trainable=True, convention="keras"),
        _exploding("conv2/kernel:0", (3, 3, 64, 128), layer="conv2", kind="conv2d",
                   role="kernel", trainable=True, convention="keras"),
        _exploding("conv2/bias:0", (128,), layer="conv2", kind="conv2d", role="bias",
                   trainable=True, convention="keras"),
        _exploding("bn/gamma:0", (128,), layer="bn", kind="batch_norm", role="gamma",
                   trainable=True),
        _exploding("bn/beta:0", (128,), layer="bn", kind="batch_norm", role="beta",
                   trainable=True),
        _exploding("bn/moving_mean:0", (128,), layer="bn", kind="batch_norm",
                   role="moving_mean", trainable=False),
        _exploding("bn/moving_variance:0", (128,), layer="bn", kind="batch_norm",
                   role="moving_variance", trainable=False),
        _exploding("fc/kernel:0", (128, 10), "float16", layer="fc", kind="dense", role="kernel",
                   trainable=True),
        _exploding("fc/bias:0", (10,), "float16", layer="fc", kind="dense", role="bias",
                   trainable=True),
        _exploding("optimizer_weights/Adam/iterations:0", (), "int64", group=Group.OPTIMIZER),
        _exploding("optimizer_weights/Adam/conv1/kernel/m:0", (3, 3, 3, 64),
                   group=Group.OPTIMIZER),
    ]
    layers = [LayerInfo("conv1", "Conv2D", Kind.CONV2D), LayerInfo("conv2", "Conv2D", Kind.CONV2D),
              LayerInfo("bn", "BatchNormalization", Kind.BATCH_NORM),
              LayerInfo("flatten", "Flatten"), LayerInfo("fc", "Dense", Kind.DENSE)]
    return Checkpoint(entries, format="keras-h5", path="model.h5", framework="keras",
                      framework_version="2.1.3", backend="tensorflow",
                      data_format="channels_last", convention=Convention.KERAS,
                      convention_reason="backend tensorflow", layers=layers,
                      extras={"epoch": 3, "training_config": {"loss": "mse"}})


def test_formula_matches_the_issue_example_and_numpy() -> None:
    assert formula([(3, 3, 64, 128), (128,)]) == "3x3x64x128 + 128 = 73,856"
    assert 3 * 3 * 64 * 128 + 128 == 73_856
    assert formula([(4096,)]) == "4,096"
    assert formula([(4, 5)]) == "4x5 = 20"
    assert formula([()]) == "1"  # a scalar counts one value


def test_inspect_never_loads_tensor_bytes() -> None:
    ins = inspect(_conv_checkpoint())  # every loader raises: reaching one fails the test
    assert len(ins.tensors) == 10


def test_layers_follow_the_file_order_and_keep_weightless_layers() -> None:
    ins = inspect(_conv_checkpoint())
    assert [layer.name for layer in ins.layers] == ["conv1", "conv2", "bn", "flatten", "fc"]
    conv2 = ins.layers[1]
    assert conv2.formula == "3x3x64x128 + 128 = 73,856"
    assert conv2.params == math.prod((3, 3, 64, 128)) + 128
    assert conv2.class_name == "Conv2D" and conv2.kind == "conv2d"
    assert ins.layers[3].tensors == () and ins.layers[3].params == 0
    assert [t.role for t in ins.layers[2].tensors] == [
        "gamma", "beta", "moving_mean", "moving_variance"]


def test_totals_split_trainable_and_keep_optimizer_apart() -> None:
    ins = inspect(_conv_checkpoint())
    sizes = {"conv1": 3 * 3 * 3 * 64 + 64, "conv2": 73_856, "bn": 4 * 128, "fc": 128 * 10 + 10}
    assert ins.totals.total == sum(sizes.values()) == ins.total_params
    assert ins.totals.non_trainable == 2 * 128
    assert ins.totals.trainable == sum(sizes.values()) - 256
    assert ins.totals.unknown == 0
    assert ins.totals.nbytes == (sum(sizes.values()) - 1290) * 4 + 1290 * 2
    assert ins.optimizer is not None
    assert ins.optimizer.tensors == 2 and ins.optimizer.params == 1 + 3 * 3 * 3 * 64
    assert ins.extras == {"epoch": 3, "training_config": {"loss": "mse"}}
    h = ins.header
    assert (h.format, h.framework_version, h.backend, h.convention) == (
        "keras-h5", "2.1.3", "tensorflow", "keras")
    assert not h.theano_era


def test_filter_keeps_matching_layers_and_keys() -> None:
    ck = _conv_checkpoint()
    by_layer = inspect(ck, filter="conv*")
    assert [layer.name for layer in by_layer.layers] == ["conv1", "conv2"]
    assert by_layer.totals.total == 3 * 3 * 3 * 64 + 64 + 73_856
    biases = inspect(ck, filter="*bias*")
    assert [t.key for t in biases.tensors] == ["conv1/bias:0", "conv2/bias:0", "fc/bias:0"]
    assert biases.filter == "*bias*" and biases.tensors_in_source == 12


def test_theano_convention_gets_a_warning_even_without_a_reader_note() -> None:
    e = _exploding("convolution2d_1_W", (32, 1, 3, 3), layer="convolution2d_1",
                   kind=Kind.CONV2D, role=Role.KERNEL, convention=Convention.THEANO)
    ins = inspect(Checkpoint([e], format="keras-h5", data_format="th",
                             convention=Convention.THEANO))
    assert ins.header.theano_era
    assert "Theano-era" in ins.header.notes[0] and "flipped" in ins.header.notes[0]
    from rich.console import Console

    from weightgraft.report.inspect_view import render

    console = Console(width=80, record=True)
    render(ins, console)
    first = " ".join(console.export_text().splitlines()[:2])
    assert "Theano-era" in first and "dim ordering 'th'" in first and "out, in, rows, cols" in first


def test_entries_without_layers_still_count() -> None:
    ck = Checkpoint([TensorEntry.from_array("w", np.zeros((2, 3))),
                     TensorEntry.from_array("b", np.zeros(3))], format="memory")
    ins = inspect(ck)
    assert ins.totals.total == 9 and ins.totals.unknown == 9 and ins.totals.trainable == 0


# -- live models -------------------------------------------------------------------------

def _adapter(name: str) -> None:
    if importlib.util.find_spec(f"weightgraft.frameworks.{name}") is None:
        pytest.skip(f"weightgraft.frameworks.{name} (the {name} ModelView adapter) is not there yet")


@pytest.mark.torch
def test_torch_model_totals_match_torch_and_tied_weights_count_once() -> None:
    torch = pytest.importorskip("torch")
    _adapter("torch")

    class TiedLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(50, 8)
            self.norm = torch.nn.BatchNorm1d(8)
            self.head = torch.nn.Linear(8, 50, bias=False)
            self.head.weight = self.embed.weight  # tied

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.head(self.norm(self.embed(x).mean(1)))

    model = TiedLM().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ins = inspect(model)
    own_params = sum(p.numel() for p in model.parameters())  # torch dedupes tied parameters
    buffers = sum(b.numel() for b in model.buffers())
    assert ins.totals.parameters == own_params == 50 * 8 + 16
    assert ins.totals.total == own_params + buffers
    assert ins.totals.buffers == buffers
    assert ins.model is not None and ins.model.layer_objects >= 3
    # the tie is visible where the second name is used, not only in the totals
    (head,) = [layer for layer in ins.layers if layer.name == "head"]
    assert [(t.key, t.shared, t.aliases) for t in head.tensors] == [
        ("head.weight", True, ("embed.weight",))]
    assert head.params == 0 and head.formula == "tied 50x8 = 400"
    assert ins.totals.shared_tensors == 1
    # inspection leaves the model as it found it
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.keras
def test_keras_model_totals_match_count_params_with_output_shapes() -> None:
    from weightgraft.frameworks import import_keras

    keras = import_keras()
    _adapter("keras")
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(5, name="fc"),
    ])
    ins = inspect(model)
    assert ins.totals.total == model.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert ins.totals.trainable == trainable
    assert ins.totals.non_trainable == model.count_params() - trainable
    layers = {layer.name.rsplit("/", 1)[-1]: layer for layer in ins.layers}
    assert layers["conv"].formula == "3x3x3x4 + 4 = 112"
    assert tuple(layers["fc"].output_shapes[0])[-1] == 5
    assert ins.header.backend == keras.backend.backend()
    assert ins.model is not None and ins.model.weighted_depth in (None, 2)


@pytest.mark.keras
@pytest.mark.slow
def test_resnet50_depth_is_50_and_totals_match_keras() -> None:
    from weightgraft.frameworks import import_keras

    keras = import_keras()
    _adapter("keras")
    if importlib.util.find_spec("weightgraft.frameworks.shared") is None:
        pytest.skip("weightgraft.frameworks.shared (weighted_depth) is not there yet")
    model = keras.applications.ResNet50(weights=None)
    ins = inspect(model)
    assert ins.model is not None and ins.model.weighted_depth == 50
    assert ins.totals.total == model.count_params()


@pytest.mark.torch
def test_tied_weights_in_a_torch_file_count_once(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("weightgraft.formats.torch_pickle") is None:
        pytest.skip("weightgraft.formats.torch_pickle is not there yet")
    embed = torch.nn.Embedding(30, 6)
    head = torch.nn.Linear(6, 30, bias=False)
    head.weight = embed.weight  # tied: torch.save stores the storage once
    model = torch.nn.ModuleDict({"embed": embed, "head": head})
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    ins = inspect(tmp_path / "tied.pt")
    assert ins.totals.total == sum(p.numel() for p in model.parameters()) == 30 * 6
    assert ins.totals.shared_tensors == 1
    tied = [t for t in ins.tensors if t.shared]
    assert [t.key for t in tied] == ["head.weight"] and tied[0].aliases == ("embed.weight",)


@pytest.mark.torch
def test_training_checkpoint_keeps_optimizer_state_and_extras_apart(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("weightgraft.formats.torch_pickle") is None:
        pytest.skip("weightgraft.formats.torch_pickle is not there yet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 5)).sum().backward()
    opt.step()
    torch.save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
               tmp_path / "train.pt")
    ins = inspect(tmp_path / "train.pt")
    own = sum(p.numel() for p in model.parameters())
    assert ins.totals.total == own == 5 * 4 + 4 + 4 * 2 + 2
    assert ins.optimizer is not None
    # Adam keeps exp_avg and exp_avg_sq per parameter (plus a step counter each)
    assert ins.optimizer.params >= 2 * own
    assert any("epoch" in k for k in ins.extras)


# -- tensor order inside a layer -----------------------------------------------------------

def _h5_weight_names(path) -> dict[str, list[str]]:
    """Each layer's ``weight_names`` attribute, read with h5py alone (the reference)."""
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        return {_text(n): [_text(w) for w in root[_text(n)].attrs["weight_names"]]
                for n in root.attrs["layer_names"]}


def _text(value) -> str:  # noqa: ANN001
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("name", [
    "lstm_theano_1.h5",                # Keras 1 gates W_i U_i b_i, W_c ..., not c, f, i, o
    "bidirectional_lstm_theano_1.h5",  # forward before backward
    "sepconv2d_tensorflow_2.h5",       # depthwise, pointwise, then bias
])
def test_tensors_were_sorted_by_role_instead_of_the_files_weight_names_order(
        corpus, name: str) -> None:
    path = corpus / "legacy-keras-layers" / name
    expected = _h5_weight_names(path)
    ins = inspect(path)
    got = {layer.name: [t.key.split("/", 1)[1] for t in layer.tensors]
           for layer in ins.layers if layer.tensors}
    assert got == {k: v for k, v in expected.items() if v}
    # the flat --tensors list is the same walk
    assert [t.key.split("/", 1)[1] for t in ins.tensors] == [
        w for names in expected.values() for w in names]


def test_a_state_dicts_order_is_kept_but_safetensors_keys_are_sorted_by_role(tmp_path) -> None:
    from safetensors.numpy import save_file

    from weightgraft.formats import write_checkpoint

    # a layer whose own order is bias before weight (a state dict keeps insertion order)
    arrays = {"fc.bias": np.zeros(2, "float32"), "fc.weight": np.zeros((2, 3), "float32")}
    ck = Checkpoint([TensorEntry.from_array(k, a, layer="fc", kind=Kind.DENSE,
                                            role=Role.BIAS if k.endswith("bias") else Role.KERNEL)
                     for k, a in arrays.items()], format="memory")
    assert [t.key for t in inspect(ck).tensors] == list(arrays)
    # safetensors stores keys alphabetically: no order to keep, so kernel first by role
    save_file(arrays, str(tmp_path / "fc.safetensors"), metadata={"format": "pt"})
    assert [t.key for t in inspect(tmp_path / "fc.safetensors").tensors] == [
        "fc.weight", "fc.bias"]
    if importlib.util.find_spec("torch") is None:
        return
    write_checkpoint(ck, tmp_path / "fc.pt")  # a torch zip keeps the dict's own order
    assert [t.key for t in inspect(tmp_path / "fc.pt").tensors] == list(arrays)


# -- buffers in files ----------------------------------------------------------------------

@pytest.mark.torch
def test_a_torch_files_batchnorm_statistics_were_counted_as_parameters(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    torch.save(model.state_dict(), tmp_path / "bn.pt")
    file = inspect(tmp_path / "bn.pt").totals
    live = inspect(model).totals
    # torch's own account: parameters() and buffers() (running stats, num_batches_tracked)
    own = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert (file.parameters, file.buffers, file.total) == (own, buffers, own + buffers)
    assert (file.parameters, file.buffers, file.total) == (
        live.parameters, live.buffers, live.total)


def test_crepe_tiny_counts_the_same_parameters_in_its_pth_and_its_h5(corpus) -> None:
    import h5py

    pth = inspect(corpus / "crepe-tiny" / "tiny.pth").totals
    h5 = inspect(corpus / "crepe-tiny" / "model-tiny.h5").totals
    stats = {}  # the h5's BatchNorm statistics, read with h5py alone
    with h5py.File(corpus / "crepe-tiny" / "model-tiny.h5", "r") as f:
        f.visititems(lambda name, obj: stats.__setitem__(name, obj.size)
                     if isinstance(obj, h5py.Dataset) and "moving_" in name else None)
    assert len(stats) == 12  # six BatchNorms, mean and variance each
    assert h5.buffers == sum(stats.values())
    assert pth.buffers == h5.buffers + 6  # plus one num_batches_tracked scalar per BatchNorm
    assert pth.parameters == h5.parameters == h5.total - h5.buffers
    assert (pth.total, h5.total) == (487_102, 487_096)
