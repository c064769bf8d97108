"""Framework-neutral questions over live-model views: shared layers, depth, Flatten order.

Everything here works on ``ModelView`` objects (Keras or PyTorch) and numpy arrays only, so it
imports no framework.

Example:
    >>> import keras                                          # doctest: +SKIP
    >>> from weightgraft import view
    >>> weighted_depth(view(keras.applications.ResNet50(weights=None)))  # doctest: +SKIP
    50
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Kind

if TYPE_CHECKING:
    from ..modelview import LayerView

#: Layer kinds that count toward depth ("how many layers does ResNet50 have").
WEIGHTED_KINDS = frozenset({
    Kind.DENSE, Kind.CONV1D, Kind.CONV2D, Kind.CONV3D, Kind.DEPTHWISE_CONV2D,
    Kind.SEPARABLE_CONV2D, Kind.CONV1D_TRANSPOSE, Kind.CONV2D_TRANSPOSE, Kind.CONV3D_TRANSPOSE,
})

_SPATIAL_LETTERS = {1: "w", 2: "hw", 3: "dhw"}


@dataclass(frozen=True)
class SharedLayer:
    """One layer object that two models both contain, with its path in each."""

    path_a: str
    path_b: str
    class_name: str
    num_params: int


def shared_layers(model_a: Any, model_b: Any) -> list[SharedLayer]:
    """The layer objects (Keras layers or torch modules) that two models share.

    Either argument may be a live model or a ``ModelView``. Only weighted leaf layers are
    compared, by object identity.

    Example:
        >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])  # doctest: +SKIP
        >>> a = keras.Sequential([base, keras.layers.Dense(2)])                  # doctest: +SKIP
        >>> b = keras.Sequential([base, keras.layers.Dense(5)])                  # doctest: +SKIP
        >>> [(s.path_a, s.path_b) for s in shared_layers(a, b)]                  # doctest: +SKIP
        [('sequential/dense', 'sequential/dense')]
    """
    from ..modelview import view

    view_a, view_b = view(model_a), view(model_b)
    in_b = {id(view_b.layer_object(lv.path)): lv for lv in view_b.layers}  # type: ignore[attr-defined]
    out: list[SharedLayer] = []
    for lv in view_a.layers:
        other = in_b.get(id(view_a.layer_object(lv.path)))  # type: ignore[attr-defined]
        if other is None or not lv.slots:
            continue
        params = sum(int(np.prod(view_a.slots[k].shape)) for k in lv.slots if k in view_a.slots)
        out.append(SharedLayer(lv.path, other.path, lv.class_name, params))
    return out


def weighted_depth(model: Any) -> int:
    """Weighted layers (conv and dense kinds) on the longest input-to-output path.

    Follows each layer's ``inbound`` edges, so parallel branches (a ResNet shortcut) do not
    add up: ``keras.applications.ResNet50`` has depth 50 although it holds 168 layer objects.

    Example:
        >>> weighted_depth(view(torch.nn.Sequential(torch.nn.Linear(2, 3),
        ...                                         torch.nn.Linear(3, 1))))  # doctest: +SKIP
        2
    """
    from ..modelview import view

    layers: list[LayerView] = view(model).layers
    depth: dict[str, int] = {}
    for lv in layers:  # execution order is a topological order of the inbound edges
        before = max((depth.get(p, 0) for p in lv.inbound), default=0)
        depth[lv.path] = before + (1 if lv.kind in WEIGHTED_KINDS else 0)
    return max(depth.values(), default=0)


def layout_letters(rank: int, data_format: str) -> str:
    """The logical axis letters of a feature map without batch, in storage order.

    Example:
        >>> layout_letters(3, "channels_last"), layout_letters(3, "channels_first")
        ('hwc', 'chw')
    """
    spatial = _SPATIAL_LETTERS.get(rank - 1)
    if spatial is None:
        spatial = "".join(f"s{i}" for i in range(rank - 1))  # pragma: no cover - rank > 4
    return spatial + "c" if data_format == "channels_last" else "c" + spatial


def flatten_order(feature: np.ndarray, letters: str, flat: np.ndarray,
                  prefer: Sequence[str] = ()) -> str | None:
    """The axis order in which ``feature`` (batch first) was flattened into ``flat``, or None.

    ``letters`` names the feature map's axes (without batch) in storage order; a map with
    a single axis longer than 1 (global pooling's (C, 1, 1)) has no order and gives None. Every
    permutation is tried; when several fit (an axis of size 1), the first of ``prefer`` that
    fits wins, then the storage order, then the first in permutation order.

    Example:
        >>> fm = np.arange(24.0).reshape(1, 2, 3, 4)            # (batch, h, w, c)
        >>> flatten_order(fm, "hwc", fm.transpose(0, 3, 1, 2).reshape(1, -1))
        'chw'
    """
    feature = np.asarray(feature)
    flat = np.asarray(flat)
    if feature.ndim != len(letters) + 1 or flat.ndim != 2 or feature.shape[0] != flat.shape[0]:
        return None
    if int(np.prod(feature.shape[1:])) != flat.shape[1]:
        return None
    if sum(d > 1 for d in feature.shape[1:]) <= 1:  # (C, 1, 1): no order to get wrong
        return None
    matches: list[str] = []
    monotone: list[str] = []
    for perm in itertools.permutations(range(len(letters))):
        candidate = feature.transpose(0, *(p + 1 for p in perm)).reshape(feature.shape[0], -1)
        name = "".join(letters[p] for p in perm)
        if np.array_equal(candidate, flat):
            matches.append(name)
        elif _monotone_image(candidate, flat):
            monotone.append(name)
    for wanted in (*prefer, letters):
        if wanted in matches:
            return wanted
    if matches:
        return matches[0]
    # An elementwise activation applied without a layer (relu, sigmoid) keeps the order of
    # values; accepted only when a single permutation fits, since ties could fake a match.
    return monotone[0] if len(monotone) == 1 else None


def _monotone_image(candidate: np.ndarray, flat: np.ndarray) -> bool:
    """True when ``flat`` is a non-decreasing function of ``candidate``, element by element."""
    x, y = candidate.ravel().astype(np.float64), flat.ravel().astype(np.float64)
    if len(np.unique(x)) < 0.9 * x.size or np.ptp(y) == 0:  # too many ties to be evidence
        return False
    order = np.argsort(x, kind="stable")
    steps = np.diff(y[order])
    return bool(np.all(steps >= -1e-6 * (np.abs(y).max() + 1e-12)))


def feature_shape(feature: np.ndarray, letters: str) -> dict[str, int]:
    """``{"c": C, "h": H, "w": W}`` for a batch-first feature map with axes ``letters``."""
    return {letter: int(size) for letter, size in zip(letters, np.shape(feature)[1:])}


def probe_array(shape: Sequence[int], dtype: str, seed: int = 0, high: int = 10) -> np.ndarray:
    """Seeded, asymmetric probe data: normal floats, or integers in ``[0, high)``.

    Example:
        >>> probe_array((2, 3), "float32").dtype.name, int(probe_array((9,), "int32", high=4).max()) < 4
        ('float32', True)
    """
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, max(high, 1), size=tuple(shape)).astype(dtype)
    return rng.standard_normal(tuple(shape)).astype(dtype)
