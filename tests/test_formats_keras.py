"""Keras 1/2/3 readers against real files: the shared corpus and files real Keras 3 writes.

References are independent of the readers: h5py reading the same dataset path, the corpus
README's stored answers (np.arange values, MNIST accuracies measured outside the project),
and Keras 3's own ``model.weights`` / ``optimizer.variables`` / ``load_weights``.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from weightgraft.checkpoint import Convention, Group, Kind, Role
from weightgraft.errors import FormatError
from weightgraft.formats import detect, keras3_h5, keras3_zip, keras_legacy_h5

ROOT = Path(__file__).resolve().parents[1]
_CORPUS = Path(os.environ.get("WEIGHTGRAFT_CORPUS", ROOT.parent / "shared" / "corpus"))


def _corpus_files() -> list[str]:
    if not _CORPUS.is_dir():
        return ["<corpus absent>"]
    found = [*sorted((_CORPUS / "keras1-mnist-cnn").glob("*.h5")),
             *sorted((_CORPUS / "legacy-keras-layers").glob("*.h5")),
             _CORPUS / "crepe-tiny" / "model-tiny.h5",
             *sorted((_CORPUS / "keras3-nested").glob("*.keras"))]
    return [str(p.relative_to(_CORPUS)) for p in found]


def _reader(path: Path):
    """The module the registry dispatches to, sniffing content like ``open_checkpoint``."""
    return detect(path)


# -- the corpus ---------------------------------------------------------------------------------
@pytest.mark.corpus
@pytest.mark.parametrize("name", _corpus_files())
def test_every_corpus_keras_file_reads_and_loads_what_h5py_reads(corpus: Path, name: str) -> None:
    path = corpus / name
    with _reader(path).read(path) as ck:
        assert len(ck) > 0 or ck.layers  # space_to_depth files: layers without weights
        if path.suffix == ".keras":
            raw = io.BytesIO(zipfile.ZipFile(path).read("model.weights.h5"))
            ref_file, prefix = h5py.File(raw, "r"), ""
        else:
            ref_file = h5py.File(path, "r")
            prefix = "model_weights/" if "model_weights" in ref_file else ""
        with ref_file:
            for e in ck:
                array = e.load()
                assert array.shape == e.shape and array.dtype.name == e.dtype
                ds_path = e.key if e.group is not Group.MODEL or not prefix else prefix + e.key
                np.testing.assert_array_equal(array, ref_file[ds_path][()])
        if ck.format != "hdf5":
            assert ck.framework == "keras" and ck.convention_reason
            assert all(e.kind is not Kind.OTHER for e in ck.model_entries()), \
                [e.key for e in ck.model_entries() if e.kind is Kind.OTHER]
            assert all(e.role is not Role.OTHER for e in ck.model_entries())


@pytest.mark.keras
def test_legacy_h5_reader_equals_keras_own_legacy_loader(tmp_path: Path) -> None:
    """Differential: a full-model legacy .h5 written by Keras 3 itself (model.save('x.h5')),
    read by us without Keras, against keras.models.load_model of the same file."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(4)
    model = keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 2, name="c"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.Flatten(),
        keras.layers.Dense(4, name="d")])
    model.set_weights([rng.standard_normal(w.shape).astype("float32")
                       for w in model.get_weights()])
    path = tmp_path / "legacy.h5"
    model.save(path)
    reference = keras.models.load_model(path, compile=False).get_weights()
    with keras_legacy_h5.read(path) as ck:
        entries = ck.model_entries()
        assert len(entries) == len(reference)
        for entry, want in zip(entries, reference):  # get_weights() order: file order
            np.testing.assert_array_equal(entry.load(), want)
        assert [e.role for e in entries] == [Role.KERNEL, Role.BIAS, Role.GAMMA, Role.BETA,
                                             Role.MOVING_MEAN, Role.MOVING_VARIANCE,
                                             Role.KERNEL, Role.BIAS]


