"""KerasModelView against real Keras 3 models: order, slots, sharing, capture, Flatten order."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from weightgraft import Kind, Role, ShapeMismatchError, WeightgraftError, view  # noqa: E402
from weightgraft.frameworks.keras import KerasModelView  # noqa: E402
from weightgraft.frameworks.shared import shared_layers, weighted_depth  # noqa: E402

pytestmark = pytest.mark.keras


def weights_hash(model: keras.Model) -> str:
    h = hashlib.sha256()
    for v in model.weights:
        h.update(v.path.encode())
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v.value)).tobytes())
    return h.hexdigest()


def as_numpy(x: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


# -- ResNet50: one instantiation per session ------------------------------------------------


@pytest.fixture(scope="module")
def resnet50() -> tuple[keras.Model, KerasModelView]:
    model = keras.applications.ResNet50(weights=None)
    return model, view(model)


@pytest.mark.slow
def test_resnet50_depth_is_50_and_params_match_count_params(resnet50):
    model, mv = resnet50
    assert weighted_depth(mv) == 50
    assert sum(int(np.prod(s.shape)) for s in mv.slots.values()) == model.count_params()
    # every layer object but the InputLayer, each once, in graph order
    assert len(mv.layers) == len(model.layers) - 1
    paths = [lv.path for lv in mv.layers]
    assert paths.index("conv1_conv") < paths.index("conv2_block1_1_conv") < paths.index("predictions")
    add = next(lv for lv in mv.layers if lv.path == "conv2_block1_add")
    assert set(add.inbound) == {"conv2_block1_0_bn", "conv2_block1_3_bn"}
    assert mv.slots["conv1_conv/kernel"].shape == (7, 7, 3, 64)
    assert mv.slots["conv1_bn/moving_variance"].buffer
    assert not mv.slots["conv1_bn/moving_variance"].trainable


# -- structure --------------------------------------------------------------------------------


class Declared(keras.Model):
    """Layers declared in one order, called in another; ``shared`` is called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.head = keras.layers.Dense(2, name="head")
        self.shared = keras.layers.Dense(4, name="shared")
        self.first = keras.layers.Dense(4, name="first", activation="relu")

    def call(self, x):
        x = self.first(x)
        x = self.shared(keras.ops.tanh(x))
        x = self.shared(x)
        return self.head(x)


def test_subclassed_model_layers_in_call_order_with_shared_layer_counted_once():
    model = Declared()
    model(np.zeros((1, 4), "float32"))
    mv = KerasModelView(model)
    assert [lv.path for lv in mv.layers] == ["first", "shared", "head"]
    calls = {lv.path: lv.calls for lv in mv.layers}
    assert calls == {"first": 1, "shared": 2, "head": 1}
    assert [lv.path for lv in mv.layers if lv.shared] == ["shared"]
    # the raw keras.ops.tanh between first and shared does not hide the edge
    assert dict((lv.path, lv.inbound) for lv in mv.layers)["shared"] == ("first",)
    assert sum(int(np.prod(s.shape)) for s in mv.slots.values()) == model.count_params()
    # depth counts layer objects: the second call of ``shared`` is the same layer
    assert weighted_depth(mv) == 3


def test_nested_models_expand_to_leaf_paths_with_graph_edges():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, name="dense")],
                             name="inner")
    inp = keras.Input((4,))
    x = keras.layers.Dense(3, name="stem")(inp)
    y = inner(x)
    z = keras.layers.Dense(2, name="out")(keras.ops.relu(y))
    model = keras.Model(inp, z)
    mv = view(model)
    assert [lv.path for lv in mv.layers] == ["stem", "inner/dense", "out"]
    assert dict((lv.path, lv.inbound) for lv in mv.layers) == {
        "stem": (), "inner/dense": ("stem",), "out": ("inner/dense",)}
    assert "inner/dense/kernel" in mv.slots
    assert mv.slots["inner/dense/kernel"].shape == (3, 5)


