"""load_model / parse_args: .keras files, module factories, file factories, clear errors."""

from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

from weightgraft import ModelSpecError, load_model
from weightgraft.modelspec import parse_args


def test_parse_args_turns_literals_into_values_and_keeps_words():
    assert parse_args(["weights=None", "classes=5", "input_shape=(32,32,3)",
                       "include_top=False", "alpha=0.5", "pooling=avg", "name='x y'"]) == {
        "weights": None, "classes": 5, "input_shape": (32, 32, 3), "include_top": False,
        "alpha": 0.5, "pooling": "avg", "name": "x y"}


@pytest.mark.parametrize("bad", ["weights", "=3", "two words=1"])
def test_parse_args_rejects_malformed_items(bad):
    with pytest.raises(ModelSpecError, match="name=value"):
        parse_args([bad])


@pytest.mark.parametrize("spec", ["nonsense", "keras.layers:", ":Dense", "a.py:not valid"])
def test_unrecognised_spec_says_what_is_accepted(spec):
    with pytest.raises(ModelSpecError) as err:
        load_model(spec)
    assert "pkg.module:factory" in str(err.value) or "no such file" in str(err.value)


def test_missing_module_and_missing_factory():
    with pytest.raises(ModelSpecError, match="cannot import 'no_such_pkg_xyz.models'"):
        load_model("no_such_pkg_xyz.models:build")
    with pytest.raises(ModelSpecError, match="has no callable 'NoSuchNet'") as err:
        load_model("weightgraft.modelspec:NoSuchNet")
    assert "load_model" in str(err.value)  # lists what the module does offer


@pytest.mark.keras
def test_module_factory_with_arguments():
    keras = pytest.importorskip("keras")
    layer = load_model("keras.layers:Dense", parse_args(["units=3", "use_bias=False"]))
    assert isinstance(layer, keras.layers.Dense)
    assert layer.units == 3 and layer.use_bias is False
    with pytest.raises(ModelSpecError, match="no_such_argument"):
        load_model("keras.layers:Dense", {"units": 3, "no_such_argument": 1})


@pytest.mark.keras
@pytest.mark.slow
def test_keras_applications_factory_builds_the_named_net():
    keras = pytest.importorskip("keras")
    model = load_model("keras.applications:MobileNetV3Small",
                       parse_args(["weights=None", "input_shape=(32,32,3)", "classes=5",
                                   "include_preprocessing=False"]))
    assert isinstance(model, keras.Model)
    assert model.output_shape == (None, 5)


@pytest.mark.keras
def test_python_file_factory(tmp_path):
    keras = pytest.importorskip("keras")
    src = tmp_path / "nets.py"
    src.write_text(textwrap.dedent("""
        import keras

        def build(classes=2, width=4):
            return keras.Sequential([keras.Input((3,)), keras.layers.Dense(width),
                                     keras.layers.Dense(classes)])
    """))
    model = load_model(f"{src}:build", {"classes": 7})
    assert isinstance(model, keras.Model) and model.output_shape == (None, 7)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelSpecError, match="importing it failed: RuntimeError: boom"):
        load_model(f"{broken}:build")
    with pytest.raises(ModelSpecError, match="no such file"):
        load_model(f"{tmp_path / 'absent.py'}:build")


@pytest.mark.keras
def test_keras_file_round_trip_and_safe_mode(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(str(path))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.get_layer("d").kernel),
                                  keras.ops.convert_to_numpy(model.get_layer("d").kernel))
    with pytest.raises(ModelSpecError, match="no --arg"):
        load_model(str(path), {"weights": None})

    # a Lambda layer carries Python code: safe_mode refuses to run it
    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    lam_path = tmp_path / "lambda.keras"
    lam.save(lam_path)
    with pytest.raises(ModelSpecError, match="Keras cannot load it"):
        load_model(str(lam_path))

    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelSpecError, match="junk.keras"):
        load_model(str(tmp_path / "junk.keras"))


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="torchvision not installed")
def test_torchvision_factory():  # pragma: no cover - torchvision absent in the dev venv
    model = load_model("torchvision.models:resnet18", {"weights": None, "num_classes": 3})
    assert model.fc.out_features == 3


# -- Keras backend choice ------------------------------------------------------------------------
BUILD_WITH_KERAS = '''
import keras


def build():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
'''


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="tensorflow is installed, so a keras.json naming it is satisfiable")
def test_a_keras_json_naming_a_missing_backend_falls_back_to_an_installed_one(tmp_path):
    """Keras writes backend 'tensorflow' into ~/.keras/keras.json on first run; without
    TensorFlow, `graft` must still build Keras models (factory files that import keras
    themselves included), and an explicit KERAS_BACKEND naming it gets a clear error."""
    import json
    import os
    import subprocess
    import sys

    home = tmp_path / "keras_home"
    home.mkdir()
    (home / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    (tmp_path / "net.py").write_text(BUILD_WITH_KERAS)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_HOME=str(home), COLUMNS="200")
    graft = [sys.executable, "-m", "weightgraft.cli", "inspect"]
    ok = subprocess.run([*graft, f"{tmp_path / 'net.py'}:build"], env=env, capture_output=True,
                        text=True, timeout=300, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "Total params" in ok.stdout and "10" in ok.stdout

    env["KERAS_BACKEND"] = "tensorflow"
    refused = subprocess.run([*graft, f"{tmp_path / 'net.py'}:build"], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2, refused.stderr
    words = " ".join((refused.stdout + refused.stderr).split())
    assert "importing it failed" in words or "cannot start" in words