@pytest.mark.corpus
@pytest.mark.keras
def test_keras2_corpus_file_equals_keras_load_weights(corpus: Path) -> None:
    """Differential on a file Keras 2.1.3 wrote: Keras 3's own legacy load_weights into the
    same layer fills exactly the arrays our reader returns."""
    keras = pytest.importorskip("keras")
    path = corpus / "legacy-keras-layers" / "conv2d_tensorflow_2.h5"
    model = keras.Sequential([keras.Input((5, 5, 5)), keras.layers.Conv2D(6, 3, name="conv2d_1")])
    model.load_weights(path)
    with keras_legacy_h5.read(path) as ck:
        ours = [e.load() for e in ck.model_entries()]
    theirs = model.get_weights()
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(theirs[0].ravel(), np.arange(270))  # the README's arange


@pytest.mark.corpus
def test_theano_mnist_is_reported_theano_era_with_th_ordering(corpus: Path) -> None:
    path = corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5"
    with keras_legacy_h5.read(path) as ck:
        assert ck.convention is Convention.THEANO
        assert ck.framework_version == "1" and ck.backend == "theano"
        assert "':0'" in ck.convention_reason and "'th'" in ck.convention_reason
        assert ck.metadata["dim_ordering"] == "th" and ck.data_format == "channels_first"
        assert ck.notes and ck.notes[0].startswith("Theano-era")
        kernel = ck["convolution2d_1/convolution2d_1_W"]
        assert kernel.shape == (32, 1, 3, 3)
        assert (kernel.kind, kernel.role, kernel.convention) == (
            Kind.CONV2D, Role.KERNEL, Convention.THEANO)
        conv = next(li for li in ck.layers if li.name == "convolution2d_1")
        assert conv.config["dim_ordering"] == "th" and conv.config["kernel_layout"] == "oihw"
        assert conv.config["flipped"] is True
        assert ck["dense_1/dense_1_W"].convention is Convention.KERAS


@pytest.mark.corpus
def test_tensorflow_mnist_is_keras_convention(corpus: Path) -> None:
    path = corpus / "keras1-mnist-cnn" / "mnist_cnn_tf_keras_1_weights.h5"
    with keras_legacy_h5.read(path) as ck:
        assert ck.convention is Convention.KERAS and not ck.notes
        assert ck["convolution2d_1/convolution2d_1_W:0"].shape == (3, 3, 1, 32)
        assert ck.metadata["dim_ordering"] == "tf"


def _mnist_accuracy(ck, digits: Path, *, flip: bool, channels_first: bool) -> int:
    """A numpy forward pass of the corpus MNIST net, reading layouts from the reader's flags."""
    with h5py.File(digits, "r") as f:
        x = f["inputs/dense_input_1"][()].reshape(100, 28, 28, 1)
        labels = f["outputs/activation_2"][()].argmax(1)
    by_layer = {li.name: li for li in ck.layers}

    def conv(h: np.ndarray, name: str) -> np.ndarray:
        info = by_layer[name]
        w = ck[info.keys[0]].load()
        if info.config["kernel_layout"] == "oihw":
            w = w.transpose(2, 3, 1, 0)  # -> (rows, cols, in, out)
        if flip and info.config["flipped"]:
            w = w[::-1, ::-1]
        win = np.lib.stride_tricks.sliding_window_view(h, (3, 3), axis=(1, 2))
        return np.maximum(np.einsum("nhwcij,ijco->nhwo", win, w) + ck[info.keys[1]].load(), 0)

    h = conv(conv(x, "convolution2d_1"), "convolution2d_2")
    h = h.reshape(100, 12, 2, 12, 2, 32).max(axis=(2, 4))
    h = h.transpose(0, 3, 1, 2) if channels_first else h  # Flatten in the file's order
    h = np.maximum(h.reshape(100, -1) @ ck[by_layer["dense_1"].keys[0]].load()
                   + ck[by_layer["dense_1"].keys[1]].load(), 0)
    logits = h @ ck[by_layer["dense_2"].keys[0]].load() + ck[by_layer["dense_2"].keys[1]].load()
    return int((logits.argmax(1) == labels).sum())


