"""The scripts in examples/ run as the docs say, and give the results the docs show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import weightgraft as wg
from weightgraft.track import read_run, summarise

pytestmark = pytest.mark.torch
pytest.importorskip("torch")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=cwd, check=True, timeout=300)


def test_track_example_flags_frozen_and_unused(tmp_path) -> None:
    _run("track_frozen_and_unused.py", tmp_path)
    flags = {s.name: s.flags for s in summarise(read_run(tmp_path / "run.wgt"))}
    assert flags["frozen.weight"] == ("frozen", "never-changed")
    assert flags["unused.weight"] == ("never-changed",)
    assert flags["hidden.weight"] == () and flags["head.bias"] == ()


def test_diff_example_shows_the_frozen_layer_unchanged(tmp_path) -> None:
    _run("diff_frozen_first_layer.py", tmp_path)
    result = wg.diff(tmp_path / "before.pt", tmp_path / "after.pt")
    assert result.layer("0").status == "unchanged"
    assert result.layer("2").status == "changed" and result.layer("4").status == "changed"
