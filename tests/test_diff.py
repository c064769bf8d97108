"""diff: statuses and statistics against numpy computed here, tiny changes kept visible."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import weightgraft as wg
from weightgraft.diff import diff, format_rel, normalise_key


def _ck(arrays: dict[str, np.ndarray], path: str = "mem") -> wg.Checkpoint:
    return wg.Checkpoint([wg.TensorEntry.from_array(k, v) for k, v in arrays.items()],
                         format="memory", path=path)


def test_statistics_equal_numpy(rng) -> None:
    a = rng.normal(size=(5, 7)).astype("float32")
    b = a.copy()
    b[1, 2] += 0.5
    b[3, :] *= 1.1
    t = diff(_ck({"w": a}), _ck({"w": b})).tensor("w")
    d = b.astype(np.float64) - a.astype(np.float64)
    assert t.status == "changed"
    assert t.max_abs == pytest.approx(np.abs(d).max())
    assert t.mean_abs == pytest.approx(np.abs(d).mean())
    assert t.rel_change == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a))
    assert t.frac_changed == pytest.approx(np.count_nonzero(d) / d.size)


def test_statuses_added_removed_unchanged_reshaped() -> None:
    z = np.zeros((2, 2), "float32")
    r = diff(_ck({"same": z, "gone": z, "shape": z}),
             _ck({"same": z, "new": z, "shape": np.zeros((4,), "float32")}))
    status = {t.key: t.status for t in r.tensors}
    assert status == {"same": "unchanged", "gone": "removed", "new": "added",
                      "shape": "reshaped"}
    assert not r.identical


def test_dtype_change_is_reported_even_when_values_equal() -> None:
    a = np.arange(4, dtype="float32")
    t = diff(_ck({"w": a}), _ck({"w": a.astype("float64")})).tensor("w")
    assert t.status == "changed" and (t.dtype_a, t.dtype_b) == ("float32", "float64")


def test_tolerances_call_tiny_changes_unchanged() -> None:
    a = np.ones(10, "float32")
    b = a + np.float32(1e-7)
    assert diff(_ck({"w": a}), _ck({"w": b})).tensor("w").status == "changed"
    assert diff(_ck({"w": a}), _ck({"w": b}), atol=1e-6).tensor("w").status == "unchanged"


def test_normalised_keys_pair_wrapped_checkpoints() -> None:
    a = np.ones(3, "float32")
    r = diff(_ck({"module.fc.weight": a}), _ck({"fc.weight": a}))
    assert [t.status for t in r.tensors] == ["unchanged"]
    assert normalise_key("_orig_mod.model.fc.weight") == "fc.weight"


def test_relative_change_of_1e7_stays_visible() -> None:
    assert format_rel(1.234e-7) == "1.23e-07"
    a = np.full(100, 1.0, "float32")
    big = a * 1.5
    tiny = a.copy()
    tiny[0] += np.float32(1.2e-6)  # ||d|| / ||a|| = 1.2e-7
    r = diff(_ck({"big/w": a, "tiny/w": a, "mid/w": a}),
             _ck({"big/w": big, "tiny/w": tiny, "mid/w": a * 1.2}))
    assert r.layers[0].layer == "big"
    assert r.layer("tiny").rel_change == pytest.approx(1.2e-7, rel=1e-2)
    assert any("tiny" in n and "less than the median" in n for n in r.notes)


def test_cli_json_and_table(tmp_path, rng) -> None:
    from weightgraft.formats import safetensors_format  # noqa: F401  (reader must exist)

    a = {"l1.weight": rng.normal(size=(3, 3)).astype("float32"), "l2.bias": np.zeros(3, "f4")}
    b = dict(a, **{"l1.weight": a["l1.weight"] * 2})
    from safetensors.numpy import save_file

    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    runner = CliRunner()
    res = runner.invoke(wg_cli(), ["diff", str(tmp_path / "a.safetensors"),
                                   str(tmp_path / "b.safetensors"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    by_key = {t["key"]: t for t in data["tensors"]}
    assert by_key["l1.weight"]["status"] == "changed"
    assert by_key["l1.weight"]["rel_change"] == pytest.approx(1.0)
    assert by_key["l2.bias"]["status"] == "unchanged"
    res = runner.invoke(wg_cli(), ["diff", str(tmp_path / "a.safetensors"),
                                   str(tmp_path / "b.safetensors")])
    assert res.exit_code == 0 and "l1" in res.output and "changed" in res.output


def wg_cli():
    from weightgraft.cli.main import cli

    return cli


@pytest.mark.keras
def test_keras_mlp_first_dense_changes_after_adam() -> None:
    """The issue's MLP (784-500-503-503-10): the first Dense visibly trains."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)),
                              keras.layers.Dense(500, activation="relu", name="d1"),
                              keras.layers.Dense(503, activation="relu", name="d2"),
                              keras.layers.Dense(503, activation="relu", name="d3"),
                              keras.layers.Dense(10, activation="softmax", name="out")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy")
    before = wg.view(model).snapshot()
    rng = np.random.default_rng(0)
    x = rng.random((64, 784), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    result = diff(before, model)
    d1 = result.layer("d1")
    assert d1.status == "changed" and 0 < d1.rel_change < 1
    kernel = model.get_layer("d1").kernel.numpy() if hasattr(
        model.get_layer("d1").kernel, "numpy") else keras.ops.convert_to_numpy(
        model.get_layer("d1").kernel)
    key = next(t.key for t in result.tensors if t.layer == "d1" and t.shape_a == (784, 500))
    old = before[key].load()
    expected = np.linalg.norm((kernel - old).astype(np.float64)) / np.linalg.norm(old)
    assert result.tensor(key).rel_change == pytest.approx(expected, rel=1e-6)
    assert format_rel(d1.rel_change) not in ("0", "0.000")


@pytest.mark.keras
@pytest.mark.torch
def test_cross_framework_diff_pairs_by_matching_and_converts_layout() -> None:
    """A Keras model and its PyTorch twin: same weights read as unchanged after the layout
    conversion; a change to one torch tensor shows up on the matching Keras tensor only."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    keras.utils.set_random_seed(1)
    kmodel = keras.Sequential([keras.Input((8, 8, 3)),
                               keras.layers.Conv2D(4, 3, name="conv"),
                               keras.layers.Flatten(),
                               keras.layers.Dense(5, name="fc")])
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 5))
    tview = wg.view(tmodel, input_shape=(3, 8, 8))
    wg.transplant(kmodel, tview)
    same = diff(kmodel, tview)
    assert same.counts == {"unchanged": 4}, same.counts
    with torch.no_grad():
        tmodel[0].bias[1] += 0.5
    changed = diff(kmodel, tview)
    bias = next(t for t in changed.tensors if t.layer == "conv" and t.shape_a == (4,))
    assert bias.status == "changed" and bias.max_abs == pytest.approx(0.5, rel=1e-6)
    assert bias.frac_changed == pytest.approx(0.25)
    kernel = next(t for t in changed.tensors if t.layer == "conv" and len(t.shape_a) == 4)
    assert kernel.status == "unchanged" and kernel.transform


@pytest.mark.keras
@pytest.mark.torch
def test_diff_of_a_torch_file_against_a_keras_model_converts_the_file(tmp_path) -> None:
    """A is a PyTorch state-dict file, B a live Keras model filled from it, then trained
    a step: the file is converted into Keras's layout and the change is B's."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    torch.save(tmodel.state_dict(), tmp_path / "a.pt")
    kmodel = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                               keras.layers.Dense(3)])
    wg.transplant(tmp_path / "a.pt", kmodel)
    assert diff(tmp_path / "a.pt", kmodel).counts == {"unchanged": 4}
    kernel = kmodel.layers[1].kernel
    kernel.assign(keras.ops.convert_to_numpy(kernel) + np.float32(0.25))
    result = diff(tmp_path / "a.pt", kmodel)
    changed = [t for t in result.tensors if t.status == "changed"]
    assert len(changed) == 1 and changed[0].key == "2.weight"
    assert changed[0].max_abs == pytest.approx(0.25, rel=1e-6)
    assert any("paired by the transplant matcher" in n for n in result.notes)