@pytest.mark.corpus
def test_theano_flags_reproduce_the_known_mnist_answers(corpus: Path) -> None:
    """Corpus README: correct Theano conversion 98/100, unflipped 81/100; TensorFlow 99/100."""
    digits = corpus / "keras1-mnist-cnn" / "digits_inputs_and_outputs.h5"
    with keras_legacy_h5.read(corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5") as th:
        cf = th.data_format == "channels_first"
        assert _mnist_accuracy(th, digits, flip=True, channels_first=cf) == 98
        assert _mnist_accuracy(th, digits, flip=False, channels_first=cf) == 81
    with keras_legacy_h5.read(corpus / "keras1-mnist-cnn" / "mnist_cnn_tf_keras_1_weights.h5") as tf:
        assert _mnist_accuracy(tf, digits, flip=True, channels_first=False) == 99


@pytest.mark.corpus
@pytest.mark.parametrize("backend", ["tensorflow", "theano"])
@pytest.mark.parametrize("version", ["1", "2"])
def test_legacy_dense_and_conv2d_hold_arange(corpus: Path, backend: str, version: str) -> None:
    for layer in ("dense", "conv2d"):
        path = corpus / "legacy-keras-layers" / f"{layer}_{backend}_{version}.h5"
        with keras_legacy_h5.read(path) as ck:
            assert ck.framework_version.startswith(version)
            assert ck.convention is (Convention.THEANO if backend == "theano" else Convention.KERAS)
            kernel = next(e for e in ck if e.role is Role.KERNEL)
            bias = next(e for e in ck if e.role is Role.BIAS)
            shape = (4, 6) if layer == "dense" else (3, 3, 5, 6)
            assert kernel.shape == shape
            np.testing.assert_array_equal(kernel.load(), np.arange(np.prod(shape)).reshape(shape))
            np.testing.assert_array_equal(bias.load(), np.arange(6))
            flipped = layer == "conv2d" and backend == "theano"
            assert kernel.convention is (Convention.THEANO if flipped else Convention.KERAS)


@pytest.mark.corpus
def test_keras1_lstm_gates_and_batchnorm_running_std(corpus: Path) -> None:
    with keras_legacy_h5.read(corpus / "legacy-keras-layers" / "lstm_theano_1.h5") as ck:
        parts = [(e.role.value, e.part) for e in ck]
        assert parts == [(r, g) for g in "icfo" for r in ("kernel", "recurrent_kernel", "bias")]
        assert all(e.kind is Kind.LSTM and e.layer == "lstm_1" for e in ck)
        assert any("hard_sigmoid" in n for n in ck.notes)
    with keras_legacy_h5.read(corpus / "legacy-keras-layers" / "batch_to_conv2d_theano_1.h5") as ck:
        std = ck["batchnormalization_1/batchnormalization_1_running_std"]
        assert std.role is Role.MOVING_VARIANCE and std.trainable is False
    with keras_legacy_h5.read(corpus / "legacy-keras-layers" / "bidirectional_lstm_tensorflow_2.h5") as ck:
        assert [e.part for e in ck] == ["forward"] * 3 + ["backward"] * 3


@pytest.mark.corpus
def test_crepe_weights_only_kinds_from_names_and_ranks(corpus: Path) -> None:
    with keras_legacy_h5.read(corpus / "crepe-tiny" / "model-tiny.h5") as ck:
        assert (ck.framework_version, ck.backend) == ("2.1.5", "tensorflow")
        assert ck.model_config is None and ck.convention is Convention.KERAS
        kinds = {li.name: li.kind for li in ck.layers if li.keys}
        assert kinds["conv1"] is Kind.CONV2D and kinds["conv1-BN"] is Kind.BATCH_NORM
        assert kinds["classifier"] is Kind.DENSE
        assert ck["conv1/conv1_3/kernel:0"].shape == (512, 1, 1, 128)
        assert ck.num_params == sum(int(np.prod(e.shape)) for e in ck)


@pytest.mark.corpus
def test_keras3_nested_real_names_and_values(corpus: Path) -> None:
    with keras3_zip.read(corpus / "keras3-nested" / "pre_pr22362_nested_container.keras") as ck:
        assert ck.framework_version == "3.15.0"
        assert [li.name for li in ck.layers] == ["d_0", "d_1", "d_2", "dense"]
        for i, name in enumerate(["dense", "dense_1", "dense_2"]):
            np.testing.assert_array_equal(ck[f"layers/{name}/vars/0"].load(),
                                          np.full((4, 4), 0.1 * (i + 1), "float32"))
        np.testing.assert_array_equal(ck["layers/dense_3/vars/0"].load(), np.full((4, 2), 0.5))
        assert ck["layers/dense_3/vars/1"].role is Role.BIAS


def test_chunked_layer_names_are_joined_in_order(tmp_path: Path) -> None:
    """Keras splits a list attribute above 64 KB into ``layer_names0``, ``layer_names1``, ..."""
    path = tmp_path / "chunked.h5"
    names = [f"dense_{i}" for i in range(6)]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = np.array([n.encode() for n in names[:3]])
        f.attrs["layer_names1"] = np.array([n.encode() for n in names[3:]])
        f.attrs["keras_version"], f.attrs["backend"] = b"2.2.4", b"tensorflow"
        for i, n in enumerate(names):
            g = f.create_group(n)
            g.attrs["weight_names0"] = np.array([f"{n}/kernel:0".encode()])
            g.attrs["weight_names1"] = np.array([f"{n}/bias:0".encode()])
            g[f"{n}/kernel:0"] = np.full((2, 3), i, "float32")
            g[f"{n}/bias:0"] = np.zeros(3, "float32")
    with keras_legacy_h5.read(path) as ck:
        assert [li.name for li in ck.layers] == names
        assert [e.role for e in ck] == [Role.KERNEL, Role.BIAS] * 6
        assert ck["dense_4/dense_4/kernel:0"].load()[0, 0] == 4


# -- real Keras 3 ---------------------------------------------------------------------------------
keras = pytest.importorskip("keras")


def _models() -> dict[str, object]:
    L = keras.layers
    seq = keras.Sequential([keras.Input((6,)), L.Dense(5), L.BatchNormalization(), L.Dense(3)])
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(3, 3, name="c1")(inp)
    x = L.DepthwiseConv2D(3)(x)
    x = L.Reshape((-1, 3))(x)
    x = L.LSTM(4)(x)
    functional = keras.Model(inp, L.Dense(3)(x))
    inner = keras.Sequential([keras.Input((4,)), L.Dense(4, name="inner_a"),
                              L.Dense(3, name="inner_b")], name="sub")
    nin = keras.Input((5,))
    nested = keras.Model(nin, inner(L.Dense(4, name="outer")(nin)))
    return {"sequential": seq, "functional": functional, "nested": nested}


def _fit_once(model, rng: np.random.Generator) -> None:
    model.compile(optimizer="adam", loss="mse")
    x = rng.standard_normal((4, *model.input_shape[1:])).astype("float32")
    model.fit(x, rng.standard_normal((4, 3)).astype("float32"), epochs=1, verbose=0)


def _variable_for(model, layer: str, role: Role):
    """The model variable at ``<layer>/<role>`` (Sequential prefixes its own name; RNNs a cell)."""
    def matches(path: str) -> bool:
        parts = ("/" + path).rsplit("/", 2)
        return ("/" + path).endswith(f"/{layer}/{role.value}") or (
            parts[-1] == role.value and parts[0].endswith("/" + layer) and "cell" in parts[1])
    hits = [v for v in model.weights if matches(v.path)]
    assert len(hits) == 1, (layer, role, [v.path for v in model.weights])
    return hits[0]


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["sequential", "functional", "nested"])
@pytest.mark.parametrize("container", ["weights.h5", "keras"])
def test_keras3_files_equal_the_models_variables(tmp_path: Path, rng: np.random.Generator,
                                                 kind: str, container: str) -> None:
    model = _models()[kind]
    _fit_once(model, rng)
    path = tmp_path / f"m.{container}"
    model.save_weights(path) if container == "weights.h5" else model.save(path)
    reader = keras3_h5 if container == "weights.h5" else keras3_zip
    assert _reader(path) is reader
    with reader.read(path) as ck:
        model_entries = ck.model_entries()
        assert len(model_entries) == len(model.weights)
        for e in model_entries:
            var = _variable_for(model, e.layer, e.role)
            np.testing.assert_array_equal(e.load(), keras.ops.convert_to_numpy(var))
            assert e.convention is Convention.KERAS
        opt = ck.optimizer_entries()
        ref = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        assert len(opt) == len(ref)
        for e, r in zip(opt, ref):
            np.testing.assert_array_equal(e.load(), r)
        if container == "keras":
            assert ck.framework_version == keras.__version__
            assert all(li.class_name for li in ck.layers)


