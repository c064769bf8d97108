"""Adapters for live models. Each module imports its framework, so import them only when used.

``import_keras()`` and ``import_torch()`` are the only ways weightgraft imports a framework:
they give an install hint when it is missing, and pick Keras's backend sensibly.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from ..errors import require


def import_torch(purpose: str = "this operation") -> Any:
    """Import torch, or raise ``MissingDependencyError`` naming the ``torch`` extra."""
    return require("torch", "torch", purpose)


def import_keras(purpose: str = "this operation") -> Any:
    """Import Keras 3, choosing a backend that is installed when none is configured.

    Keras defaults to TensorFlow; when ``KERAS_BACKEND`` is unset, no Keras config names a
    backend, and TensorFlow is absent, weightgraft picks torch (then jax) instead of failing.
    """
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        config = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")),
                              "keras.json")
        if not os.path.exists(config) and importlib.util.find_spec("tensorflow") is None:
            for backend in ("torch", "jax"):
                if importlib.util.find_spec(backend) is not None:
                    os.environ["KERAS_BACKEND"] = backend
                    break
    return require("keras", "keras", purpose)
