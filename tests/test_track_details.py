"""Tracking, the details: snapshots (bf16, real keys, diffable), a reused Keras callback,
float64 statistics, the stalled and exploding flags, every=..., the plot's fixed scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from weightgraft.track import StatsRecorder, read_run, summarise


def _flags(run) -> dict[str, tuple[str, ...]]:
    return {s.name: s.flags for s in summarise(run)}


def _cli_json(*args: str) -> dict:
    from weightgraft.cli.main import cli

    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.mark.torch
def test_bf16_snapshot_crashed_with_unsupported_scalar_type(tmp_path) -> None:
    """``p.cpu().numpy()`` of a bfloat16 parameter raised TypeError in the constructor;
    snapshots now keep bf16 (as its bits) and fp16 as they are, readable by graft."""
    torch = pytest.importorskip("torch")
    import weightgraft as wg
    from weightgraft.torch import WeightTracker

    torch.manual_seed(0)
    for dtype, name in ((torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
        model = torch.nn.Linear(4, 3).to(dtype)
        path = tmp_path / f"{name}.wgt"
        with WeightTracker(model, path, every=1, snapshot_every=1) as tracker:
            with torch.no_grad():
                model.weight.add_(0.5)
            tracker.step()
        snaps = read_run(path).snapshots
        assert len(snaps) == 2
        with wg.open_checkpoint(snaps[-1]) as ck:
            assert ck["weight"].dtype == name
            expected = model.weight.detach().float().numpy()  # an exact widening
            np.testing.assert_array_equal(ck["weight"].load().astype(np.float32), expected)
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        assert wg.diff(snaps[-1], tmp_path / f"{name}.pt").counts == {"unchanged": 2}


@pytest.mark.torch
def test_snapshot_pairs_with_the_torch_state_dict(tmp_path) -> None:
    """A snapshot diffs against ``torch.save(model.state_dict())``: every tensor pairs by the
    state_dict's own keys, unchanged against the same state, changed against another."""
    torch = pytest.importorskip("torch")
    import weightgraft as wg
    from weightgraft.torch import WeightTracker

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save(model.state_dict(), tmp_path / "before.pt")
    with WeightTracker(model, tmp_path / "r.wgt", every="step", snapshot_every=1) as tracker:
        tracker.attach(opt)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 6)).pow(2).mean().backward()
            opt.step()
    torch.save(model.state_dict(), tmp_path / "after.pt")
    snaps = read_run(tmp_path / "r.wgt").snapshots
    assert len(snaps) == 4
    assert wg.diff(snaps[-1], tmp_path / "after.pt").counts == {"unchanged": 4}
    assert wg.diff(snaps[0], tmp_path / "before.pt").counts == {"unchanged": 4}
    assert wg.diff(snaps[0], tmp_path / "after.pt").counts == {"changed": 4}


@pytest.mark.keras
def test_snapshot_keys_had_pipes_and_paired_nothing_keras(tmp_path) -> None:
    """``graft diff RUN.snapshots/step-0.npz after.weights.h5`` gave 8 removed, 8 added."""
    keras = pytest.importorskip("keras")
    from weightgraft.keras import WeightTracker

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.save_weights(tmp_path / "before.weights.h5")
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 6), dtype=np.float32), rng.random((32, 2), dtype=np.float32),
              batch_size=8, epochs=2, verbose=0,
              callbacks=[WeightTracker(tmp_path / "k.wgt", every="epoch", snapshot_every=1)])
    model.save_weights(tmp_path / "after.weights.h5")
    snaps = read_run(tmp_path / "k.wgt").snapshots
    assert len(snaps) == 3
    first, last = snaps[0], snaps[-1]
    assert _cli_json("diff", last, str(tmp_path / "after.weights.h5"))["counts"] == \
        {"unchanged": 6}
    assert _cli_json("diff", first, str(tmp_path / "before.weights.h5"))["counts"] == \
        {"unchanged": 6}
    assert _cli_json("diff", first, str(tmp_path / "after.weights.h5"))["counts"] == \
        {"changed": 6}