@pytest.mark.keras
@pytest.mark.parametrize("container", ["weights.h5", "keras"])
def test_keras3_writer_round_trips_through_load_weights(tmp_path: Path, container: str) -> None:
    model = _models()["functional"]
    src = tmp_path / f"src.{container}"
    model.save_weights(src) if container == "weights.h5" else model.save(src)
    reader = keras3_h5 if container == "weights.h5" else keras3_zip
    out = tmp_path / "out.weights.h5"
    with reader.read(src) as ck:
        keras3_h5.write(ck, out, metadata={"note": "round trip"})
    fresh = _models()["functional"]
    fresh.load_weights(out)
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with keras3_h5.read(out) as again:
        assert [li.name for li in again.layers][0] == "c1"


@pytest.mark.keras
def test_keras3_sharded_weights_read_across_shards(tmp_path: Path) -> None:
    def build():
        return keras.Sequential([keras.Input((64,)), keras.layers.Dense(256),
                                 keras.layers.Dense(256), keras.layers.Dense(10)])
    model = build()
    index = tmp_path / "m.weights.json"
    model.save_weights(index, max_shard_size=0.0003)
    assert len(list(tmp_path.glob("m_*.weights.h5"))) >= 2
    assert _reader(index) is keras3_h5
    with keras3_h5.read(index) as ck:
        assert len(ck.metadata["shards"]) >= 2
        for e, ref in zip(ck.model_entries(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(e.load(), ref)
        keras3_h5.write(ck, tmp_path / "joined.weights.h5")
    fresh = build()
    fresh.load_weights(tmp_path / "joined.weights.h5")
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.keras
def test_keras3_legacy_h5_save_reads_with_the_legacy_reader(tmp_path: Path,
                                                           rng: np.random.Generator) -> None:
    """Keras 3 still writes the Keras 2 ``.h5`` layout (``model.save('x.h5')``), optimizer too."""
    model = _models()["nested"]
    _fit_once(model, rng)
    path = tmp_path / "legacy.h5"
    model.save(path)
    assert _reader(path) is keras_legacy_h5
    with keras_legacy_h5.read(path) as ck:
        assert ck.framework_version == keras.__version__ and ck.convention is Convention.KERAS
        assert ck.backend == keras.backend.backend()
        for e in ck.model_entries():
            var = _variable_for(model, e.layer, e.role)
            np.testing.assert_array_equal(e.load(), keras.ops.convert_to_numpy(var))
        assert {e.layer for e in ck.model_entries()} == {"outer", "sub/inner_a", "sub/inner_b"}
        opt = ck.optimizer_entries()
        ref = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
        assert len(opt) == len(ref) and "training_config" in ck.metadata
        for e, r in zip(opt, ref):
            np.testing.assert_array_equal(e.load(), r)


def test_writer_refuses_checkpoints_without_keras3_paths(tmp_path: Path) -> None:
    from weightgraft.checkpoint import Checkpoint, TensorEntry
    ck = Checkpoint([TensorEntry.from_array("fc.weight", np.ones((2, 2), "float32"))], "memory")
    with pytest.raises(FormatError, match="fc.weight"):
        keras3_h5.write(ck, tmp_path / "x.weights.h5")
    assert not (tmp_path / "x.weights.h5").exists()


def test_writer_refuses_a_json_output_name(tmp_path: Path) -> None:
    from weightgraft.checkpoint import Checkpoint, TensorEntry
    ck = Checkpoint([TensorEntry.from_array("vars/0", np.ones(2, "float32"))], "memory")
    with pytest.raises(FormatError, match="weights.h5"):
        keras3_h5.write(ck, tmp_path / "x.weights.json")


@pytest.mark.keras
def test_keras3_bfloat16_reads_as_bits_and_round_trips(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, dtype="bfloat16")])
    model.save_weights(tmp_path / "bf.weights.h5")
    with keras3_h5.read(tmp_path / "bf.weights.h5") as ck:
        kernel = ck["layers/dense/vars/0"]
        assert kernel.dtype == "bfloat16" and kernel.load(raw=True).dtype == np.uint16
        ref = keras.ops.convert_to_numpy(keras.ops.cast(model.weights[0], "float32"))
        np.testing.assert_array_equal(kernel.load(), ref)
        keras3_h5.write(ck, tmp_path / "out.weights.h5")
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, dtype="bfloat16")])
    fresh.load_weights(tmp_path / "out.weights.h5")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.ops.cast(fresh.weights[0], "float32")), ref)


