"""Adapters for live models. Each module imports its framework, so import them only when used.

``import_keras()`` and ``import_torch()`` are the only ways weightgraft imports a framework:
they give an install hint when it is missing, and pick Keras's backend sensibly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any

from ..errors import MissingDependencyError, WeightgraftError, require


def import_torch(purpose: str = "this operation") -> Any:
    """Import torch, or raise ``MissingDependencyError`` naming the ``torch`` extra."""
    return require("torch", "torch", purpose)


# Keras backend name -> the module it needs ("numpy" needs nothing beyond numpy).
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}


def configured_keras_backend() -> tuple[str, str]:
    """The backend Keras would use, and where that comes from.

    ``KERAS_BACKEND`` wins, then ``keras.json`` in ``KERAS_HOME`` (default ``~/.keras``), then
    Keras's own default, TensorFlow.
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    config = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")),
                          "keras.json")
    try:
        with open(config, encoding="utf-8") as fh:
            backend = json.load(fh).get("backend")
        if isinstance(backend, str) and backend:
            return backend, config
    except (OSError, ValueError, AttributeError):
        pass
    return "tensorflow", "Keras's default"


def choose_keras_backend() -> None:
    """Before Keras is first imported (by weightgraft or by a user's factory file): when
    ``KERAS_BACKEND`` is unset and the configured backend is not installed, set it to an
    installed one (torch, then jax, then tensorflow). Imports nothing."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return
    backend, _ = configured_keras_backend()
    if importlib.util.find_spec(_BACKEND_MODULES.get(backend, backend)) is None:
        for candidate in ("torch", "jax", "tensorflow"):
            if importlib.util.find_spec(candidate) is not None:
                os.environ["KERAS_BACKEND"] = candidate
                return


def import_keras(purpose: str = "this operation") -> Any:
    """Import Keras 3, choosing a backend that is installed when the configured one is not.

    Keras defaults to TensorFlow and writes that into ``~/.keras/keras.json`` the first time
    it runs. When ``KERAS_BACKEND`` is unset and the backend so configured is not installed,
    weightgraft sets ``KERAS_BACKEND`` to torch (then jax, then tensorflow) for this process
    instead of failing. An explicit ``KERAS_BACKEND`` is never overridden.
    """
    choose_keras_backend()
    try:
        return require("keras", "keras", purpose)
    except MissingDependencyError:
        if importlib.util.find_spec("keras") is None:
            raise
        # Keras is there; its backend is not.
        backend, source = configured_keras_backend()
        raise WeightgraftError(
            f"{purpose} needs Keras, which is installed but cannot start: its backend "
            f"{backend!r} (from {source}) is not installed",
            fix="install that backend, or choose an installed one, e.g. "
                "KERAS_BACKEND=torch (pip install 'weightgraft[torch]')") from None
