"""Make two models comparable: shared probe inputs, one activation layout, paired layers.

Everything is compared channels-last (sequences stay (batch, time, features)): a PyTorch
feature map (N, C, H, W) is moved to (N, H, W, C) before it meets Keras's. Layers are paired
by a Plan's assignments, by explicit ``layer_pairs``, or by aligning both models' weighted
layers in execution order by kind (a longest common subsequence, so one inserted layer does
not shift every pair after it).

Example:
    >>> import numpy as np
    >>> to_channels_last(np.zeros((2, 3, 5, 7)), True).shape
    (2, 5, 7, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Kind
from ..errors import WeightgraftError
from ..frameworks.shared import probe_array
from .reference import activation_name

if TYPE_CHECKING:
    from ..modelview import LayerView, ModelView

#: Kinds whose outputs keep features last in every framework (no channel axis to move).
FEATURES_LAST = frozenset({Kind.DENSE, Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN, Kind.EMBEDDING,
                           Kind.LAYER_NORM, Kind.MULTI_HEAD_ATTENTION})

#: Weightless layers that only apply an activation (Keras ``Activation``, torch modules).
ACTIVATION_CLASSES = frozenset({
    "Activation", "ReLU", "ReLU6", "Sigmoid", "Tanh", "Hardsigmoid", "Hardswish", "SiLU",
    "GELU", "ELU", "SELU", "LeakyReLU", "Softmax", "Softplus", "Softsign", "Mish", "Hardtanh",
})

DEFAULT_LENGTH = 8  # for input axes of unknown size (sequence length)


def channels_first(mv: ModelView, lv: LayerView | None, rank: int) -> bool:
    """Whether this layer's output (of ``rank`` with batch) has its channels on axis 1."""
    if rank < 3 or lv is None:
        return False
    fmt = lv.config.get("data_format")
    if fmt in ("channels_first", "channels_last"):
        return fmt == "channels_first"
    if lv.kind in FEATURES_LAST:
        return False
    if mv.framework == "torch":
        return True
    axis = lv.config.get("axis")
    return lv.kind is Kind.BATCH_NORM and axis in (1, [1])


def to_channels_last(array: np.ndarray, is_channels_first: bool) -> np.ndarray:
    """Move axis 1 to the end when the array is channels-first (and has a spatial axis)."""
    array = np.asarray(array)
    return np.moveaxis(array, 1, -1) if is_channels_first and array.ndim >= 3 else array


def from_channels_last(array: np.ndarray, is_channels_first: bool) -> np.ndarray:
    """The inverse of ``to_channels_last``."""
    array = np.asarray(array)
    return np.moveaxis(array, -1, 1) if is_channels_first and array.ndim >= 3 else array


# -- inputs ---------------------------------------------------------------------------------
def _spec_first(spec: Any) -> bool:
    return getattr(spec, "data_format", None) == "channels_first" and len(spec.shape) >= 2


def _embedding_high(views: Sequence[ModelView]) -> int:
    sizes = [int(lv.config.get("input_dim") or lv.config.get("num_embeddings") or 0)
             for mv in views for lv in mv.layers if lv.kind is Kind.EMBEDDING]
    return min([s for s in sizes if s > 0], default=10)


def load_inputs(inputs: Any) -> list[np.ndarray]:
    """User inputs as a list of arrays: a ``.npy``/``.npz`` path, an array, or a list of them."""
    if isinstance(inputs, str | os.PathLike):
        path = os.fspath(inputs)
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WeightgraftError(f"cannot read inputs: {exc}", path=path,
                                   expected="a .npy or .npz file of numeric arrays",
                                   fix="save inputs with numpy.save(path, array)") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return [np.asarray(loaded[k]) for k in loaded.files]
        return [np.asarray(loaded)]
    if isinstance(inputs, np.ndarray) or hasattr(inputs, "__array__"):
        return [np.asarray(inputs)]
    return [a for item in inputs for a in load_inputs(item)]


