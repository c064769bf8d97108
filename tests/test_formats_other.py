"""safetensors, sharded indexes, NumPy and ONNX readers/writers, and the naming rules.

Every reader is compared with the format's own loader (``safetensors``, ``np.load``,
``onnx.numpy_helper``); naming rules are checked against the classes of real ``torch.nn`` and
Keras layers, which the rules never see.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from weightgraft import Checkpoint, Convention, Kind, Role, TensorEntry, open_checkpoint
from weightgraft.formats import numpy_format, safetensors_format, write_checkpoint
from weightgraft.naming import describe_entries

torch = pytest.importorskip("torch")
nn = torch.nn


# -- safetensors -------------------------------------------------------------------------
def test_safetensors_reader_equals_reference_loader(tmp_path: Path, rng) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
        "f64": rng.standard_normal(5),
        "f16": rng.standard_normal((2, 3)).astype("float16"),
        "i64": rng.integers(-2**40, 2**40, size=7),
        "i8": rng.integers(-128, 127, size=3).astype("int8"),
        "u8": rng.integers(0, 255, size=(2, 2)).astype("uint8"),
        "mask": rng.integers(0, 2, size=6).astype(bool),
        "empty": np.zeros((0, 4), "float32"),
        "scalar": np.array(2.5, "float32"),
    }
    path = tmp_path / "m.safetensors"
    save_file(arrays, str(path), metadata={"format": "pt", "note": "x"})
    ref = load_file(str(path))
    with open_checkpoint(path) as ck:
        assert ck.format == "safetensors" and ck.metadata == {"format": "pt", "note": "x"}
        assert ck.framework == "pytorch" and ck.convention is Convention.TORCH
        assert sorted(ck.keys()) == sorted(ref)
        for e in ck:
            got = e.load()
            assert got.dtype == ref[e.key].dtype and got.shape == ref[e.key].shape == e.shape
            np.testing.assert_array_equal(got, ref[e.key])
        assert ck["conv.weight"].kind is Kind.CONV2D and ck["conv.weight"].role is Role.KERNEL


def test_safetensors_bfloat16_from_torch_is_bit_exact(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(5, 3, generator=gen).to(torch.bfloat16),
               "h": torch.randn(4, generator=gen).to(torch.float16)}
    path = tmp_path / "bf.safetensors"
    save_file(tensors, str(path))
    ck = safetensors_format.read(path)
    assert ck["w"].dtype == "bfloat16"
    bits = tensors["w"].view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ck["w"].load(raw=True), bits)
    np.testing.assert_array_equal(ck["w"].load(), tensors["w"].float().numpy())

    out = tmp_path / "out.safetensors"
    safetensors_format.write(ck, out, metadata={"source": "bf.safetensors", "count": 2})
    back = load_file(str(out))
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["w"], tensors["w"])
    assert torch.equal(back["h"], tensors["h"])


def test_safetensors_writer_output_read_by_reference_with_metadata(tmp_path: Path, rng) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    arrays = {"a.weight": rng.standard_normal((3, 2)).astype("float32"),
              "a.bias": rng.standard_normal(3).astype("float64"),
              "idx": np.arange(5, dtype="int64")}
    ck = Checkpoint([TensorEntry.from_array(k, v) for k, v in arrays.items()], format="memory")
    out = tmp_path / "w.safetensors"
    write_checkpoint(ck, out, metadata={"tool": "weightgraft", "n": 3})
    ref = load_file(str(out))
    for key, value in arrays.items():
        assert ref[key].dtype == value.dtype
        np.testing.assert_array_equal(ref[key], value)
    with safe_open(str(out), "np") as fh:
        assert fh.metadata() == {"tool": "weightgraft", "n": "3"}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_safetensors_write_failure_leaves_no_file(tmp_path: Path) -> None:
    from weightgraft.errors import FormatError

    ck = Checkpoint([TensorEntry.from_array("c", np.zeros(2, "complex64"))], format="memory")
    with pytest.raises(FormatError, match="complex64"):
        safetensors_format.write(ck, tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_safetensors_read_touches_only_the_header(tmp_path: Path) -> None:
    # A 4 GiB tensor in a sparse file: reading must not allocate or read it.
    big = 2**30
    header = {"small": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "huge": {"dtype": "F32", "shape": [big], "data_offsets": [8, 8 + 4 * big]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw + np.array([1.5, -2], "<f4").tobytes())
        fh.truncate(8 + len(raw) + 8 + 4 * big)
    ck = open_checkpoint(path)
    assert ck["huge"].shape == (big,) and ck.nbytes == 8 + 4 * big
    np.testing.assert_array_equal(ck["small"].load(), [1.5, -2.0])


# -- sharded index -----------------------------------------------------------------------
def _two_shards(tmp_path: Path, save, ext: str) -> tuple[dict, Path]:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    split = keys.index("1.bias")  # the BatchNorm's tensors land in both shards
    names = [f"model-0000{i}-of-00002{ext}" for i in (1, 2)]
    parts = [dict(list(state.items())[:split]), dict(list(state.items())[split:])]
    weight_map = {}
    for name, part in zip(names, parts):
        save(part, tmp_path / name)
        weight_map.update({k: name for k in part})
    index = tmp_path / f"model{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return state, index


def test_sharded_safetensors_index_joins_both_shards(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state, index = _two_shards(tmp_path, lambda d, p: save_file(d, str(p)), ".safetensors")
    with open_checkpoint(index) as ck:
        assert ck.format == "safetensors-sharded"
        assert sorted(ck.keys()) == sorted(state)
        for e in ck:
            np.testing.assert_array_equal(e.load(), state[e.key].numpy())
        assert ck.metadata["weight_map"]["1.running_var"] == "model-00002-of-00002.safetensors"
        assert ck.metadata["weight_map"]["0.weight"] == "model-00001-of-00002.safetensors"
        # gamma sits in shard 1, running_var in shard 2: still one BatchNorm
        assert ck["1.weight"].kind is Kind.BATCH_NORM and ck["1.weight"].role is Role.GAMMA


def test_sharded_index_names_the_missing_shard_and_its_tensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from weightgraft.errors import FormatError

    _, index = _two_shards(tmp_path, lambda d, p: save_file(d, str(p)), ".safetensors")
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FormatError) as info:
        open_checkpoint(index)
    message = str(info.value)
    assert "model-00002-of-00002.safetensors" in message and "1.running_var" in message
    assert str(index) in message


def test_sharded_pytorch_bin_index(tmp_path: Path) -> None:
    pytest.importorskip("weightgraft.formats.torch_pickle")
    state, index = _two_shards(tmp_path, lambda d, p: torch.save(d, p), ".bin")
    assert index.name == "model.bin.index.json"
    with open_checkpoint(index) as ck:
        assert sorted(ck.keys()) == sorted(state)
        for e in ck:
            np.testing.assert_array_equal(e.load(), state[e.key].numpy())


# -- NumPy -------------------------------------------------------------------------------
def _npz_arrays(rng) -> dict[str, np.ndarray]:
    return {
        "conv1/kernel": rng.standard_normal((3, 3, 2, 4)).astype("float32"),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "half": rng.standard_normal(4).astype("float16"),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 2)),
        "scalar": np.array(7, "int16"),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
def test_npz_reader_equals_np_load(tmp_path: Path, rng, save) -> None:
    arrays = _npz_arrays(rng)
    path = tmp_path / "w.npz"
    save(path, **arrays)
    with np.load(path, allow_pickle=False) as ref, open_checkpoint(path) as ck:
        assert ck.format == "numpy" and sorted(ck.keys()) == sorted(ref.files)
        for e in ck:
            got, want = e.load(), ref[e.key]
            assert got.shape == want.shape == e.shape
            assert got.dtype == want.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, want)
        assert ck["conv1/kernel"].kind is Kind.CONV2D
        assert ck["conv1/kernel"].convention is Convention.KERAS


def test_npy_reader_equals_np_load(tmp_path: Path, rng) -> None:
    arr = np.asfortranarray(rng.standard_normal((4, 6)).astype(">f8"))
    path = tmp_path / "x.npy"
    np.save(path, arr)
    ck = open_checkpoint(path)
    assert ck.keys() == ["x"]
    np.testing.assert_array_equal(ck["x"].load(), np.load(path))


@pytest.mark.corpus
def test_npy_corpus_file_equals_np_load(corpus: Path) -> None:
    path = corpus / "crepe-tiny" / "frames-crepe.npy"
    ck = open_checkpoint(path)
    entry = ck[path.stem]
    want = np.load(path, mmap_mode="r")
    assert entry.shape == want.shape == (1001, 1024)
    np.testing.assert_array_equal(entry.load(), want)


def test_npz_writer_round_trip_with_bfloat16(tmp_path: Path, rng) -> None:
    arrays = _npz_arrays(rng)
    bits = rng.integers(0, 2**16, size=(2, 3)).astype("uint16")
    entries = [TensorEntry.from_array(k, v) for k, v in arrays.items()]
    entries.append(TensorEntry("bf", (2, 3), "bfloat16", lambda: bits))
    out = tmp_path / "out.npz"
    numpy_format.write(Checkpoint(entries, format="memory"), out, metadata={"source": "t"})
    with np.load(out, allow_pickle=False) as ref:
        for key, value in arrays.items():
            np.testing.assert_array_equal(ref[key], value)
        np.testing.assert_array_equal(ref["bf"], bits)  # stored as its uint16 bits
    back = numpy_format.read(out)
    assert back["bf"].dtype == "bfloat16" and back.metadata["source"] == "t"
    np.testing.assert_array_equal(back["bf"].load(raw=True), bits)


# -- ONNX --------------------------------------------------------------------------------
@pytest.fixture
def onnx():  # noqa: ANN201 - the module
    return pytest.importorskip("onnx")


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _export(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = _Tiny().train()
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # TorchScript exporter: works offline without onnxscript; BN kept in training mode
            torch.onnx.export(model, (torch.randn(1, 3, 6, 6),), str(path), dynamo=False,
                              training=torch.onnx.TrainingMode.TRAINING,
                              do_constant_folding=False)
        except Exception as exc:  # pragma: no cover - depends on the torch build
            pytest.skip(f"torch.onnx.export unavailable here: {exc}")
    return model, path


def _reference(onnx, path: Path) -> dict[str, np.ndarray]:  # noqa: ANN001
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_onnx_initializers_equal_numpy_helper(tmp_path: Path, external: bool, onnx) -> None:
    model, path = _export(tmp_path)
    if external:
        proto = onnx.load(str(path))
        path = tmp_path / "ext.onnx"
        onnx.save_model(proto, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="ext.onnx.data",
                        size_threshold=0)
        assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    ref = _reference(onnx, path)
    with open_checkpoint(path) as ck:
        assert ck.format == "onnx" and ck.framework == "pytorch"
        assert sorted(ck.keys()) == sorted(ref)
        for e in ck:
            np.testing.assert_array_equal(e.load(), ref[e.key])
        # The exported Conv weight is the module's own (out, in, kh, kw) tensor: torch layout.
        conv = ck["conv.weight"]
        assert (conv.kind, conv.role, conv.convention) == (Kind.CONV2D, Role.KERNEL,
                                                           Convention.TORCH)
        np.testing.assert_array_equal(conv.load(), model.conv.weight.detach().numpy())
        assert ck["fc.weight"].kind is Kind.DENSE and ck["fc.weight"].convention is Convention.TORCH
        np.testing.assert_array_equal(ck["fc.weight"].load(), model.fc.weight.detach().numpy())
        assert ck["bn.running_var"].role is Role.MOVING_VARIANCE
        assert ck["bn.weight"].role is Role.GAMMA


def test_onnx_graph_ops_give_kinds_and_bfloat16_bits(tmp_path: Path, rng, onnx) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = rng.standard_normal((6, 4)).astype("float32")  # MatMul: (in, out)
    b = rng.standard_normal(4).astype("float32")
    table = rng.standard_normal((10, 6)).astype("float32")
    gamma = rng.standard_normal(4).astype("float32")
    lstm_w = rng.standard_normal((1, 12, 4)).astype("float32")
    lstm_r = rng.standard_normal((1, 12, 3)).astype("float32")
    bf = helper.make_tensor("bf", TensorProto.BFLOAT16, [2], [1.0, -2.5])
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w, "w"), (b, "b"), (table, "table"), (gamma, "gamma"), (lstm_w, "lw"),
              (lstm_r, "lr")]] + [bf]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"]),
        helper.make_node("MatMul", ["e", "w"], ["m"], name="proj"),
        helper.make_node("Add", ["m", "b"], ["y"]),
        helper.make_node("LayerNormalization", ["y", "gamma"], ["z"], axis=-1),
        helper.make_node("LSTM", ["z", "lw", "lr"], ["o"], hidden_size=3),
        helper.make_node("Cast", ["bf"], ["bf32"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 2])],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("bf32", TensorProto.FLOAT, None)], initializer=inits)
    path = tmp_path / "g.onnx"
    onnx.save_model(helper.make_model(graph, producer_name="handmade"), str(path))
    ck = open_checkpoint(path)
    described = {e.key: (e.kind, e.role) for e in ck}
    assert described["w"] == (Kind.DENSE, Role.KERNEL) and ck["w"].convention is Convention.KERAS
    assert described["b"] == (Kind.DENSE, Role.BIAS) and ck["b"].layer == ck["w"].layer
    assert described["table"] == (Kind.EMBEDDING, Role.EMBEDDINGS)
    assert described["gamma"] == (Kind.LAYER_NORM, Role.GAMMA)
    assert described["lw"] == (Kind.LSTM, Role.KERNEL)
    assert described["lr"] == (Kind.LSTM, Role.RECURRENT_KERNEL)
    assert ck["lw"].convention is Convention.UNKNOWN  # ONNX gate order is neither framework's
    assert ck["bf"].dtype == "bfloat16"
    np.testing.assert_array_equal(ck["bf"].load(), [1.0, -2.5])
    np.testing.assert_array_equal(ck["w"].load(), w)


# -- naming rules ------------------------------------------------------------------------
class _Block(nn.Module):
    """A ResNet basic block with a downsample branch, as torchvision names it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.downsample = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8))


