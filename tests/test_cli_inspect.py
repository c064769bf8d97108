"""``graft inspect`` and ``graft convert`` as a user runs them: key lines, JSON, the corpus."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import corpus_dir
from weightgraft.cli.main import cli

# Files in the corpus that are weights; the rest are licences, configs and data.
WEIGHT_SUFFIXES = (".h5", ".pth", ".pt", ".keras", ".safetensors", ".npz", ".npy", ".onnx")
DATA_FILES = {"digits_inputs_and_outputs.h5"}  # labelled digits, not a model


def _corpus_files() -> list[Path]:
    root = corpus_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def _run(*args: str):  # noqa: ANN202
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def cnn_file(tmp_path, rng) -> tuple[Path, dict[str, np.ndarray]]:
    """A torch-style CNN state dict saved by the safetensors library itself."""
    from safetensors.numpy import save_file

    arrays = {
        "features.0.weight": rng.standard_normal((64, 3, 3, 3)).astype("float32"),
        "features.0.bias": rng.standard_normal(64).astype("float32"),
        "features.2.weight": rng.standard_normal((128, 64, 3, 3)).astype("float32"),
        "features.2.bias": rng.standard_normal(128).astype("float32"),
        "classifier.weight": rng.standard_normal((10, 128)).astype("float32"),
        "classifier.bias": rng.standard_normal(10).astype("float32"),
    }
    path = tmp_path / "cnn.safetensors"
    save_file(arrays, str(path), metadata={"format": "pt"})
    return path, arrays


def test_inspect_shows_header_formula_and_total(cnn_file, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # the report must read in an 80-column terminal
    path, arrays = cnn_file
    result = _run("inspect", str(path))
    assert result.exit_code == 0, result.output
    out = result.output
    total = sum(a.size for a in arrays.values())
    assert "format     safetensors" in out or "format      safetensors" in out
    assert "torch" in out  # the convention, from __metadata__ format='pt'
    # the formula of the issue's own example layer, from the file's shapes
    assert "128x64x3x3 + 128 = 73,856" in out
    assert math.prod((128, 64, 3, 3)) + 128 == 73_856
    assert f"{total:,}" in [w for line in out.splitlines() if "Total params" in line
                            for w in line.split()]
    assert all(len(line) <= 80 for line in out.splitlines()), out


def test_inspect_json_parses_and_has_the_totals(cnn_file) -> None:
    path, arrays = cnn_file
    result = _run("inspect", str(path), "--json")
    data = json.loads(result.output)
    assert data["totals"]["total"] == sum(a.size for a in arrays.values()) == data["total_params"]
    assert data["header"]["format"] == "safetensors"
    shapes = {t["key"]: tuple(t["shape"]) for layer in data["layers"] for t in layer["tensors"]}
    assert shapes == {k: a.shape for k, a in arrays.items()}


def test_tensors_and_filter(cnn_file) -> None:
    path, arrays = cnn_file
    out = _run("inspect", str(path), "--tensors", "--filter", "*.bias").output
    listed = [k for k in arrays if k in out]
    assert listed == [k for k in arrays if k.endswith(".bias")]
    assert "(128, 64, 3, 3)" not in out
    data = json.loads(_run("inspect", str(path), "--filter", "features.2*", "--json").output)
    assert data["totals"]["total"] == 73_856


def test_missing_file_is_one_clean_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nope.pt")])
    assert result.exit_code == 2
    assert "nope.pt" in result.output and "Traceback" not in result.output
    as_json = CliRunner().invoke(cli, ["inspect", str(tmp_path / "nope.pt"), "--json"])
    assert json.loads(as_json.output)["error"] == "FormatError"


def test_arg_with_a_plain_file_is_refused(cnn_file) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(cnn_file[0]), "--arg", "weights=None"])
    assert result.exit_code == 2 and "model" in result.output


def test_convert_command_writes_and_reports(cnn_file, tmp_path) -> None:
    from safetensors.numpy import load_file

    path, arrays = cnn_file
    out = tmp_path / "copy.safetensors"
    result = _run("convert", str(path), "-o", str(out), "--check", "--json")
    data = json.loads(result.output)
    assert data["tensors"] == len(arrays) and data["checked"] is True
    back = load_file(str(out))
    assert all(np.array_equal(back[k], a) for k, a in arrays.items())


@pytest.mark.torch
def test_inspect_a_model_factory_file(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    for module in ("weightgraft.modelspec", "weightgraft.frameworks.torch"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not there yet")
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build(width=4):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, int(width)), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(int(width), 3))\n"
    )
    result = _run("inspect", f"{tmp_path / 'net.py'}:build", "--arg", "width=5", "--json")
    data = json.loads(result.output)
    own = sum(p.numel() for p in torch.nn.Sequential(torch.nn.Linear(6, 5),
                                                     torch.nn.Linear(5, 3)).parameters())
    assert data["totals"]["total"] == own == 6 * 5 + 5 + 5 * 3 + 3
    assert data["model"]["layer_objects"] >= 2


@pytest.mark.torch
def test_inspect_input_shape_for_a_model_no_probe_guess_fits(tmp_path) -> None:
    """The probe error tells users to pass --input-shape; inspect must then accept it."""
    torch = pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.MaxPool2d(2),\n"
        "                               torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
    )
    spec = f"{tmp_path / 'net.py'}:build"
    guessed = CliRunner().invoke(cli, ["inspect", spec])
    assert guessed.exit_code == 2 and "--input-shape" in " ".join(guessed.output.split())
    result = _run("inspect", spec, "--input-shape", "2,6,6", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    own = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Linear(16, 3))
    assert data["totals"]["total"] == sum(p.numel() for p in own.parameters()) == 2 * 4 * 9 + 4 + 51
    assert data["model"]["weighted_depth"] == 2
    refused = CliRunner().invoke(cli, ["inspect", spec, "--input-shape", "2,x"])
    assert refused.exit_code == 2 and "not a shape" in refused.output


# -- the real-world corpus ---------------------------------------------------------------

@pytest.mark.corpus
@pytest.mark.parametrize("path", _corpus_files(), ids=lambda p: p.name)
def test_every_corpus_file_inspects(corpus, path: Path) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--as-file", str(path)])
    if path.name in DATA_FILES and result.exit_code == 2:
        assert "Traceback" not in result.output  # a clean refusal is fine for non-model data
        return
    if result.exit_code == 2 and "no reader recognises" in " ".join(result.output.split()):
        pytest.skip(f"the reader for {path.name} is not there yet")
    assert result.exit_code == 0, result.output
    assert "Total params" in result.output


@pytest.mark.corpus
def test_theano_mnist_says_theano_era_first(corpus) -> None:
    if importlib.util.find_spec("weightgraft.formats.keras_legacy_h5") is None:
        pytest.skip("weightgraft.formats.keras_legacy_h5 (the Keras 1/2 reader) is not there yet")
    path = corpus / "keras1-mnist-cnn" / "mnist_cnn_th_keras_1_weights.h5"
    out = _run("inspect", str(path)).output
    first = " ".join(out.splitlines()[:3])
    assert "Theano-era" in first and "'th'" in first
    assert "(32, 1, 3, 3)" in out  # kernels stored (out, in, rows, cols)
    data = json.loads(_run("inspect", str(path), "--json").output)
    assert data["header"]["theano_era"] is True and data["header"]["convention"] == "theano"
    # Conv 1x32x3x3 + Conv 32x32x3x3 + Dense 4608x128 + Dense 128x10, with biases
    assert data["totals"]["total"] == (288 + 32) + (9216 + 32) + (589_824 + 128) + (1280 + 10)


@pytest.mark.torch
def test_inspect_a_model_with_weights_from_a_file(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    for module in ("weightgraft.modelspec", "weightgraft.transplant"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not there yet")
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(4, 3))\n"
    )
    torch.manual_seed(0)
    donor = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    torch.save(donor.state_dict(), tmp_path / "w.pt")
    out = _run("inspect", f"{tmp_path / 'net.py'}:build", "--weights", str(tmp_path / "w.pt"))
    words = " ".join(out.output.replace("│", " ").split())  # unfold the header panel's lines
    assert "weights loaded from" in words
    assert "4 tensors copied" in words, out.output


@pytest.mark.keras
def test_two_keras_models_on_one_base_report_shared_layers() -> None:
    from weightgraft import shared_layers
    from weightgraft.frameworks import import_keras

    keras = import_keras()
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="trunk")])
    a = keras.Sequential([base, keras.layers.Dense(2, name="head_a")])
    b = keras.Sequential([base, keras.layers.Dense(5, name="head_b")])
    shared = shared_layers(a, b)
    assert [s.num_params for s in shared] == [4 * 3 + 3]
    assert all("trunk" in s.path_a and "trunk" in s.path_b for s in shared)


@pytest.mark.keras
def test_a_keras_file_is_inspected_as_a_live_model_with_output_shapes(tmp_path) -> None:
    from weightgraft.frameworks import import_keras

    keras = import_keras()
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="hidden"),
                              keras.layers.Dense(2, name="out")])
    model.save(tmp_path / "m.keras")
    data = json.loads(_run("inspect", str(tmp_path / "m.keras"), "--json").output)
    assert data["totals"]["total"] == model.count_params() == 5 * 3 + 3 + 3 * 2 + 2
    shapes = {layer["name"].rsplit("/", 1)[-1]: layer["output_shapes"] for layer in data["layers"]}
    assert shapes["hidden"][0][-1] == 3 and shapes["out"][0][-1] == 2
    assert data["model"]["weighted_depth"] == 2
    as_file = json.loads(_run("inspect", str(tmp_path / "m.keras"), "--as-file", "--json").output)
    assert as_file["model"] is None and as_file["totals"]["total"] == model.count_params()


@pytest.mark.corpus
def test_a_data_only_hdf5_file_showed_an_empty_table(corpus) -> None:
    import h5py

    path = corpus / "keras1-mnist-cnn" / "digits_inputs_and_outputs.h5"
    datasets: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:  # the reference: every dataset, read with h5py alone
        f.visititems(lambda name, obj: datasets.__setitem__(name, obj.shape)
                     if isinstance(obj, h5py.Dataset) else None)
    assert "inputs/dense_input_1" in datasets
    result = _run("inspect", str(path))
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    for key, shape in datasets.items():
        assert key in rows, key
        assert str(shape) in rows[key] and "float32" in rows[key]
    assert "no model weights" in " ".join(result.output.split()).lower()
    tensors = _run("inspect", str(path), "--tensors").output
    assert "other (other)" not in tensors and "not a model weight" in tensors


def _banner(out: str) -> str:
    """The lines above the header panel, joined (the banner may wrap)."""
    lines = []
    for line in out.splitlines():
        if line.startswith("╭"):
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def _layer_classes(path: Path) -> set[str]:
    """Layer classes from the file's own model_config, read with h5py and json alone."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)["config"]
    layers = config["layers"] if isinstance(config, dict) else config
    found = set()
    for layer in layers:
        found.add(layer["class_name"])
        inner = layer["config"].get("layer")  # Bidirectional wraps its LSTM
        if isinstance(inner, dict):
            found.add(inner["class_name"])
    return found


