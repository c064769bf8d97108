"""Build a live model from a command-line spec: a ``.keras`` file or a factory.

Three spellings are understood:

- ``model.keras``: loaded with ``keras.saving.load_model(..., safe_mode=True)`` (no lambdas
  or custom code from the file run);
- ``pkg.module:factory`` (``keras.applications:ResNet50``, ``torchvision.models:resnet18``):
  the module is imported and ``factory(**args)`` called;
- ``path/to/file.py:factory``: the Python file is imported as a module (this runs *your*
  code, which you named on the command line) and ``factory(**args)`` called.

``parse_args`` turns ``--arg name=value`` strings into keyword arguments.

Example:
    >>> parse_args(["weights=None", "classes=5", "input_shape=(32,32,3)", "name=tiny"])
    {'weights': None, 'classes': 5, 'input_shape': (32, 32, 3), 'name': 'tiny'}
    >>> model = load_model("keras.applications:MobileNetV2", {"weights": None})  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ModelSpecError

__all__ = ["load_model", "parse_args"]


def parse_args(items: Iterable[str]) -> dict[str, Any]:
    """``["name=value", ...]`` -> keyword arguments; values are Python literals where they
    parse as one (``None``, ``True``, ``5``, ``(32, 32, 3)``, ``'x'``), else plain strings.

    Example:
        >>> parse_args(["include_top=False", "pooling=avg"])
        {'include_top': False, 'pooling': 'avg'}
    """
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise ModelSpecError(
                f"model argument {item!r} is not of the form name=value",
                expected="name=value, e.g. weights=None or input_shape=(32,32,3)",
                fix="write each argument as --arg name=value",
            )
        try:
            out[name] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[name] = text  # a bare word such as avg or imagenet
    return out


def load_model(spec: str | os.PathLike[str], args: Mapping[str, Any] | None = None) -> Any:
    """Build the live model a spec names; see the module docstring for the spellings.

    Example:
        >>> m = load_model("keras.applications:ResNet50", {"weights": None})  # doctest: +SKIP
        >>> m = load_model("examples/nets.py:build_cnn", {"classes": 3})      # doctest: +SKIP
    """
    text = os.fspath(spec)
    kwargs = dict(args or {})
    if text.endswith(".keras") and ":" not in Path(text).name:
        if kwargs:
            raise ModelSpecError(
                f"{text}: a saved .keras model takes no --arg values (got {sorted(kwargs)})",
                expected="arguments only for a factory such as keras.applications:ResNet50",
                fix="drop the --arg options, or name a factory instead of the file",
            )
        return _load_keras_file(text)
    target, sep, attr = text.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ModelSpecError(
            f"cannot tell what model {text!r} names",
            expected="a .keras file, pkg.module:factory or path/to/file.py:factory",
            fix="for example keras.applications:ResNet50 --arg weights=None",
        )
    module = _import_file(target) if target.endswith(".py") else _import_module(target, text)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        public = sorted(n for n in dir(module) if not n.startswith("_")
                        and callable(getattr(module, n, None)))[:12]
        raise ModelSpecError(
            f"{target} has no callable {attr!r}",
            expected="the name of a function or class that builds the model",
            fix="pick one of: " + ", ".join(public) if public else "check the name",
        )
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as exc:  # bad or unknown arguments, in factory's words
        raise ModelSpecError(
            f"{text}({_show(kwargs)}) failed: {exc}",
            expected="arguments the factory accepts",
            fix="check the --arg names against the factory's signature",
        ) from exc


def _load_keras_file(path: str) -> Any:
    if not os.path.isfile(path):
        raise ModelSpecError(f"{path}: no such file", expected="a saved .keras model",
                             fix="check the path")
    from .frameworks import import_keras

    keras = import_keras("loading a .keras model")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many kinds here; give one clear error instead
        raise ModelSpecError(
            f"{path}: Keras cannot load it: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            path=None, expected="a .keras archive saved by Keras 3 (model.save('m.keras'))",
            fix="for an .h5 or .weights.h5 file use graft inspect on the file itself; for "
                "custom layers use a factory spec (file.py:build) that defines them",
        ) from exc


def _import_module(name: str, spec: str) -> Any:
    from .frameworks import choose_keras_backend, import_keras

    if name.split(".")[0] == "keras":
        import_keras(f"building {spec}")
    choose_keras_backend()  # the module may import keras itself
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import {name!r} for {spec!r}: {exc}",
            expected="an installed Python module",
            fix=f"install the package that provides {name.split('.')[0]}, or check the spelling",
        ) from exc


def _import_file(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise ModelSpecError(f"{path}: no such file", expected="a Python file defining the model",
                             fix="check the path (relative paths are from the current folder)")
    name = f"weightgraft_user_{abs(hash(str(file.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(name, file)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover - .py always loads
        raise ModelSpecError(f"{path}: cannot be imported", expected="a Python source file")
    module = importlib.util.module_from_spec(loader_spec)
    from .frameworks import choose_keras_backend

    choose_keras_backend()  # the file may import keras: give it an installed backend
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelSpecError(
            f"{path}: importing it failed: {type(exc).__name__}: {exc}",
            expected="a Python file that imports cleanly",
            fix="run it with python first to see the full error",
        ) from exc
    return module


def _show(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