@pytest.mark.corpus
def test_theano_mnist_without_its_config_infers_th_from_shapes(corpus: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "weights_only.h5"  # no *_config.json beside it
    lonely.write_bytes((corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5").read_bytes())
    with keras_legacy_h5.read(lonely) as ck:
        assert ck.model_config is None and ck.convention is Convention.THEANO
        assert ck.metadata["dim_ordering"] == "th" and "inferred" in ck.convention_reason
        conv = next(li for li in ck.layers if li.name == "convolution2d_2")
        assert (conv.kind, conv.config["kernel_layout"]) == (Kind.CONV2D, "oihw")


@pytest.mark.parametrize("name, kind, role, part", [
    ("gru_1_W_z", Kind.GRU, Role.KERNEL, "z"),
    ("gru_1_U_r", Kind.GRU, Role.RECURRENT_KERNEL, "r"),
    ("gru_1_b_h", Kind.GRU, Role.BIAS, "h"),
    ("simplernn_1_U", Kind.SIMPLE_RNN, Role.RECURRENT_KERNEL, None),
    ("prelu_1_alphas", Kind.PRELU, Role.ALPHA, None),
    ("embedding_1_W", Kind.EMBEDDING, Role.EMBEDDINGS, None),
    ("separableconvolution2d_1_depthwise_kernel", Kind.SEPARABLE_CONV2D,
     Role.DEPTHWISE_KERNEL, None),
    ("batchnormalization_1_running_std", Kind.BATCH_NORM, Role.MOVING_VARIANCE, None),
    ("conv1_3/kernel:0", Kind.CONV2D, Role.KERNEL, None),
    ("lstm_1/recurrent_kernel:0", Kind.LSTM, Role.RECURRENT_KERNEL, None),
    ("batch_normalization_1/moving_variance:0", Kind.BATCH_NORM, Role.MOVING_VARIANCE, None),
    ("separable_conv2d_1/pointwise_kernel:0", Kind.SEPARABLE_CONV2D, Role.POINTWISE_KERNEL, None),
    ("depthwise_conv2d_1/depthwise_kernel:0", Kind.DEPTHWISE_CONV2D, Role.KERNEL, None),
    ("embedding_1/embeddings:0", Kind.EMBEDDING, Role.EMBEDDINGS, None),
    ("p_re_lu_1/alpha:0", Kind.PRELU, Role.ALPHA, None),
])
def test_keras1_and_keras2_variable_names_map_to_roles(name: str, kind: Kind, role: Role,
                                                       part: str | None) -> None:
    """Names as Keras 1.2 / 2.x wrote them (corpus files and the Keras sources)."""
    from weightgraft.formats.keras_names import kind_for_layer_name, owner_of_variable, \
        role_for_variable
    assert role_for_variable(name, kind) == (role, part)
    if not name.startswith("conv1_3"):  # crepe's own layer name says nothing of its class
        assert kind_for_layer_name(owner_of_variable(name)) is kind