@pytest.mark.corpus
def test_a_conv_free_theano_file_was_told_to_flip_its_conv_kernels(corpus) -> None:
    root = corpus / "legacy-keras-layers"
    for name in ("lstm_theano_1.h5", "bidirectional_lstm_theano_1.h5"):
        assert not any("Conv" in c for c in _layer_classes(root / name))
        banner = _banner(_run("inspect", str(root / name)).output)
        assert banner.startswith("! Theano-era file"), banner
        assert "flip them" not in banner and "are flipped" not in banner, banner
        assert "i, c, f, o" in banner and "hard_sigmoid" in banner, banner
    banner = _banner(_run("inspect", str(root / "dense_theano_1.h5")).output)
    assert _layer_classes(root / "dense_theano_1.h5") & {"Dense"}
    assert "flip them" not in banner and "no layout change" in banner, banner
    # a file that has conv kernels still gets the warning that matters for it
    assert any("Conv" in c for c in _layer_classes(root / "conv2d_theano_2.h5"))
    banner = _banner(_run("inspect", str(root / "conv2d_theano_2.h5")).output)
    assert "conv kernels are flipped" in banner and "flip them" in banner
    data = json.loads(_run("inspect", str(root / "lstm_theano_1.h5"), "--json").output)
    assert data["header"]["theano_concerns"] == ["keras1_lstm_gates", "hard_sigmoid"]


