"""Layout conversions between conventions (``keras``, ``torch``, ``theano``).

Per tensor: ``convert_tensor`` / ``tensor_transform`` (a ``Transform``). Per layer, for
weights that do not map one-to-one (recurrent biases, Keras 1 per-gate arrays, packed
attention projections, separable convolutions): ``convert_layer`` (a ``LayerConversion``).
``roles_in`` says which roles a layer holds in a convention. See docs/layouts.md.

Example:
    >>> import numpy as np
    >>> from weightgraft.layouts import convert_tensor
    >>> convert_tensor(np.zeros((3, 3, 5, 6)), "conv2d", "kernel", "keras", "torch").shape
    (6, 5, 3, 3)
"""

from __future__ import annotations

from . import tensor_rules as _tensor_rules  # noqa: F401  (registers the built-in rules)
from .layer_rules import LayerConversion, convert_layer, roles_in
from .ops import Flip, MergeAxes, Op, ReorderBlocks, SplitAxis, Transpose
from .registry import (
    CANONICAL,
    Rule,
    Transform,
    convert_tensor,
    default_flatten_order,
    dim_ordering,
    find_rule,
    register,
    rules,
    side_context,
    tensor_transform,
    unregister,
)

__all__ = [
    "CANONICAL", "Flip", "LayerConversion", "MergeAxes", "Op", "ReorderBlocks", "Rule",
    "SplitAxis", "Transform", "Transpose", "convert_layer", "convert_tensor",
    "default_flatten_order", "dim_ordering", "find_rule", "register", "roles_in", "rules",
    "side_context", "tensor_transform", "unregister",
]