def test_slots_roles_for_attention_recurrent_and_norm_layers():
    inp = keras.Input((6, 4))
    x = keras.layers.LSTM(3, return_sequences=True, name="lstm")(inp)
    x = keras.layers.MultiHeadAttention(2, 5, name="mha")(x, x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GRU(2, reset_after=True, name="gru")(x)
    model = keras.Model(inp, x)
    model.get_layer("lstm").trainable = False
    mv = view(model)
    roles = {k: s.role for k, s in mv.slots.items()}
    assert roles["lstm/kernel"] is Role.KERNEL
    assert roles["lstm/recurrent_kernel"] is Role.RECURRENT_KERNEL
    assert roles["mha/query/kernel"] is Role.QUERY_KERNEL
    assert roles["mha/attention_output/bias"] is Role.OUTPUT_BIAS
    assert roles["bn/moving_mean"] is Role.MOVING_MEAN
    assert not mv.slots["lstm/kernel"].trainable and mv.slots["gru/kernel"].trainable
    layers = {lv.path: lv for lv in mv.layers}
    assert layers["mha"].kind is Kind.MULTI_HEAD_ATTENTION
    assert layers["mha"].config["num_heads"] == 2 and layers["mha"].config["key_dim"] == 5
    assert layers["gru"].config["reset_after"] is True
    assert layers["bn"].config["epsilon"] == pytest.approx(1e-3)
    assert layers["gru"].output_shapes == ((None, 2),)
    assert sum(int(np.prod(s.shape)) for s in mv.slots.values()) == model.count_params()


def test_two_models_on_one_base_report_their_shared_layers():
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="feat1"),
                             keras.layers.Dense(5, name="feat2")], name="base")
    a = keras.Sequential([base, keras.layers.Dense(2, name="head_a")])
    inp = keras.Input((4,))
    b = keras.Model(inp, keras.layers.Dense(3, name="head_b")(base(inp)))
    shared = shared_layers(a, b)
    assert [(s.path_a, s.path_b) for s in shared] == [("base/feat1", "base/feat1"),
                                                      ("base/feat2", "base/feat2")]
    assert sum(s.num_params for s in shared) == base.count_params()
    assert shared_layers(a, keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) == []


# -- the model is never changed ------------------------------------------------------------------


def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 5, 2)),
        keras.layers.Conv2D(3, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(4, name="dense"),
    ])


def test_inspection_leaves_model_bit_identical_and_call_restored_even_on_error():
    model = small_cnn()
    model.get_layer("conv").trainable = False  # a mixed state, which must survive as it is
    flags = [(layer.name, layer.trainable) for layer in model.layers]
    before = weights_hash(model)
    mv = view(model)
    mv.layers, mv.capture(mv.probe_inputs())
    assert weights_hash(model) == before
    assert [(layer.name, layer.trainable) for layer in model.layers] == flags
    for layer in model.layers:
        assert "call" not in vars(layer)
    with pytest.raises(Exception):
        mv.capture([np.zeros((1, 7, 7, 7), "float32")])  # wrong shape: the pass fails
    for layer in model.layers:
        assert "call" not in vars(layer)
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 2)).astype("float32")
    np.testing.assert_array_equal(as_numpy(model(x)), mv.forward([x])[0])


# -- assign, read, capture ------------------------------------------------------------------------


def test_assign_rejects_wrong_shape_and_dtype_with_slot_name():
    model = small_cnn()
    mv = view(model)
    with pytest.raises(ShapeMismatchError) as err:
        mv.assign("conv/kernel", np.zeros((2, 3, 3, 3), "float32"))
    text = str(err.value)
    assert "conv/kernel" in text and "(3, 3, 2, 3)" in text and "(2, 3, 3, 3)" in text
    with pytest.raises(ShapeMismatchError, match="int64"):
        mv.assign("conv/bias", np.arange(3))
    value = np.random.default_rng(1).standard_normal((3, 3, 2, 3)).astype("float32")
    mv.assign("conv/kernel", value)
    np.testing.assert_array_equal(as_numpy(model.get_layer("conv").kernel), value)
    np.testing.assert_array_equal(mv.read("conv/kernel"), value)


def test_capture_equals_running_the_layers_directly():
    model = small_cnn()
    mv = view(model)
    x = np.random.default_rng(2).standard_normal((2, 6, 5, 2)).astype("float32")
    got = mv.capture([x])
    conv = as_numpy(model.get_layer("conv")(x))
    bn = as_numpy(model.get_layer("bn")(conv, training=False))
    np.testing.assert_allclose(got["conv"], conv, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["bn"], bn, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["dense"], as_numpy(model(x)), rtol=1e-6, atol=1e-6)