@pytest.mark.keras
def test_reused_keras_callback_erased_the_first_fit(tmp_path) -> None:
    """A second fit() with the same callback reopened the run with "w"; now freeze / fit /
    unfreeze / fit is one run: both phases kept, steps continuing, the unfreeze noted."""
    keras = pytest.importorskip("keras")
    from weightgraft.keras import WeightTracker

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, name="base"),
                              keras.layers.Dense(2, name="head")])
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 2)).astype("float32")
    path = tmp_path / "ft.wgt"
    cb = WeightTracker(path, every="batch")
    w_start = keras.ops.convert_to_numpy(model.get_layer("base").kernel).astype(np.float64)
    model.get_layer("base").trainable = False
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    model.get_layer("base").trainable = True
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    run = read_run(path)
    assert [r.step for r in run.records] == list(range(9))  # start + 4 + 4, no restart
    # A batch record carries the epochs completed before it: 0 in fit 1, 1 in fit 2.
    assert [r.epoch for r in run.records] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    base = next(n for n in run.tensors if "base/" in n and "kernel" in n)
    updates = [r.stats[base].update_norm for r in run.records[1:]]
    assert updates[:4] == [0.0] * 4 and all(u > 0 for u in updates[4:])
    assert len(run.phases) == 1 and run.phases[0].step == 4
    assert run.phases[0].records_before == 5 and run.phases[0].trainable[base] is True
    summary = next(s for s in summarise(run) if s.name == base)
    assert summary.flags == () and summary.trainable and run.trainable_at_start[base] is False
    from weightgraft.report.track_plot import frozen_spans

    # The plot hatches the frozen phase only: layer "base" (row 0), records 0..4.
    layers = list(dict.fromkeys(run.layers[t] for t in run.tensors))
    assert frozen_spans(run, layers) == [(0, 0, 5)] and layers[0].endswith("base")
    w_now = keras.ops.convert_to_numpy(model.get_layer("base").kernel).astype(np.float64)
    assert run.records[-1].stats[base].norm == pytest.approx(np.linalg.norm(w_now), rel=1e-6)
    # The net change is measured from the first fit's first record, not the second's.
    assert run.records[-1].stats[base].change_norm == pytest.approx(
        np.linalg.norm(w_now - w_start), rel=1e-5)
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    other.compile(optimizer="adam", loss="mse")
    from weightgraft.errors import WeightgraftError

    with pytest.raises(WeightgraftError, match="new WeightTracker"):
        other.fit(x, y[:, :1].repeat(3, axis=1), epochs=1, verbose=0, callbacks=[cb])


@pytest.mark.torch
def test_float64_parameters_lost_precision_in_float32(tmp_path) -> None:
    """A 1e-9 update of a float64 parameter measured after .float() read 4.85e-08 for a
    true 6.40e-08; float64 is measured in float64, fp16 upcast to float32 (numpy oracle)."""
    torch = pytest.importorskip("torch")
    from weightgraft.torch import WeightTracker

    torch.manual_seed(0)
    for dtype, np_acc, tol in ((torch.float64, np.float64, 1e-12),
                               (torch.float16, np.float32, 1e-6)):
        lin = torch.nn.Linear(64, 64).to(dtype)
        w0 = lin.weight.detach().numpy().copy()
        path = tmp_path / f"{dtype}.wgt"
        with WeightTracker(lin, path, every=1) as tracker, torch.no_grad():
            lin.weight.add_(1e-9 if dtype == torch.float64 else 1e-3)
            tracker.step()
        w1 = lin.weight.detach().numpy()
        d = w1.astype(np_acc) - w0.astype(np_acc)
        s = read_run(path).records[-1].stats["weight"]
        assert s.update_norm == pytest.approx(np.linalg.norm(d.astype(np.float64)), rel=tol)
        assert s.change_norm == pytest.approx(np.linalg.norm(d.astype(np.float64)), rel=tol)
        assert s.max_update == pytest.approx(np.abs(d).max(), rel=tol)
        assert s.norm == pytest.approx(np.linalg.norm(w1.astype(np.float64)), rel=1e-6)


def test_layer_that_stopped_updating_got_no_flag(tmp_path) -> None:
    """5 steps of updates then 45 static: flagged "stalled" (not dead, not never-changed)."""
    path = tmp_path / "s.wgt"
    names = ("died/w", "live/w", "brief/w", "dead/w")
    with StatsRecorder(path, {n: (4,) for n in names}, dict.fromkeys(names, True),
                       framework="numpy") as rec:
        w = {n: np.ones(4) for n in names}
        for step in range(50):
            rec.record(w, step=step)
            w = dict(w, **{"live/w": w["live/w"] + 0.01, "dead/w": w["dead/w"] * (1 + 1e-12)})
            if step < 5:
                w["died/w"] = w["died/w"] + 0.1
            if step < 46:  # the last 3 updates are zero: fewer than STALLED_RECORDS
                w["brief/w"] = w["brief/w"] + 0.1
    flags = {t["name"]: t["flags"] for t in _cli_json("track", "show", str(path))["tensors"]}
    assert flags == {"died/w": ["stalled"], "live/w": [], "brief/w": [], "dead/w": ["dead"]}
    from weightgraft.cli.main import cli

    res = CliRunner().invoke(cli, ["track", "show", str(path)])
    assert res.exit_code == 0 and "stalled" in res.output


