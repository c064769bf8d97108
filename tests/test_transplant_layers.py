"""Recurrent and attention layers transplanted across frameworks with no mapping, proven by
running both: GRU reset_after, MultiHeadAttention (packed and kdim/vdim), recurrent cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import weightgraft as wg

pytestmark = [pytest.mark.torch, pytest.mark.keras]

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
nn = torch.nn


# -- GRU reset_after=False: no PyTorch equivalent, said in words ------------------------------

class TorchGRU(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def keras_gru(reset_after: bool, bias: bool = True) -> keras.Model:
    inp = keras.Input((5, 3))
    return keras.Model(inp, keras.layers.GRU(4, reset_after=reset_after, use_bias=bias,
                                             return_sequences=True, name="gru")(inp))


@pytest.mark.parametrize("bias", [True, False])
def test_a_keras_reset_before_gru_is_refused_with_the_reason_not_a_bare_no_source(bias) -> None:
    """Found by audit: a live Keras GRU(reset_after=False) was refused only with 'no source',
    never saying why the obvious pair was not taken."""
    from weightgraft.errors import PlanError

    target = TorchGRU(bias)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(PlanError) as info:
        wg.transplant(keras_gru(reset_after=False, bias=bias), target)
    words = " ".join(str(info.value).split())
    assert "not paired: gru <- gru" in words and "reset_after=False" in words
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_a_weights_only_gru_without_bias_says_what_it_assumed(tmp_path) -> None:
    """Without a bias both reset_after variants store the same shapes and a .weights.h5
    has no config: the plan must say it assumed reset_after=True, and that is right for
    Keras 3's default (checked by running both frameworks)."""
    source = keras_gru(reset_after=True, bias=False)
    path = tmp_path / "gru.weights.h5"
    source.save_weights(str(path))
    target = TorchGRU(bias=False)
    report = wg.transplant(str(path), target)
    assert any("assumed reset_after=True" in n for n in report.plan.notes)
    x = np.random.default_rng(3).standard_normal((2, 5, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(source(x))
    got = target(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


# -- attention across frameworks ---------------------------------------------------------------

class TorchAttention(nn.Module):
    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.att(q, kv, kv, need_weights=False)[0]


@pytest.mark.parametrize("kv_width", [8, 6], ids=["packed_in_proj", "kdim_vdim"])
@pytest.mark.parametrize("direction", ["keras_to_torch", "torch_to_keras"])
def test_attention_transplants_both_ways_with_no_mapping(kv_width, direction) -> None:
    """Found by audit: Keras MultiHeadAttention and PyTorch MultiheadAttention never paired
    (their roles differ: per-projection kernels against one packed in_proj_weight), and
    kdim/vdim attention crashed in numpy."""
    rng = np.random.default_rng(7)
    q_in, kv_in = keras.Input((5, 8)), keras.Input((6, kv_width))
    kmodel = keras.Model([q_in, kv_in],
                         keras.layers.MultiHeadAttention(2, 4, name="att")(q_in, kv_in))
    tmodel = TorchAttention(None if kv_width == 8 else kv_width)
    xs = [rng.standard_normal((2, 5, 8)).astype("float32"),
          rng.standard_normal((2, 6, kv_width)).astype("float32")]
    if direction == "keras_to_torch":
        for v in kmodel.weights:
            v.assign(rng.standard_normal(tuple(v.shape)).astype("float32"))
        report = wg.transplant(kmodel, wg.view(tmodel, inputs=xs))
    else:
        with torch.no_grad():
            for p in tmodel.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype("float32")))
        report = wg.transplant(wg.view(tmodel, inputs=xs), kmodel)
    assert report.totals["unmatched"] == 0 and report.totals["unused_sources"] == 0
    want = keras.ops.convert_to_numpy(kmodel(xs))
    with torch.no_grad():
        got = tmodel(*(torch.from_numpy(x) for x in xs)).numpy()
    assert np.abs(want).max() > 1e-1  # not a comparison of zeros
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# -- recurrent cells ------------------------------------------------------------------------------

class TorchLoopedCell(nn.Module):
    """A hand-written loop over an nn.LSTMCell / GRUCell: what many ports look like."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.kind = cell
        self.cell = getattr(nn, cell)(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 4)
        state: Any = (h, torch.zeros_like(h)) if self.kind == "LSTMCell" else h
        out = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
            out.append(state[0] if isinstance(state, tuple) else state)
        return torch.stack(out, 1)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_keras_rnn_of_a_cell_fills_a_torch_cell_loop(cell) -> None:
    """Found by audit: keras.layers.RNN(LSTMCell) and torch's LSTMCell/GRUCell were kind
    'other', so no layout rule applied to them."""
    rng = np.random.default_rng(11)
    inp = keras.Input((5, 3))
    keras_cell = getattr(keras.layers, cell)(4)
    kmodel = keras.Model(inp, keras.layers.RNN(keras_cell, return_sequences=True)(inp))
    for v in kmodel.weights:
        v.assign(rng.standard_normal(tuple(v.shape)).astype("float32"))
    x = rng.standard_normal((2, 5, 3)).astype("float32")
    tmodel = TorchLoopedCell(cell)
    report = wg.transplant(kmodel, wg.view(tmodel, inputs=[x]))
    assert report.totals["unmatched"] == 0 and report.totals["converted"] >= 3
    want = keras.ops.convert_to_numpy(kmodel(x))
    with torch.no_grad():
        got = tmodel(torch.from_numpy(x)).numpy()
    assert np.abs(want).max() > 1e-1
    np.testing.assert_allclose(got, want, atol=1e-5)
