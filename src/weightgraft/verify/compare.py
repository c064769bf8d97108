"""Comparing one layer pair: bring both outputs to the same stage and layout, measure.

A Keras ``Dense(activation="relu")`` reports its output after the activation; the PyTorch
twin ``Linear`` followed by ``ReLU`` reports it before. ``stage_output`` picks the output
that is comparable to the other side: the following activation layer's output, or the
other side's activation applied (by name, with Keras 3 semantics) when the model applies
it as a plain function that no layer records.

Example:
    >>> import numpy as np
    >>> measure(np.array([1.0, 2.0]), np.array([1.0, 2.5]), 1e-5, 1e-4)
    (0.5, 0.25, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..checkpoint import Kind
from .alignment import channels_first, following_activation, fused_activation, to_channels_last
from .reference import ACTIVATIONS

RECURRENT = frozenset({Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN})

if TYPE_CHECKING:
    from ..modelview import LayerView, ModelView


def measure(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs difference, that over max |a|, ``max|b - a| <= atol + rtol * max|a|``).

    The relative part scales with the layer's largest value, not each element's: a
    float32 convolution summing thousands of products carries rounding error relative to
    the sum's scale, so an element near zero in a layer whose outputs reach 250 differs by
    about 1e-4 in a correct conversion. A wrong layout (flipped kernel, reordered rows,
    another epsilon) changes elements by a sizeable fraction of the layer's scale.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return float("inf"), float("inf"), False
    if a64.size == 0:
        return 0.0, 0.0, True
    diff = np.abs(a64 - b64)
    if np.isnan(diff).any():
        return float("nan"), float("nan"), False
    max_abs = float(diff.max())
    scale = float(np.max(np.abs(a64)))
    passed = bool(max_abs <= atol + rtol * scale)
    relative = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return max_abs, relative, passed


def native_output(mv: ModelView, lv: LayerView, captured: dict[str, np.ndarray]) -> np.ndarray:
    """``lv``'s captured output moved to channels-last."""
    out = np.asarray(captured[lv.path])
    return to_channels_last(out, channels_first(mv, lv, out.ndim))


def stage_output(mv: ModelView, lv: LayerView, captured: dict[str, np.ndarray],
                 other: LayerView) -> tuple[np.ndarray, str]:
    """``lv``'s output at the same stage as ``other``'s (channels-last), and what was done."""
    out = native_output(mv, lv, captured)
    mine, theirs = fused_activation(lv), fused_activation(other)
    if theirs is None or mine is not None:
        return out, ""
    follow = following_activation(mv, lv)
    if follow is not None and follow.path in captured:
        after = np.asarray(captured[follow.path])
        return to_channels_last(after, channels_first(mv, lv, after.ndim)), (
            f"after {follow.path} ({follow.class_name})")
    function = ACTIVATIONS.get(theirs)
    if function is None:
        return out, f"the other side applies {theirs!r}, which this layer's output lacks"
    return function(out.astype(np.float64)), f"{theirs} applied to {lv.path}'s output"


def last_step_if_needed(layer: LayerView, ya: np.ndarray,
                        yb: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """A recurrent layer that returns only its last state (Keras ``return_sequences=False``)
    against one that returns every step (PyTorch ``nn.GRU``): compare the last step."""
    if layer.kind not in RECURRENT or ya.ndim == yb.ndim or min(ya.ndim, yb.ndim) != 2:
        return ya, yb, ""
    if ya.ndim == 3:
        return ya[:, -1], yb, "last step of a's sequence"
    return ya, yb[:, -1], "last step of b's sequence"
