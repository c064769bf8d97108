"""TorchModelView against real PyTorch modules: order, slots, tying, modes, capture, Flatten."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightgraft import Kind, Role, ShapeMismatchError, WeightgraftError, view  # noqa: E402
from weightgraft.frameworks.shared import shared_layers, weighted_depth  # noqa: E402
from weightgraft.frameworks.torch import TorchModelView  # noqa: E402

pytestmark = pytest.mark.torch


def state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


class OutOfOrder(nn.Module):
    """Modules declared head-first; forward runs them the other way, with functional ops."""

    def __init__(self, permute: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.permute = permute

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.max_pool2d(x, 2)
        if self.permute:
            x = x.permute(0, 2, 3, 1)
        return self.fc(x.reshape(x.shape[0], -1))


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 11, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids)))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect")
        self.shortcut = nn.Conv2d(3, 4, 1)
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x)
        return self.fc(torch.flatten(self.pool(self.dw(y)), 1))


def test_execution_order_differs_from_declaration_order():
    mv = TorchModelView(OutOfOrder(), input_shape=(2, 6, 6))
    assert [lv.path for lv in mv.layers] == ["conv", "bn", "fc"]
    assert [name for name, _ in OutOfOrder().named_children()] == ["fc", "bn", "conv"]
    # relu, max_pool2d and reshape between bn and fc do not hide the edge
    assert dict((lv.path, lv.inbound) for lv in mv.layers) == {
        "conv": (), "bn": ("conv",), "fc": ("bn",)}
    assert mv.layers[0].input_shapes == ((None, 2, 6, 6),)
    assert mv.layers[-1].input_shapes == ((None, 36),)


def test_residual_graph_depth_kinds_and_config():
    mv = view(Residual(), input_shape=(3, 8, 8))
    layers = {lv.path: lv for lv in mv.layers}
    assert set(layers["dw"].inbound) == {"conv2", "shortcut"}
    assert weighted_depth(mv) == 4  # conv1, conv2, dw, fc; the shortcut runs in parallel
    assert layers["dw"].kind is Kind.DEPTHWISE_CONV2D
    assert layers["dw"].config["depth_multiplier"] == 1
    assert layers["conv2"].config["padding"] == "same"
    assert layers["conv2"].config["padding_mode"] == "reflect"
    assert layers["conv1"].config["strides"] == (1, 1)
    assert layers["fc"].kind is Kind.DENSE


def test_tied_embedding_and_output_counted_once_with_alias():
    model = TiedLM()
    mv = TorchModelView(model)
    assert "head.weight" not in mv.slots
    assert mv.slots["embed.weight"].aliases == ("head.weight",)
    assert mv.slots["embed.weight"].role is Role.EMBEDDINGS
    total = sum(int(np.prod(s.shape)) for s in mv.slots.values() if not s.buffer)
    assert total == sum(p.numel() for p in model.parameters())  # torch counts tied once
    assert set(model.state_dict()) == set(mv.slots) | {"head.weight"}
    # writing through the alias reaches the one shared tensor
    value = np.random.default_rng(0).standard_normal((11, 4)).astype("float32")
    mv.assign("head.weight", value)
    np.testing.assert_array_equal(model.embed.weight.detach().numpy(), value)
    layers = {lv.path: lv for lv in mv.layers}
    assert layers["head"].inbound == ("norm",)
    assert layers["embed"].input_shapes == ((None, 16),)


def test_buffers_and_trainable_flags():
    model = OutOfOrder()
    model.conv.weight.requires_grad_(False)
    mv = view(model, input_shape=(2, 6, 6))
    s = mv.slots
    assert s["bn.num_batches_tracked"].buffer and s["bn.num_batches_tracked"].dtype == "int64"
    assert s["bn.num_batches_tracked"].role is Role.NUM_BATCHES_TRACKED
    assert s["bn.running_var"].role is Role.MOVING_VARIANCE and not s["bn.running_var"].trainable
    assert s["bn.weight"].role is Role.GAMMA and s["bn.weight"].trainable
    assert not s["conv.weight"].trainable and s["conv.bias"].trainable
    assert list(s) == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                       "bn.running_var", "bn.num_batches_tracked", "fc.weight", "fc.bias"]


def test_recurrent_and_attention_modules_are_single_layers():
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)
            self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.attn(y, y, y)[0]

    mv = view(Seq(), inputs=[np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")])
    assert [lv.path for lv in mv.layers] == ["lstm", "attn"]
    roles = {k: s.role for k, s in mv.slots.items()}
    assert roles["lstm.weight_hh_l0"] is Role.RECURRENT_KERNEL
    assert roles["lstm.bias_hh_l0"] is Role.RECURRENT_BIAS
    assert roles["attn.in_proj_weight"] is Role.IN_PROJ_KERNEL
    assert roles["attn.out_proj.weight"] is Role.OUTPUT_KERNEL
    assert mv.slots["attn.out_proj.weight"].layer == "attn"
    assert mv.layers[1].config["num_heads"] == 2
    assert mv.layers[1].inbound == ("lstm",)


def test_rnn_hidden_state_shapes_keep_their_layer_axis_and_hide_the_batch():
    """Found by audit: h_n (layers*directions, N, H) was shown as (?, N, H), the probe's
    batch size leaking in where the layer axis belongs."""
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(3, 5, batch_first=True)
            self.lstm = nn.LSTM(5, 4, num_layers=2, bidirectional=True)  # batch second
            self.attn = nn.MultiheadAttention(8, 2)  # batch second too

        def forward(self, x):
            y, _ = self.gru(x)
            y, _ = self.lstm(y.transpose(0, 1))
            return self.attn(y, y, y)[0]

    x = np.random.default_rng(0).standard_normal((3, 7, 3)).astype("float32")
    model = Seq()
    with torch.no_grad():
        y, h = model.gru(torch.from_numpy(x))
        z, (hl, cl) = model.lstm(y.transpose(0, 1))
    mv = view(model, inputs=[x])
    shapes = {lv.path: lv.output_shapes for lv in mv.layers}
    assert y.shape == (3, 7, 5) and h.shape == (1, 3, 5)  # torch's own, batch 3
    assert shapes["gru"] == ((None, 7, 5), (1, None, 5))
    assert z.shape == (7, 3, 8) and hl.shape == cl.shape == (4, 3, 4)
    assert shapes["lstm"] == ((7, None, 8), (4, None, 4), (4, None, 4))
    assert shapes["attn"][0] == (7, None, 8)


# -- the model is never changed ---------------------------------------------------------------------


def test_inspection_keeps_training_mode_weights_and_no_hooks():
    model = OutOfOrder()
    model.train()
    model.bn.eval()  # a mixed state must come back exactly
    before = state_hash(model)
    mv = view(model, input_shape=(2, 6, 6))
    mv.layers, mv.slots
    mv.capture(mv.probe_inputs())
    mv.forward(mv.probe_inputs())
    assert model.training and model.conv.training and not model.bn.training
    assert state_hash(model) == before  # BatchNorm statistics untouched by the probe pass
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        mv.capture([np.zeros((1, 5, 6, 6), "float32")])  # wrong channel count
    assert model.training and not model.bn.training
    assert all(not m._forward_hooks for m in model.modules())


def test_probe_input_guess_from_first_conv_and_clear_error_when_impossible():
    with pytest.raises(WeightgraftError, match="input_shape="):
        TorchModelView(OutOfOrder()).layers  # 32x32 pools to 16x16: fc wants 3x3
    mv = TorchModelView(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 1)))
    assert mv.inputs[0].shape == (3, 32, 32)


# -- assign and capture -----------------------------------------------------------------------------


def test_assign_rejects_wrong_shape_and_dtype():
    model = OutOfOrder()
    mv = view(model, input_shape=(2, 6, 6))
    with pytest.raises(ShapeMismatchError) as err:
        mv.assign("conv.weight", np.zeros((4, 2, 3), "float32"))
    text = str(err.value)
    assert "conv.weight" in text and "(4, 2, 3, 3)" in text and "(4, 2, 3)" in text
    with pytest.raises(ShapeMismatchError, match="float32"):
        mv.assign("conv.bias", np.arange(4))
    with pytest.raises(ShapeMismatchError, match="int64"):
        mv.assign("bn.num_batches_tracked", np.array(1.5, "float32"))
    value = np.random.default_rng(3).standard_normal((5, 36)).astype("float32")
    mv.assign("fc.weight", value)
    np.testing.assert_array_equal(model.fc.weight.detach().numpy(), value)
    np.testing.assert_array_equal(mv.read("fc.weight"), value)
    mv.assign("bn.num_batches_tracked", np.array(7))
    assert int(model.bn.num_batches_tracked) == 7


def test_capture_equals_running_the_modules_directly():
    model = OutOfOrder().eval()
    with torch.no_grad():  # give BatchNorm statistics that are not the identity
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    mv = view(model, input_shape=(2, 6, 6))
    x = np.random.default_rng(4).standard_normal((2, 2, 6, 6)).astype("float32")
    got = mv.capture([x])
    with torch.no_grad():
        conv = model.conv(torch.from_numpy(x))
        bn = model.bn(conv)
        out = model(torch.from_numpy(x))
    np.testing.assert_allclose(got["conv"], conv.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["bn"], bn.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["fc"], out.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mv.forward([x])[0], out.numpy(), rtol=1e-6, atol=1e-6)


def test_shared_module_called_twice_and_shared_between_models():
    block = nn.Linear(3, 3)
    a = nn.Sequential(nn.Linear(3, 3), block)
    b = nn.Sequential(block, nn.Linear(3, 1))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, x):
            return self.block(torch.tanh(self.block(x)))

    mv = view(Twice(), input_shape=(3,))
    assert mv.layers[0].calls == 2 and mv.layers[0].shared
    assert [(s.path_a, s.path_b) for s in shared_layers(a, b)] == [("1", "0")]
    assert shared_layers(a, b)[0].num_params == 12


# -- flatten_input ----------------------------------------------------------------------------------


def test_flatten_order_plain_cnn_is_chw():
    lv = view(OutOfOrder(), input_shape=(2, 6, 6)).layers[-1]
    assert lv.config["flatten_input"] == {"feature_shape": {"c": 4, "h": 3, "w": 3},
                                          "order": "chw", "explicit": False}


def test_flatten_order_permute_in_forward_is_explicit_hwc():
    lv = view(OutOfOrder(permute=True), input_shape=(2, 6, 6)).layers[-1]
    assert lv.config["flatten_input"] == {"feature_shape": {"c": 4, "h": 3, "w": 3},
                                          "order": "hwc", "explicit": True}


def test_linear_after_global_pool_has_no_flatten_context():
    # (N, 4, 1, 1) flattened: no axis order to get wrong, so no context
    lv = view(Residual(), input_shape=(3, 8, 8)).layers[-1]
    assert "flatten_input" not in lv.config


def test_flatten_order_of_an_embedded_sequence_is_wc():
    class SeqNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(9, 3)
            self.fc = nn.Linear(15, 2)

        def forward(self, ids):
            return self.fc(torch.flatten(torch.relu(self.embed(ids)), 1))

    lv = view(SeqNet(), inputs=[np.array([[1, 2, 3, 4, 5]])]).layers[-1]
    assert lv.config["flatten_input"] == {"feature_shape": {"w": 5, "c": 3}, "order": "wc",
                                          "explicit": False}
