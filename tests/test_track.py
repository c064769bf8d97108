"""Tracking: run file crash safety, flags for frozen/dead/training layers, both frameworks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from click.testing import CliRunner

from weightgraft.track import StatsRecorder, read_run, summarise


def _flags(run) -> dict[str, tuple[str, ...]]:
    return {s.name: s.flags for s in summarise(run)}


def test_numpy_recorder_statistics(tmp_path) -> None:
    path = tmp_path / "r.wgt"
    a, b = np.array([3.0, 4.0]), np.array([3.0, 4.5])
    with StatsRecorder(path, {"w": (2,)}, {"w": True}, framework="numpy") as rec:
        rec.record({"w": a}, step=0)
        rec.record({"w": b}, step=1, grads={"w": np.array([0.0, 2.0])})
    run = read_run(path)
    s = run.records[1].stats["w"]
    assert s.norm == pytest.approx(np.linalg.norm(b))
    assert s.update_norm == pytest.approx(0.5) and s.max_update == pytest.approx(0.5)
    assert s.rel_update == pytest.approx(0.5 / np.linalg.norm(b))
    assert s.grad_norm == pytest.approx(2.0)


def test_torn_last_line_is_dropped(tmp_path) -> None:
    path = tmp_path / "r.wgt"
    rec = StatsRecorder(path, {"w": (1,)}, {"w": True}, framework="numpy")
    for i in range(3):
        rec.record({"w": np.array([float(i)])}, step=i)
    rec.close()
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # cut the last record mid-line
    run = read_run(path)
    assert [r.step for r in run.records] == [0, 1] and run.dropped_lines == 1


def test_not_a_run_file_is_one_clear_error(tmp_path) -> None:
    from weightgraft.errors import FormatError

    bad = tmp_path / "x.wgt"
    bad.write_text("hello\n")
    with pytest.raises(FormatError, match="not a weightgraft run file"):
        read_run(bad)


@pytest.mark.torch
def test_torch_frozen_cut_off_and_tied(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from weightgraft.torch import WeightTracker

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 6)
            self.first = torch.nn.Linear(6, 6)
            self.hidden = torch.nn.Linear(6, 6)
            self.unused = torch.nn.Linear(6, 6)
            self.out = torch.nn.Linear(6, 10, bias=False)
            self.out.weight = self.emb.weight  # tied

        def forward(self, idx):
            h = self.emb(idx)
            h = torch.relu(self.first(h))
            _ = self.unused(h)  # computed, never reaches the loss
            return self.out(torch.relu(self.hidden(h)))

    model = Net()
    for p in model.first.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tracker = WeightTracker(model, tmp_path / "t.wgt", every="step").attach(opt)
    for _ in range(5):
        idx = torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(model(idx), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tracker.close()
    run = read_run(tmp_path / "t.wgt")
    flags = _flags(run)
    assert len(run.records) == 6  # initial + one per step
    assert "out.weight" not in run.tensors and "emb.weight" in run.tensors  # tied: once
    assert set(flags["first.weight"]) == {"frozen", "never-changed"}
    assert flags["unused.weight"] == ("never-changed",)
    assert flags["hidden.weight"] == () and flags["emb.weight"] == ()
    assert run.records[-1].stats["hidden.weight"].grad_norm > 0


@pytest.mark.keras
def test_keras_frozen_and_cut_off_layers(tmp_path) -> None:
    keras = pytest.importorskip("keras")
    from weightgraft.keras import WeightTracker

    keras.utils.set_random_seed(0)

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.first = keras.layers.Dense(8, activation="relu", name="first")
            self.cut = keras.layers.Dense(4, name="cut")
            self.head = keras.layers.Dense(3, name="head")

        def call(self, x):
            h = self.first(x)
            self.cut(h)  # output unused: no gradient reaches it
            return self.head(h)

    model = Net()
    model(np.zeros((1, 5), "float32"))
    model.first.trainable = False
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(32, 3)).astype("float32")
    path = tmp_path / "k.wgt"
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[WeightTracker(path, every="batch")])
    run = read_run(path)
    flags = _flags(run)
    assert len(run.records) == 1 + 2 * 4
    first_kernel = next(n for n in run.tensors if "first/" in n and "kernel" in n)
    cut_kernel = next(n for n in run.tensors if "cut/" in n and "kernel" in n)
    head_kernel = next(n for n in run.tensors if "head/" in n and "kernel" in n)
    assert set(flags[first_kernel]) == {"frozen", "never-changed"}
    assert flags[cut_kernel] == ("never-changed",)
    assert flags[head_kernel] == ()


@pytest.mark.keras
def test_keras_tracker_agrees_with_diff(tmp_path) -> None:
    keras = pytest.importorskip("keras")
    import weightgraft as wg
    from weightgraft.keras import WeightTracker

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(500, name="d1"),
                              keras.layers.Dense(503, name="d2"), keras.layers.Dense(503, name="d3"),
                              keras.layers.Dense(10, name="out")])
    model.compile(optimizer="adam", loss="mse")
    before = wg.view(model).snapshot()
    rng = np.random.default_rng(0)
    model.fit(rng.random((48, 784), dtype=np.float32), rng.random((48, 10), dtype=np.float32),
              batch_size=16, epochs=2, verbose=0,
              callbacks=[WeightTracker(tmp_path / "m.wgt", every="batch")])
    run = read_run(tmp_path / "m.wgt")
    assert len(run.records) == 7  # the start, then 3 batches x 2 epochs
    d = wg.diff(before, model)
    name = next(n for n in run.tensors if "d1/" in n and "kernel" in n)
    key = next(t.key for t in d.tensors if t.layer == "d1" and t.shape_a == (784, 500))
    # The net change over six Adam steps, as the tracker saw it and as diff measures it.
    tracked = run.records[-1].stats[name].change_norm
    assert tracked > 0
    assert d.tensor(key).norm_delta == pytest.approx(tracked, rel=1e-5)
    summary = next(s for s in summarise(run) if s.name == name)
    assert summary.total_rel_change == pytest.approx(d.tensor(key).rel_change, rel=1e-5)
    # The path length (sum of per-step updates) is longer than the net change.
    path = sum(r.stats[name].update_norm for r in run.records[1:])
    assert path > tracked


_KILLED_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from weightgraft.torch import WeightTracker
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    tracker = WeightTracker(model, sys.argv[1], every="step").attach(opt)
    print("ready", flush=True)
    while True:
        x = torch.randn(32, 64)
        loss = model(x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
""")