# -- flatten_input ----------------------------------------------------------------------------------


def test_flatten_order_channels_last_cnn_is_hwc_not_explicit():
    mv = view(small_cnn())
    context = next(lv for lv in mv.layers if lv.path == "dense").config["flatten_input"]
    assert context == {"feature_shape": {"h": 6, "w": 5, "c": 3}, "order": "hwc",
                       "explicit": False}


def test_flatten_order_with_permute_before_flatten_is_explicit():
    model = keras.Sequential([
        keras.Input((6, 5, 2)), keras.layers.Conv2D(3, 3, name="conv"),
        keras.layers.Permute((2, 1, 3)), keras.layers.Flatten(), keras.layers.Dense(4, name="dense"),
    ])
    context = view(model).layers[-1].config["flatten_input"]
    assert context == {"feature_shape": {"h": 4, "w": 3, "c": 3}, "order": "whc",
                       "explicit": True}


def test_flatten_order_crepe_shape_permute_with_unit_width():
    # CREPE: (1024,) -> Reshape(1024, 1, 1) -> convs -> Permute((2, 1, 3)) -> Flatten -> Dense
    inp = keras.Input((64,))
    x = keras.layers.Reshape((64, 1, 1))(inp)
    x = keras.layers.Conv2D(4, (8, 1), strides=(4, 1), padding="same", name="conv1")(x)
    x = keras.layers.MaxPooling2D((2, 1))(x)
    x = keras.layers.Permute((2, 1, 3))(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(3, name="classifier")(x)
    context = view(keras.Model(inp, out)).layers[-1].config["flatten_input"]
    assert context["feature_shape"] == {"h": 8, "w": 1, "c": 4}
    assert context["explicit"] is True
    # with W == 1 the Permute moves no element: the channels-last order fits the data
    assert context["order"] == "hwc"


def test_dense_not_after_flatten_has_no_flatten_context():
    model = keras.Sequential([keras.Input((6, 5, 2)), keras.layers.Conv2D(3, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, name="dense")])
    assert "flatten_input" not in view(model).layers[-1].config


def test_flatten_order_channels_first_conv_is_chw():
    model = keras.Sequential([
        keras.Input((2, 6, 5)), keras.layers.Conv2D(3, 3, data_format="channels_first"),
        keras.layers.Flatten(), keras.layers.Dense(2)])
    assert view(model).layers[-1].config["flatten_input"] == {
        "feature_shape": {"c": 3, "h": 4, "w": 3}, "order": "chw", "explicit": False}


def test_flatten_order_of_a_sequence_is_wc_as_in_torch():
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.Flatten()(keras.layers.Embedding(9, 3)(inp))
    context = view(keras.Model(inp, keras.layers.Dense(2)(x))).layers[-1].config["flatten_input"]
    assert context == {"feature_shape": {"w": 5, "c": 3}, "order": "wc", "explicit": False}


class OpsFlatten(keras.Model):
    """Subclassed: relu, transpose and reshape done with keras.ops, not layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = keras.layers.Conv2D(3, 3, name="conv")
        self.dense = keras.layers.Dense(2, name="dense")

    def call(self, x):
        y = keras.ops.transpose(keras.ops.relu(self.conv(x)), (0, 3, 1, 2))
        return self.dense(keras.ops.reshape(y, (keras.ops.shape(y)[0], -1)))


def test_flatten_order_through_raw_ops_in_an_unbuilt_subclassed_model():
    x = np.random.default_rng(7).standard_normal((2, 6, 5, 2)).astype("float32")
    mv = KerasModelView(OpsFlatten(), inputs=[x])  # built by the view, outside the probe
    assert [lv.path for lv in mv.layers] == ["conv", "dense"]
    assert mv.layers[1].config["flatten_input"] == {
        "feature_shape": {"h": 4, "w": 3, "c": 3}, "order": "chw", "explicit": True}
    assert mv.layers[1].inbound == ("conv",)


def test_unbuilt_subclassed_model_without_shape_asks_for_input_shape():
    with pytest.raises(WeightgraftError, match="input_shape="):
        KerasModelView(OpsFlatten()).layers
    mv = view(OpsFlatten(), input_shape=(6, 5, 2))
    assert mv.slots["conv/kernel"].shape == (3, 3, 2, 3)
