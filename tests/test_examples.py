"""The scripts in examples/ run as the docs say, and give the results the docs show."""

from __future__ import annotations

import json
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
    assert flags["dead.weight"] == ("dead",)
    assert flags["hidden.weight"] == () and flags["head.bias"] == ()


def _flat(text: str) -> str:
    """CLI output with rich's line folding undone: the terminal width (``COLUMNS``) decides
    where long lines break, so assertions read the words, not the layout."""
    return " ".join(text.split())


def test_diff_example_shows_the_frozen_layer_unchanged(tmp_path) -> None:
    _run("diff_frozen_first_layer.py", tmp_path)
    result = wg.diff(tmp_path / "before.pt", tmp_path / "after.pt")
    assert result.layer("0").status == "unchanged"
    assert result.layer("2").status == "changed" and result.layer("4").status == "changed"


@pytest.mark.corpus
@pytest.mark.keras
def test_readme_mnist_commands(corpus, tmp_path) -> None:
    """The README's transplant, verify and explain commands, as a user types them."""
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    src = str(corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5")
    models = str(EXAMPLES / "mnist_models.py")
    runner = CliRunner()
    for factory, out in (("keras_mnist", "mnist.weights.h5"), ("torch_mnist", "mnist.pt")):
        res = runner.invoke(cli, ["transplant", src, "--into", f"{models}:{factory}",
                                  "-o", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        assert "0 unmatched; 600,810 of 600,810 parameters filled" in _flat(res.output)
    res = runner.invoke(cli, ["verify", f"{models}:keras_mnist", f"{models}:torch_mnist",
                              "--weights-a", str(tmp_path / "mnist.weights.h5"),
                              "--weights-b", str(tmp_path / "mnist.pt")])
    assert res.exit_code == 0 and "PASS" in res.output, res.output
    res = runner.invoke(cli, ["explain", str(tmp_path / "mnist.pt"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["counts"] == {"recorded": 8}


def test_new_head_example_strict_then_allowed(tmp_path) -> None:
    """The README's transfer-learning case: strict failure naming head*, then success with
    the backbone copied and the head left at its initialisation."""
    import torch
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    _run("new_head.py", tmp_path)
    src = str(tmp_path / "out" / "pretrained_1000.pt")
    target = f"{EXAMPLES / 'new_head.py'}:five_classes"
    out = str(tmp_path / "five.pt")
    runner = CliRunner()
    res = runner.invoke(cli, ["transplant", src, "--into", target, "-o", out])
    assert res.exit_code == 2
    assert "--allow-missing 'head*'" in _flat(res.output)
    assert "--allow-unused 'head*'" in _flat(res.output)
    assert not (tmp_path / "five.pt").exists()
    res = runner.invoke(cli, ["transplant", src, "--into", target, "-o", out,
                              "--allow-missing", "head*", "--allow-unused", "head*"])
    assert res.exit_code == 0, res.output
    got = torch.load(out, weights_only=True)
    want = torch.load(src, weights_only=True)
    assert torch.equal(got["features.3.weight"], want["features.3.weight"])
    assert got["head.weight"].shape == (5, 32)


@pytest.mark.corpus
@pytest.mark.keras
def test_transplant_doc_transfer_learning_commands(corpus, tmp_path) -> None:
    """docs/transplant.md: the 5-class variant is refused naming dense_1*/dense_2* and why
    they did not pair, then accepted with those patterns, the head left as it was built."""
    from click.testing import CliRunner

    from weightgraft.cli.main import cli

    src = str(corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5")
    spec = f"{EXAMPLES / 'mnist_models.py'}:keras_mnist"
    out = str(tmp_path / "ft.weights.h5")
    import keras

    runner = CliRunner()
    keras.backend.clear_session()  # layer names as in a fresh `graft` process
    refused = runner.invoke(cli, ["transplant", src, "--into", spec, "--arg", "classes=5",
                                  "-o", out])
    words = _flat(refused.output)
    assert refused.exit_code == 2
    assert "--allow-missing 'dense_1*'" in words and "--allow-unused 'dense_2*'" in words
    assert "not paired: dense_1 <- dense_2: shapes differ" in words
    assert not (tmp_path / "ft.weights.h5").exists()
    keras.backend.clear_session()
    ok = runner.invoke(cli, ["transplant", src, "--into", spec, "--arg", "classes=5",
                             "--allow-missing", "dense_1*", "--allow-unused", "dense_2*",
                             "-o", out, "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    status = {s["key"]: s["status"] for s in data["slots"]}
    assert status["dense_1/kernel"] == status["dense_1/bias"] == "initial"
    assert status["conv2d/kernel"] == "converted"