def test_a_filter_matching_nothing_exited_0_with_an_empty_table(cnn_file) -> None:
    import fnmatch

    path, arrays = cnn_file
    assert not any(fnmatch.fnmatchcase(k, "dense*") for k in arrays)  # the reference
    result = CliRunner().invoke(cli, ["inspect", str(path), "--filter", "dense*"])
    assert result.exit_code == 1  # like grep
    line = " ".join(result.stderr.split())
    assert f"no layer or tensor matches 'dense*'; {len(arrays)} tensors in the file" in line
    assert "Total params" not in result.stdout  # no empty table to puzzle over
    as_json = CliRunner().invoke(cli, ["inspect", str(path), "--filter", "dense*", "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)  # stdout stays one valid JSON document
    assert data["layers"] == [] and data["totals"]["total"] == 0
    assert data["tensors_in_source"] == len(arrays)
    # a filter that matches still exits 0
    assert CliRunner().invoke(cli, ["inspect", str(path), "--filter", "*bias"]).exit_code == 0


@pytest.mark.corpus
def test_params_column_split_formulas_mid_term_at_80_columns(corpus, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = _run("inspect", str(corpus / "crepe-tiny" / "tiny.pth")).output
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    # conv1 is (128, 1, 512, 1) + (128,) in the PyTorch port (corpus README)
    total = 128 * 1 * 512 * 1 + 128
    i = next(n for n, line in enumerate(lines) if line.startswith("conv1 "))
    cell = " ".join(lines[i].split()[2:] + lines[i + 1].split())
    assert cell == f"128x1x512x1 + 128 = {total:,}"
    assert lines[i + 1].split() == ["=", f"{total:,}"]  # "= N" stays together
    for line in lines:  # no line of the table ends inside a formula's term or on an operator
        assert not line.rstrip().endswith((" =", " +")), line


def test_small_conversions_printed_0_mb_at_0_mb_per_s(tmp_path) -> None:
    import re

    from safetensors.numpy import save_file

    arrays = {"w": np.arange(150, dtype="float32")}  # 600 bytes
    save_file(arrays, str(tmp_path / "small.safetensors"))
    result = _run("convert", str(tmp_path / "small.safetensors"), "-o",
                  str(tmp_path / "small.npz"))
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    nbytes = sum(a.nbytes for a in arrays.values())
    assert nbytes == 600 and f"{nbytes} B in " in out, out
    assert "0.0 MB" not in out and "(0 MB/s)" not in out, out
    rate = re.search(r"\(([\d.,]+) (B|KB|MB|GB|TB)/s\)", out)
    assert rate is not None and float(rate.group(1).replace(",", "")) > 0, out
