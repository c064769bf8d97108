"""Numpy re-implementations that diagnosis checks re-compute a layer with.

Activations follow Keras 3 / PyTorch semantics by name; ``VARIANTS`` lists the families
whose members differ between frameworks or Keras versions. ``conv_nd`` is a plain
channels-last convolution with explicit per-side padding, so a check can compute one layer
under TensorFlow's asymmetric 'same' and under symmetric padding and see which one each
model did.

Example:
    >>> import numpy as np
    >>> x = np.array([-4.0, -1.0, 0.0, 2.0])
    >>> VARIANTS["hard_sigmoid"]["0.2x+0.5 (Keras 1/2, Theano)"](x).tolist()
    [0.0, 0.3, 0.5, 0.9]
    >>> np.round(VARIANTS["hard_sigmoid"]["x/6+0.5 (Keras 3, PyTorch)"](x), 3).tolist()
    [0.0, 0.333, 0.5, 0.833]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Activation = Callable[[np.ndarray], np.ndarray]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _selu(x: np.ndarray) -> np.ndarray:
    return 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0)))


#: Activations by their Keras 3 name (PyTorch module names map onto these).
ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0, 1),
    "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
    "elu": _elu,
    "selu": _selu,
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "gelu": _gelu_erf,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "exponential": np.exp,
}

#: Families whose members disagree: what one framework or Keras version means by the name.
VARIANTS: dict[str, dict[str, Activation]] = {
    "hard_sigmoid": {
        "0.2x+0.5 (Keras 1/2, Theano)": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
        "x/6+0.5 (Keras 3, PyTorch)": lambda x: np.clip(x / 6.0 + 0.5, 0, 1),
    },
    "gelu": {
        "exact erf (PyTorch default, Keras approximate=False)": _gelu_erf,
        "tanh approximation (approximate=True)": _gelu_tanh,
    },
    "leaky_relu": {
        "slope 0.2 (Keras 3 default)": lambda x: np.where(x > 0, x, 0.2 * x),
        "slope 0.3 (Keras 1/2 default)": lambda x: np.where(x > 0, x, 0.3 * x),
        "slope 0.01 (PyTorch default)": lambda x: np.where(x > 0, x, 0.01 * x),
    },
}


def activation_name(value: object) -> str | None:
    """A config's activation as a plain lower-case name; ``None`` for none or linear.

    Example:
        >>> activation_name("relu"), activation_name({"class_name": "function",
        ...     "config": {"name": "hard_sigmoid"}}), activation_name("linear")
        ('relu', 'hard_sigmoid', None)
    """
    if isinstance(value, dict):
        config = value.get("config")
        value = (config.get("name") if isinstance(config, dict) else config) or value.get(
            "registered_name") or value.get("class_name")
    if not isinstance(value, str) or not value:
        return None
    name = value.rsplit(">", 1)[-1].rsplit(".", 1)[-1].lower()
    return None if name in ("linear", "none", "identity") else name


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the odd extra row goes at the end (bottom/right).

    Example:
        >>> same_padding(8, 3, 2), same_padding(7, 3, 2)
        ((0, 1), (1, 1))
    """
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv_nd(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None,
            strides: Sequence[int], pads: Sequence[tuple[int, int]],
            dilation: Sequence[int] | None = None) -> np.ndarray:
    """A channels-last convolution (cross-correlation, as Keras and PyTorch compute it).

    ``x`` is (batch, *spatial, in), ``kernel`` (*spatial, in, out) in the keras convention,
    ``pads`` one (before, after) pair per spatial axis. Computed in float64.

    Example:
        >>> x = np.arange(5.0).reshape(1, 5, 1)
        >>> conv_nd(x, np.ones((3, 1, 1)), None, (1,), [(1, 1)])[0, :, 0].tolist()
        [1.0, 3.0, 6.0, 9.0, 7.0]
    """
    n = kernel.ndim - 2
    dilation = tuple(dilation or (1,) * n)
    xp = np.pad(np.asarray(x, np.float64), [(0, 0), *pads, (0, 0)])
    k = np.asarray(kernel, np.float64)
    out_sizes = [(xp.shape[1 + i] - ((k.shape[i] - 1) * dilation[i] + 1)) // strides[i] + 1
                 for i in range(n)]
    out = np.zeros((x.shape[0], *out_sizes, k.shape[-1]))
    for offset in np.ndindex(*k.shape[:n]):
        index = tuple(slice(o * d, o * d + (size - 1) * s + 1, s)
                      for o, d, s, size in zip(offset, dilation, strides, out_sizes))
        out += xp[(slice(None), *index, slice(None))] @ k[offset]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def gru(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
        b_hh: np.ndarray, *, reset_after: bool,
        recurrent_activation: Activation = _sigmoid) -> np.ndarray:
    """A one-layer GRU over (batch, time, features), gates in PyTorch order (r, z, n).

    ``reset_after=True`` is PyTorch (and Keras 3's default): ``n = tanh(W_in x + b_in +
    r * (W_hn h + b_hn))``. ``False`` is Keras 1/2: the reset gate scales ``h`` before the
    recurrent matmul, ``n = tanh(W_in x + b_in + b_hn + W_hn (r * h))``. Returns every step.

    Example:
        >>> x = np.ones((1, 2, 1)); w = np.ones((3, 1)); b = np.zeros(3)
        >>> gru(x, w, w, b, b, reset_after=True).shape
        (1, 2, 1)
    """
    x = np.asarray(x, np.float64)
    units = w_hh.shape[1]
    h = np.zeros((x.shape[0], units))
    gi_all = x @ w_ih.T.astype(np.float64) + b_ih
    w_hr, w_hz, w_hn = np.split(np.asarray(w_hh, np.float64), 3)
    b_hr, b_hz, b_hn = np.split(np.asarray(b_hh, np.float64), 3)
    steps = []
    for t in range(x.shape[1]):
        i_r, i_z, i_n = np.split(gi_all[:, t], 3, axis=-1)
        r = recurrent_activation(i_r + h @ w_hr.T + b_hr)
        z = recurrent_activation(i_z + h @ w_hz.T + b_hz)
        if reset_after:
            n = np.tanh(i_n + r * (h @ w_hn.T + b_hn))
        else:
            n = np.tanh(i_n + b_hn + (r * h) @ w_hn.T)
        h = (1 - z) * n + z * h
        steps.append(h)
    return np.stack(steps, axis=1)