def probe_inputs(view_a: ModelView, view_b: ModelView, inputs: Any, seed: int,
                 batch: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The same data for both models, each in its own layout.

    Generated inputs are seeded standard-normal (integers for embeddings), shaped from a's
    input specs, with axes of unknown size taken from b or set to ``DEFAULT_LENGTH``. User
    inputs are taken to be in a's layout.
    """
    specs_a, specs_b = list(view_a.inputs), list(view_b.inputs)
    if len(specs_a) != len(specs_b):
        raise WeightgraftError(
            f"model a takes {len(specs_a)} inputs, model b takes {len(specs_b)}",
            expected="two models with the same inputs", fix="compare models with the same inputs")
    if inputs is not None:
        arrays_a = load_inputs(inputs)
        if len(arrays_a) != len(specs_a):
            raise WeightgraftError(f"{len(arrays_a)} input arrays given, model a takes "
                                   f"{len(specs_a)}", expected="one array per model input")
    else:
        high = _embedding_high([view_a, view_b])
        arrays_a = []
        if getattr(view_a, "inputs_guessed", False) and view_b.framework != "torch":
            # A torch view guesses its input shape by trial; Keras declares it: trust Keras.
            specs_a = [in_layout_of(sb, sa) for sa, sb in zip(specs_a, specs_b)]
        for i, (sa, sb) in enumerate(zip(specs_a, specs_b)):
            shape_b = list(in_layout_of(sb, sa).shape)
            shape = [d if d is not None else (shape_b[j] if j < len(shape_b) and shape_b[j]
                                              else DEFAULT_LENGTH)
                     for j, d in enumerate(sa.shape)]
            arrays_a.append(probe_array((batch, *shape), sa.dtype, seed=seed + i, high=high))
    arrays_b = [from_channels_last(to_channels_last(x, _spec_first(sa)), _spec_first(sb))
                for x, sa, sb in zip(arrays_a, specs_a, specs_b)]
    arrays_b = [x.astype(sb.dtype, copy=False) for x, sb in zip(arrays_b, specs_b)]
    return arrays_a, arrays_b


def in_layout_of(spec: Any, layout_of: Any) -> Any:
    """``spec``'s shape in ``layout_of``'s channel layout (an ``InputSpec``)."""
    from ..modelview import InputSpec

    shape = list(spec.shape)
    if _spec_first(spec) != _spec_first(layout_of) and len(shape) >= 2:
        shape = shape[1:] + shape[:1] if _spec_first(spec) else shape[-1:] + shape[:-1]
    return InputSpec(tuple(shape), layout_of.dtype, layout_of.data_format)


# -- pairing --------------------------------------------------------------------------------
def weighted_layers(mv: ModelView) -> list[LayerView]:
    """Layers with weights that the probe pass called, in execution order."""
    return [lv for lv in mv.layers if lv.slots and lv.calls >= 1]


def pair_layers(view_a: ModelView, view_b: ModelView,
                layer_pairs: Any = None) -> list[tuple[LayerView, LayerView]]:
    """Matched (a, b) layer pairs in a's execution order.

    ``layer_pairs`` is a ``Plan`` (its assignments name source = a and target = b layers),
    a sequence of ``(name_in_a, name_in_b)`` or a mapping; without it, weighted layers are
    aligned by kind.
    """
    by_a = {lv.path: lv for lv in view_a.layers}
    by_b = {lv.path: lv for lv in view_b.layers}
    if layer_pairs is None:
        return _align_by_kind(weighted_layers(view_a), weighted_layers(view_b))
    if hasattr(layer_pairs, "assignments"):
        names = [(asg.source_layer, asg.target_layer) for asg in layer_pairs.assignments]
    elif isinstance(layer_pairs, dict):
        names = list(layer_pairs.items())
    else:
        names = [tuple(p) for p in layer_pairs]
    pairs = []
    for name_a, name_b in dict.fromkeys(names):
        missing = [n for n, known in ((name_a, by_a), (name_b, by_b)) if n not in known]
        if missing:
            raise WeightgraftError(
                f"layer pair ({name_a!r}, {name_b!r}) names {missing[0]!r}, which neither "
                "model has as a layer", expected="layer paths as ModelView.layers lists them",
                fix="check the names with `graft inspect` or weightgraft.view(model).layers")
        pairs.append((by_a[name_a], by_b[name_b]))
    order = {lv.path: i for i, lv in enumerate(view_a.layers)}
    return sorted(pairs, key=lambda p: order[p[0].path])


def _align_by_kind(a: list[LayerView], b: list[LayerView]) -> list[tuple[LayerView, LayerView]]:
    n, m = len(a), len(b)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = (best[i + 1][j + 1] + 1 if a[i].kind is b[j].kind
                          else max(best[i + 1][j], best[i][j + 1]))
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if a[i].kind is b[j].kind and best[i][j] == best[i + 1][j + 1] + 1:
            pairs.append((a[i], b[j]))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


# -- what to compare ------------------------------------------------------------------------
def following_activation(mv: ModelView, lv: LayerView) -> LayerView | None:
    """The weightless activation layer that directly consumes ``lv``'s output, if any."""
    layers = mv.layers
    index = next((i for i, x in enumerate(layers) if x.path == lv.path), None)
    if index is None or index + 1 >= len(layers):
        return None
    nxt = layers[index + 1]
    if nxt.slots or nxt.class_name not in ACTIVATION_CLASSES:
        return None
    if nxt.inbound and lv.path not in nxt.inbound:
        return None
    return nxt


def fused_activation(lv: LayerView) -> str | None:
    """The activation a layer applies to its output (Keras ``Dense(activation=...)``), if any.

    A recurrent layer's ``activation`` works inside its cell, on every step, so it is not one.
    """
    if not lv.slots or lv.kind in (Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN):
        return None
    return activation_name(lv.config.get("activation"))


def layer_input(mv: ModelView, lv: LayerView, captured: dict[str, np.ndarray],
                model_inputs: Sequence[np.ndarray]) -> np.ndarray | None:
    """``lv``'s input on these inputs (from the layer that fed it), or ``None``.

    The probe pass may have used other spatial sizes than verify's inputs, so shapes are
    matched by rank only.
    """
    rank = len(lv.input_shapes[0]) if lv.input_shapes else None
    if f"{lv.path}#input" in captured:  # recorded as the layer received it
        return captured[f"{lv.path}#input"]
    if lv.inbound and lv.inbound[0] in captured:
        return captured[lv.inbound[0]]
    layers = mv.layers
    index = next((i for i, x in enumerate(layers) if x.path == lv.path), 0)
    if not lv.inbound:
        for previous in reversed(layers[:index]):
            out = captured.get(previous.path)
            if out is not None:
                return out if rank is None or out.ndim == rank else None
    if len(model_inputs) == 1 and (rank is None or np.ndim(model_inputs[0]) == rank):
        return np.asarray(model_inputs[0])
    return None