class _Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.PReLU())
        self.layer1 = nn.Sequential(_Block())
        self.conv1d = nn.Conv1d(4, 4, 3)
        self.conv3d = nn.Conv3d(2, 2, 1)
        self.tok_embeddings = nn.Embedding(20, 8)
        self.wte = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 5, num_layers=2, bidirectional=True)
        self.gru = nn.GRU(8, 6)
        self.rnn = nn.RNN(8, 7)
        self.attn = nn.MultiheadAttention(8, 2)
        self.ln_f = nn.LayerNorm(8)
        self.layer_norm = nn.LayerNorm(8)
        self.act = nn.PReLU(8)
        self.classifier = nn.Linear(8, 3)
        self.deconv = nn.ConvTranspose2d(4, 2, 2)


_EXPECTED_KIND = {
    nn.Conv1d: Kind.CONV1D, nn.Conv2d: Kind.CONV2D, nn.Conv3d: Kind.CONV3D,
    nn.ConvTranspose2d: Kind.CONV2D_TRANSPOSE, nn.BatchNorm2d: Kind.BATCH_NORM,
    nn.LayerNorm: Kind.LAYER_NORM, nn.Embedding: Kind.EMBEDDING, nn.LSTM: Kind.LSTM,
    nn.GRU: Kind.GRU, nn.RNN: Kind.SIMPLE_RNN, nn.MultiheadAttention: Kind.MULTI_HEAD_ATTENTION,
    nn.PReLU: Kind.PRELU, nn.Linear: Kind.DENSE,
}
_EXPECTED_ROLE = {
    (Kind.BATCH_NORM, "weight"): Role.GAMMA, (Kind.BATCH_NORM, "bias"): Role.BETA,
    (Kind.BATCH_NORM, "running_mean"): Role.MOVING_MEAN,
    (Kind.BATCH_NORM, "running_var"): Role.MOVING_VARIANCE,
    (Kind.BATCH_NORM, "num_batches_tracked"): Role.NUM_BATCHES_TRACKED,
    (Kind.LAYER_NORM, "weight"): Role.GAMMA, (Kind.LAYER_NORM, "bias"): Role.BETA,
    (Kind.EMBEDDING, "weight"): Role.EMBEDDINGS, (Kind.PRELU, "weight"): Role.ALPHA,
    (Kind.MULTI_HEAD_ATTENTION, "in_proj_weight"): Role.IN_PROJ_KERNEL,
    (Kind.MULTI_HEAD_ATTENTION, "in_proj_bias"): Role.IN_PROJ_BIAS,
    (Kind.MULTI_HEAD_ATTENTION, "out_proj.weight"): Role.OUTPUT_KERNEL,
    (Kind.MULTI_HEAD_ATTENTION, "out_proj.bias"): Role.OUTPUT_BIAS,
}