@pytest.mark.torch
def test_sigkill_mid_run_leaves_a_readable_file(tmp_path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "killed.wgt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while time.time() < deadline and (not path.exists() or path.stat().st_size < 20_000):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run = read_run(path)
    assert len(run.records) > 5
    steps = [r.step for r in run.records]
    assert steps == list(range(len(steps)))  # every complete record, in order, no gaps


def test_cli_show_and_plot(tmp_path) -> None:
    from weightgraft.cli.main import cli

    path = tmp_path / "r.wgt"
    shapes = {"live/w": (4,), "frozen/w": (4,), "dead/w": (4,)}
    trainable = {"live/w": True, "frozen/w": False, "dead/w": True}
    rng = np.random.default_rng(0)
    w = {k: rng.normal(size=4) for k in shapes}
    with StatsRecorder(path, shapes, trainable, framework="numpy",
                       layers={k: k.split("/")[0] for k in shapes}) as rec:
        for step in range(12):
            rec.record(w, step=step)
            w = dict(w, **{"live/w": w["live/w"] + rng.normal(size=4) * 0.1,
                           "dead/w": w["dead/w"] * (1 + 1e-12)})
    runner = CliRunner()
    res = runner.invoke(cli, ["track", "show", str(path), "--json"])
    assert res.exit_code == 0, res.output
    flags = {t["name"]: t["flags"] for t in json.loads(res.output)["tensors"]}
    assert flags == {"live/w": [], "frozen/w": ["frozen", "never-changed"], "dead/w": ["dead"]}
    res = runner.invoke(cli, ["track", "show", str(path)])
    assert res.exit_code == 0 and "never-changed" in res.output
    pytest.importorskip("matplotlib")
    png = tmp_path / "report.png"
    res = runner.invoke(cli, ["track", "plot", str(path), "-o", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