def test_cli_exploding_flag(tmp_path) -> None:
    path = tmp_path / "e.wgt"
    names = ("grows/w", "steady/w", "nan/w")
    with StatsRecorder(path, {n: (3,) for n in names}, dict.fromkeys(names, True),
                       framework="numpy") as rec:
        w = {n: np.ones(3) for n in names}
        for step in range(6):
            rec.record(w, step=step)
            w = {"grows/w": w["grows/w"] * 2, "steady/w": w["steady/w"] * 1.01,
                 "nan/w": np.full(3, np.nan) if step == 4 else w["nan/w"] + 0.1}
    flags = {t["name"]: t["flags"] for t in _cli_json("track", "show", str(path))["tensors"]}
    assert flags == {"grows/w": ["exploding"], "steady/w": [], "nan/w": ["exploding"]}
    assert 2.0 ** 5 > 10  # the norm grew 32x, past EXPLODING_NORM_GROWTH


@pytest.mark.keras
@pytest.mark.parametrize(("every", "steps"), [("epoch", [0, 4, 8, 12]), (3, [0, 3, 6, 9, 12]),
                                              ("batch", list(range(13)))])
def test_cli_keras_every_epoch_and_every_n(tmp_path, every, steps) -> None:
    keras = pytest.importorskip("keras")
    from weightgraft.keras import WeightTracker

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    path = tmp_path / f"k-{every}.wgt"
    model.fit(rng.random((32, 5), dtype=np.float32), rng.random((32, 3), dtype=np.float32),
              batch_size=8, epochs=3, verbose=0, callbacks=[WeightTracker(path, every=every)])
    data = _cli_json("track", "show", str(path))
    assert data["every"] == str(every) and data["records"] == len(steps)
    run = read_run(path)
    assert [r.step for r in run.records] == steps
    if every == "epoch":
        assert [r.epoch for r in run.records] == [0, 1, 2, 3]
    assert all(t["flags"] == [] for t in data["tensors"])


def test_plot_colour_scale_is_fixed_and_frozen_differs_from_never_changed(tmp_path) -> None:
    """The colour scale adapted per run (a healthy 1e-3 layer took the darkest colour when
    it was the run's smallest), and frozen and cut-off rows were the same grey."""
    pytest.importorskip("matplotlib")
    from matplotlib.colors import Normalize

    from weightgraft.report.track_plot import (LOG_MAX, LOG_MIN, _cells, _colormap,
                                               _layer_series, frozen_spans, plot_run)

    def run_with(rates: dict[str, float], trainable: dict[str, bool]):
        path = tmp_path / f"{len(rates)}-{sum(trainable.values())}.wgt"
        with StatsRecorder(path, {n: (4,) for n in rates}, trainable, framework="numpy",
                           layers={n: n.split("/")[0] for n in rates}) as rec:
            w = {n: np.full(4, 1.0) for n in rates}
            for step in range(4):
                rec.record(w, step=step)
                w = {n: w[n] * (1 + r) for n, r in rates.items()}
        return read_run(path)

    alone = run_with({"ok/w": 1e-3}, {"ok/w": True})
    mixed = run_with({"ok/w": 1e-3, "slow/w": 1e-9, "frozen/w": 0.0, "cut/w": 0.0},
                     {"ok/w": True, "slow/w": True, "frozen/w": False, "cut/w": True})
    cmap, norm = _colormap(), Normalize(LOG_MIN, LOG_MAX)
    images = {}
    for run in (alone, mixed):
        names, rel, _, _ = _layer_series(run)
        cells = _cells(rel, cmap, norm, frozen_spans(run, names))
        images[len(names)] = dict(zip(names, cells, strict=True))
    assert np.allclose(images[1]["ok"][1:], images[4]["ok"][1:])  # same value, same colour
    slow = images[4]["slow"][2]
    assert slow[0] > slow[1] and slow[0] > slow[2]  # below 1e-8: a red
    ok = images[4]["ok"][2]
    assert not ok[0] > ok[1]  # a training layer is not red
    assert not np.allclose(images[4]["frozen"][1:], images[4]["cut"][1:])
    png = plot_run(mixed, tmp_path / "mixed.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