def _save_pair(tmp_path, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[str, str]:
    from safetensors.numpy import save_file

    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")


def test_tiny_change_note_ignored_atol(tmp_path, rng) -> None:
    """With --atol 1e-5 the tiny layer was 'unchanged' in the table, yet the note still said
    'tiny: changed, but only by 1.19e-07'."""
    a = {"big.weight": rng.normal(size=(20, 20)).astype("f4"),
         "mid.weight": rng.normal(size=(20, 20)).astype("f4"), "tiny.weight": np.ones(100, "f4")}
    tiny = a["tiny.weight"].copy()
    tiny[0] += np.float32(1.2e-6)
    b = {"big.weight": a["big.weight"] * np.float32(1.1),
         "mid.weight": a["mid.weight"] + np.float32(0.05), "tiny.weight": tiny}
    pa, pb = _save_pair(tmp_path, a, b)
    runner = CliRunner()
    plain = json.loads(runner.invoke(wg_cli(), ["diff", pa, pb, "--json"]).output)
    assert any(n.startswith("tiny: changed") for n in plain["notes"])
    res = runner.invoke(wg_cli(), ["diff", pa, pb, "--atol", "1e-5", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {t["key"]: t["status"] for t in data["tensors"]} == {
        "big.weight": "changed", "mid.weight": "changed", "tiny.weight": "unchanged"}
    assert not any("tiny" in n for n in data["notes"])
    res = runner.invoke(wg_cli(), ["diff", pa, pb, "--atol", "1e-5"])
    assert res.exit_code == 0 and "tiny: changed" not in " ".join(res.output.split())
    assert "count as unchanged" in res.output


def test_cli_atol_and_rtol(tmp_path) -> None:
    """--atol and --rtol on the command line, element by element, against numpy."""
    a = {"w": np.array([1.0, 100.0, -50.0, 0.0], "f4")}
    b = {"w": a["w"] + np.array([1e-3, 1e-3, 0.2, 1e-6], "f4")}
    pa, pb = _save_pair(tmp_path, a, b)
    d = np.abs(b["w"].astype(np.float64) - a["w"].astype(np.float64))
    fa = np.abs(a["w"].astype(np.float64))
    runner = CliRunner()
    for opts, atol, rtol in ((["--rtol", "1e-4"], 0.0, 1e-4), (["--atol", "1e-2"], 1e-2, 0.0),
                             (["--atol", "1e-5", "--rtol", "1e-4"], 1e-5, 1e-4),
                             (["--atol", "1"], 1.0, 0.0)):
        res = runner.invoke(wg_cli(), ["diff", pa, pb, "--json", *opts])
        assert res.exit_code == 0, res.output
        t = json.loads(res.output)["tensors"][0]
        differs = d > atol + rtol * fa
        assert t["frac_changed"] == pytest.approx(differs.mean()), opts
        assert t["status"] == ("changed" if differs.any() else "unchanged"), opts
        assert t["max_abs"] == pytest.approx(d.max(), rel=1e-6)  # statistics stay measured
    res = runner.invoke(wg_cli(), ["diff", pa, pb, "--rtol", "1e-4"])
    assert res.exit_code == 0 and "atol=0 + rtol=0.0001*|A|" in res.output