def _owner(model: nn.Module, key: str) -> tuple[str, nn.Module, str]:
    """The module that owns a state-dict key, found through torch's own module tree."""
    modules = dict(model.named_modules())
    path, _, leaf = key.rpartition(".")
    if isinstance(modules.get(path.rpartition(".")[0]), nn.MultiheadAttention):
        parent, _, child = path.rpartition(".")
        return parent, modules[parent], f"{child}.{leaf}"
    return path, modules[path], leaf


def test_naming_rules_match_real_torch_modules() -> None:
    model = _Zoo()
    state = model.state_dict()
    entries = [TensorEntry.from_array(k, v.numpy()) for k, v in state.items()]
    described = describe_entries(entries, Convention.TORCH)
    assert [e.key for e in described] == list(state)  # order kept
    for e in described:
        layer, module, leaf = _owner(model, e.key)
        kind = _EXPECTED_KIND[type(module)]
        assert (e.layer, e.kind) == (layer, kind), e.key
        if kind in (Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN):
            base, _, suffix = leaf.partition("_l")
            role = {"weight_ih": Role.KERNEL, "weight_hh": Role.RECURRENT_KERNEL,
                    "bias_ih": Role.BIAS, "bias_hh": Role.RECURRENT_BIAS}[base]
            assert e.role is role and e.part == (None if suffix == "0" else f"l{suffix}"), e.key
        else:
            default = {"weight": Role.KERNEL, "bias": Role.BIAS}.get(leaf)
            assert e.role is _EXPECTED_ROLE.get((kind, leaf), default), e.key
        assert e.convention is Convention.TORCH


