"""The neutral table every reader produces: ``Checkpoint`` of ``TensorEntry``.

A ``TensorEntry`` knows its key, shape and dtype from the file's header, and how to load
its bytes later (``load()``); nothing here reads tensor data eagerly. Each entry is also
*described*: the layer it belongs to, the layer's kind, the tensor's role in that layer,
and the convention (layout family) it is stored in.

Example:
    >>> import numpy as np
    >>> e = TensorEntry.from_array("dense/kernel", np.zeros((3, 2), "float32"),
    ...                            layer="dense", kind=Kind.DENSE, role=Role.KERNEL)
    >>> ckpt = Checkpoint([e], format="memory")
    >>> ckpt["dense/kernel"].shape, ckpt.num_params
    ((3, 2), 6)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class Kind(str, enum.Enum):
    """What a layer computes, independent of framework."""

    DENSE = "dense"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    CONV3D = "conv3d"
    DEPTHWISE_CONV2D = "depthwise_conv2d"
    SEPARABLE_CONV2D = "separable_conv2d"
    CONV1D_TRANSPOSE = "conv1d_transpose"
    CONV2D_TRANSPOSE = "conv2d_transpose"
    CONV3D_TRANSPOSE = "conv3d_transpose"
    BATCH_NORM = "batch_norm"
    LAYER_NORM = "layer_norm"
    GROUP_NORM = "group_norm"
    EMBEDDING = "embedding"
    LSTM = "lstm"
    GRU = "gru"
    SIMPLE_RNN = "simple_rnn"
    PRELU = "prelu"
    MULTI_HEAD_ATTENTION = "multi_head_attention"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


class Role(str, enum.Enum):
    """What a tensor is inside its layer."""

    KERNEL = "kernel"
    BIAS = "bias"
    RECURRENT_KERNEL = "recurrent_kernel"
    RECURRENT_BIAS = "recurrent_bias"  # PyTorch bias_hh
    DEPTHWISE_KERNEL = "depthwise_kernel"
    POINTWISE_KERNEL = "pointwise_kernel"
    GAMMA = "gamma"
    BETA = "beta"
    MOVING_MEAN = "moving_mean"
    MOVING_VARIANCE = "moving_variance"
    NUM_BATCHES_TRACKED = "num_batches_tracked"
    EMBEDDINGS = "embeddings"
    ALPHA = "alpha"
    QUERY_KERNEL = "query_kernel"
    QUERY_BIAS = "query_bias"
    KEY_KERNEL = "key_kernel"
    KEY_BIAS = "key_bias"
    VALUE_KERNEL = "value_kernel"
    VALUE_BIAS = "value_bias"
    OUTPUT_KERNEL = "output_kernel"
    OUTPUT_BIAS = "output_bias"
    IN_PROJ_KERNEL = "in_proj_kernel"  # PyTorch packed q/k/v
    IN_PROJ_BIAS = "in_proj_bias"
    OPTIMIZER_STATE = "optimizer_state"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


class Convention(str, enum.Enum):
    """The layout family a tensor is stored in.

    ``keras``: channels-last, conv kernels (*spatial, in, out), dense (in, out).
    ``torch``: conv weights (out, in, *spatial), linear (out, in).
    ``theano``: Keras 1 with ``dim_ordering='th'``: conv kernels (out, in, *spatial) and
    spatially flipped (true convolution), activations channels-first; dense (in, out).
    """

    KERAS = "keras"
    TORCH = "torch"
    THEANO = "theano"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class Group(str, enum.Enum):
    """Whether an entry is a model weight, optimizer state, or something else in the file."""

    MODEL = "model"
    OPTIMIZER = "optimizer"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


def _coerce(enum_cls: type[enum.Enum], value: Any) -> Any:
    return value if isinstance(value, enum_cls) else enum_cls(value)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor in a checkpoint: header facts now, bytes on ``load()``.

    ``key`` is the tensor's own name in its file (``conv1/kernel:0``, ``conv1.weight``,
    ``layers/dense/vars/0``): stable, unique, and what readers use to find the bytes.
    ``dtype`` is a numpy dtype name, or ``"bfloat16"`` (numpy has none).
    ``part`` names a sub-array where a layer stores one logical weight in pieces (Keras 1
    per-gate recurrent arrays: ``"i"``, ``"c"``, ``"f"``, ``"o"``; bidirectional halves).

    Example:
        >>> e = TensorEntry.from_array("w", np.arange(6, dtype="float32").reshape(2, 3))
        >>> e.load().sum(), e.num_params, e.nbytes
        (np.float32(15.0), 6, 24)
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    layer: str = ""
    kind: Kind = Kind.OTHER
    role: Role = Role.OTHER
    convention: Convention = Convention.UNKNOWN
    trainable: bool | None = None
    group: Group = Group.MODEL
    part: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "kind", _coerce(Kind, self.kind))
        object.__setattr__(self, "role", _coerce(Role, self.role))
        object.__setattr__(self, "convention", _coerce(Convention, self.convention))
        object.__setattr__(self, "group", _coerce(Group, self.group))

    @property
    def num_params(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.num_params * self.itemsize

    def load(self, *, raw: bool = False) -> np.ndarray:
        """Read the tensor's bytes now.

        bfloat16 tensors load as float32 (an exact widening); ``raw=True`` returns their
        bits as ``uint16`` instead, which is what writers use to stay bit-exact.
        """
        array = self.loader()
        if self.dtype == "bfloat16" and not raw:
            return bfloat16_bits_to_float32(array)
        return array

    def with_(self, **changes: Any) -> TensorEntry:
        """A copy with some fields changed (descriptions are filled in after reading)."""
        return replace(self, **changes)

    @classmethod
    def from_array(cls, key: str, array: np.ndarray, **fields: Any) -> TensorEntry:
        """An entry over an in-memory array (tests, live models, conversions)."""
        arr = np.asarray(array)
        return cls(key=key, shape=arr.shape, dtype=arr.dtype.name, loader=lambda: arr, **fields)


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 stored as uint16 bits to float32, exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class LayerInfo:
    """A layer as the file or model describes it: name, class, kind, config, its tensors."""

    name: str
    class_name: str = ""
    kind: Kind = Kind.OTHER
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    keys: tuple[str, ...] = ()
    trainable: bool | None = None


@dataclass
class Checkpoint:
    """An ordered table of tensors plus what the file says about itself.

    Use it as a context manager (or call ``close()``) so readers can release open files.

    Example:
        >>> ck = Checkpoint([TensorEntry.from_array("a", np.ones(3))], format="memory")
        >>> [e.key for e in ck], "a" in ck
        (['a'], True)
    """

    entries: Sequence[TensorEntry]
    format: str
    path: str | None = None
    framework: str | None = None
    framework_version: str | None = None
    backend: str | None = None
    data_format: str | None = None
    convention: Convention = Convention.UNKNOWN
    convention_reason: str = ""
    model_config: dict[str, Any] | None = None
    layers: list[LayerInfo] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # non-tensor values found in the file
    notes: list[str] = field(default_factory=list)  # warnings a user must see (e.g. Theano-era)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.entries = list(self.entries)
        self.convention = _coerce(Convention, self.convention)
        self._reindex()

    def _reindex(self) -> None:
        self._index = {e.key: i for i, e in enumerate(self.entries)}
        if len(self._index) != len(self.entries):
            seen: set[str] = set()
            dup = next(e.key for e in self.entries if e.key in seen or seen.add(e.key))  # type: ignore[func-returns-value]
            from .errors import FormatError

            raise FormatError(self.path or "<checkpoint>", f"tensor key {dup!r} appears twice")

    # -- table access ---------------------------------------------------------------
    def __iter__(self) -> Iterator[TensorEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __getitem__(self, key: str) -> TensorEntry:
        try:
            return self.entries[self._index[key]]
        except KeyError:
            raise KeyError(f"no tensor {key!r} in {self.path or 'checkpoint'}") from None

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    def model_entries(self) -> list[TensorEntry]:
        """Model weights only (optimizer state and other extras left out)."""
        return [e for e in self.entries if e.group is Group.MODEL]

    def optimizer_entries(self) -> list[TensorEntry]:
        return [e for e in self.entries if e.group is Group.OPTIMIZER]

    def by_layer(self) -> dict[str, list[TensorEntry]]:
        """Model entries grouped by layer, in file order."""
        out: dict[str, list[TensorEntry]] = {}
        for e in self.model_entries():
            out.setdefault(e.layer, []).append(e)
        return out

    def replace_entries(self, entries: Sequence[TensorEntry]) -> None:
        """Swap in re-described entries (same keys or new), keeping the index right."""
        self.entries = list(entries)
        self._reindex()

    @property
    def num_params(self) -> int:
        return sum(e.num_params for e in self.model_entries())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    # -- resources --------------------------------------------------------------------
    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Load every model tensor into memory (convenience for small checkpoints)."""
        return {e.key: e.load() for e in self.model_entries()}
