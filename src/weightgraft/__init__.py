"""weightgraft: see, move, convert and trust neural-network weights across Keras and PyTorch.

``import weightgraft`` imports neither torch nor keras; the functions that need a framework
import it on first use and say how to install it when it is missing.

Example:
    >>> import weightgraft as wg                          # doctest: +SKIP
    >>> ck = wg.open_checkpoint("mnist_cnn.h5")           # doctest: +SKIP
    >>> print(wg.inspect(ck).total_params)                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .checkpoint import Checkpoint, Convention, Group, Kind, LayerInfo, Role, TensorEntry
from .errors import (
    FormatError,
    LayoutError,
    MissingDependencyError,
    ModelSpecError,
    PlanError,
    ShapeMismatchError,
    UnknownFormatError,
    UnsafeFileError,
    VerificationError,
    WeightgraftError,
)
from .formats import open_checkpoint, write_checkpoint
from .modelview import InputSpec, LayerView, ModelView, Slot, view

__version__ = "0.1.0"

# Public names whose modules are imported on first use (kept light at import time).
_LAZY = {
    "inspect": "weightgraft.inspection",
    "Inspection": "weightgraft.inspection",
    "load_model": "weightgraft.modelspec",
    "shared_layers": "weightgraft.inspection",
    "match": "weightgraft.match",
    "Plan": "weightgraft.match",
    "transplant": "weightgraft.transplant",
    "Report": "weightgraft.transplant",
    "verify": "weightgraft.verify",
    "VerifyResult": "weightgraft.verify",
    "explain": "weightgraft.provenance",
    "diff": "weightgraft.diff",
    "DiffResult": "weightgraft.diff",
    "convert": "weightgraft.convert",
}

__all__ = [
    "Checkpoint", "Convention", "Group", "Kind", "LayerInfo", "Role", "TensorEntry",
    "FormatError", "LayoutError", "MissingDependencyError", "ModelSpecError", "PlanError",
    "ShapeMismatchError", "UnknownFormatError", "UnsafeFileError", "VerificationError",
    "WeightgraftError", "open_checkpoint", "write_checkpoint", "InputSpec", "LayerView",
    "ModelView", "Slot", "view", "__version__", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightgraft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``weightgraft.match`` (and transplant, verify, diff, convert) the *function*.

    Importing a submodule sets an attribute of the same name on its parent package; without
    this guard, ``import weightgraft.transplant`` anywhere would make ``weightgraft.transplant``
    the module, and ``weightgraft.transplant(...)`` would fail with "module is not callable".
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