def test_naming_leaves_unknowns_unknown() -> None:
    arrays = {"pos_embed": np.zeros((1, 5, 8)), "blocks.0.gamma": np.zeros(8),
              "head.scale": np.zeros(3), "norm_free.weight": np.zeros((2, 2, 2, 2, 2, 2))}
    out = describe_entries([TensorEntry.from_array(k, v) for k, v in arrays.items()])
    assert all(e.kind is Kind.OTHER and e.role is Role.OTHER for e in out)
    assert [e.layer for e in out] == ["", "blocks.0", "head", "norm_free"]
    assert all(e.convention is Convention.UNKNOWN for e in out)


def test_naming_keeps_what_a_reader_already_described() -> None:
    e = TensorEntry.from_array("x.weight", np.zeros((2, 2)), layer="x", kind=Kind.EMBEDDING,
                               role=Role.EMBEDDINGS)
    assert describe_entries([e], Convention.TORCH) == [e]


def test_naming_rules_match_real_keras_layers() -> None:
    keras = pytest.importorskip("keras")
    layers = keras.layers
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.SeparableConv2D(4, 1, name="sep")(x)
    x = layers.Reshape((4, 4))(x)
    x = layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = layers.GRU(3, return_sequences=True, name="gru")(x)
    x = layers.SimpleRNN(2, name="rnn")(x)
    x = layers.LayerNormalization(name="layer_normalization")(x)
    x = layers.PReLU(name="p_re_lu")(x)
    outputs = layers.Dense(3, name="dense_1")(x)
    model = keras.Model(inputs, outputs)
    expected_kind = {"Conv2D": Kind.CONV2D, "BatchNormalization": Kind.BATCH_NORM,
                     "DepthwiseConv2D": Kind.DEPTHWISE_CONV2D,
                     "SeparableConv2D": Kind.SEPARABLE_CONV2D, "LSTM": Kind.LSTM,
                     "GRU": Kind.GRU, "SimpleRNN": Kind.SIMPLE_RNN,
                     "LayerNormalization": Kind.LAYER_NORM, "PReLU": Kind.PRELU,
                     "Dense": Kind.DENSE}
    # Keras 2 h5 style keys: "<layer>/<variable>:0", roles are the variable names.
    entries, truth = [], {}
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}/{v.name}:0"
            entries.append(TensorEntry.from_array(key, np.zeros(v.shape, "float32")))
            kind = expected_kind[type(layer).__name__]
            # Keras 3 calls the depthwise weight "kernel"; its role is the depthwise kernel.
            role = Role.DEPTHWISE_KERNEL if kind is Kind.DEPTHWISE_CONV2D and v.name == "kernel" \
                else Role(v.name)
            truth[key] = (layer.name, kind, role)
    for e in describe_entries(entries):
        assert (e.layer, e.kind, e.role) == truth[e.key], e.key
        assert e.convention is Convention.KERAS


def test_naming_keras3_vars_paths() -> None:
    shapes = {"layers/dense/vars/0": (4, 2), "layers/dense/vars/1": (2,),
              "layers/batch_normalization/vars/0": (3,), "layers/batch_normalization/vars/1": (3,),
              "layers/batch_normalization/vars/2": (3,), "layers/batch_normalization/vars/3": (3,),
              "layers/lstm/cell/vars/0": (3, 8), "layers/lstm/cell/vars/1": (2, 8),
              "layers/lstm/cell/vars/2": (8,), "layers/custom/vars/0": (3,)}
    out = {e.key: (e.layer, e.kind, e.role) for e in describe_entries(
        [TensorEntry.from_array(k, np.zeros(s)) for k, s in shapes.items()])}
    assert out["layers/dense/vars/0"] == ("layers/dense", Kind.DENSE, Role.KERNEL)
    assert out["layers/batch_normalization/vars/3"][1:] == (Kind.BATCH_NORM, Role.MOVING_VARIANCE)
    assert out["layers/lstm/cell/vars/1"][1:] == (Kind.LSTM, Role.RECURRENT_KERNEL)
    assert out["layers/custom/vars/0"][1:] == (Kind.OTHER, Role.OTHER)

