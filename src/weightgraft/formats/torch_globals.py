"""What a PyTorch pickle may name: the allowlist of globals and the stand-ins they become.

Each allowed global maps to an inert object that imports nothing: ``torch._utils.
_rebuild_tensor_v2`` becomes a function returning a ``TensorRef`` (storage, offset, shape,
stride, dtype), ``torch.FloatStorage`` a ``StorageType``, ``torch.float16`` a ``TorchDtype``.
Every name missing here is refused by ``RestrictedUnpickler``.

Example:
    >>> ALLOWED_GLOBALS[("torch", "HalfStorage")]
    StorageType(name='HalfStorage')
    >>> ("os", "system") in ALLOWED_GLOBALS
    False
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

# Storage class name -> (numpy dtype name or "bfloat16", bytes per element).
STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "DoubleStorage": ("float64", 8), "FloatStorage": ("float32", 4),
    "HalfStorage": ("float16", 2), "BFloat16Storage": ("bfloat16", 2),
    "LongStorage": ("int64", 8), "IntStorage": ("int32", 4), "ShortStorage": ("int16", 2),
    "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1), "BoolStorage": ("bool", 1),
    "ComplexFloatStorage": ("complex64", 8), "ComplexDoubleStorage": ("complex128", 16),
    "UntypedStorage": ("uint8", 1),
}
# torch dtype attribute -> numpy dtype name; the ones numpy can hold bit-exactly.
TORCH_DTYPES: dict[str, str] = {
    "float64": "float64", "double": "float64", "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool", "uint16": "uint16",
    "uint32": "uint32", "uint64": "uint64", "complex64": "complex64", "cfloat": "complex64",
    "complex128": "complex128", "cdouble": "complex128",
}
MAX_DEPTH = 200


@dataclass(frozen=True)
class TorchDtype:
    """``torch.<name>`` as data; ``numpy`` is None for dtypes numpy cannot hold (float8...)."""

    name: str
    numpy: str | None

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True)
class StorageType:
    """A ``torch.<X>Storage`` class named in a persistent id."""

    name: str


@dataclass(frozen=True, eq=False)
class StorageRef:
    """One storage record: ``key`` names its bytes (zip member ``data/<key>``)."""

    key: str
    dtype: str
    itemsize: int
    numel: int
    location: str
    view: tuple[str, int, int] | None = None  # legacy storage view: (view key, offset, numel)


@dataclass(eq=False)
class TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` would build it, minus the data."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    parameter: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # pickled state dicts never key on tensors; refuse quietly
        raise TypeError("tensor used as a dict key")


class Refused:
    """A global that is known and harmless but cannot be represented (sparse, quantized)."""

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError(f"{what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise ValueError(f"tensor built on {type(storage).__name__}, not on a storage")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"storage offset {offset!r}")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides):
        raise ValueError(f"size {shape} and stride {strides} differ in rank")
    return TensorRef(storage, offset, shape, strides, storage.dtype)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any, *metadata: Any) -> TensorRef:
    ref = _rebuild_tensor(storage, offset, size, stride)
    if not isinstance(dtype, TorchDtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype")
    if dtype.numpy is None:
        raise ValueError(f"{dtype!r} has no numpy equivalent")
    return TensorRef(storage, ref.offset, ref.shape, ref.stride, dtype.numpy)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise ValueError("parameter built on something that is not a tensor")
    data.parameter = True
    if isinstance(state, dict):
        data.attributes.update(state)
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> TensorRef:
    if func not in (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter):
        raise ValueError("_rebuild_from_type_v2 with a function that does not build a tensor")
    ref = func(*args)
    if new_type == "Parameter":
        ref.parameter = True
    if isinstance(state, dict):
        ref.attributes.update(state)
    return ref


def _device(kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str):
        raise ValueError("device type must be a string")
    return kind if index is None else f"{kind}:{int(index)}"


def _size(dims: Any = ()) -> tuple[int, ...]:
    return _ints(dims, "torch.Size")


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol 2 spells a bytes object as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8"):
        raise ValueError("_codecs.encode with unexpected arguments")
    return text.encode(encoding)


def _bytearray(data: Any = b"", *encoding: Any) -> bytearray:
    # bytearray(10**12) would allocate; only copies of given bytes are allowed
    if isinstance(data, str):
        return bytearray(_encode(data, *(encoding or ("latin1",))))
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError("bytearray() of something that is not bytes")
    return bytearray(data)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _encode,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): "Tensor", ("torch._tensor", "Tensor"): "Tensor",
        ("torch.nn.parameter", "Parameter"): "Parameter", ("torch", "Size"): _size,
        ("torch", "device"): _device,
    }
    for module in ("builtins", "__builtin__"):  # protocol <= 2 spells builtins the py2 way
        table.update({(module, "set"): set, (module, "frozenset"): frozenset,
                      (module, "bytearray"): _bytearray})
    for module in ("torch", "torch.storage", "torch.cuda"):
        for name in STORAGE_DTYPES:
            table[(module, name)] = StorageType(name)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "complex32", "qint8", "quint8", "qint32"):
        table[("torch", name)] = TorchDtype(name, None)
    for name, np_name in TORCH_DTYPES.items():
        table[("torch", name)] = TorchDtype(name, np_name)
    for name in ("_rebuild_sparse_tensor", "_rebuild_qtensor", "_rebuild_nested_tensor",
                 "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
                 "_rebuild_device_tensor_from_numpy"):
        table[("torch._utils", name)] = Refused(
            f"torch._utils.{name}", "sparse, quantized, nested, meta and subclass tensors "
            "are not supported")
    return table


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _allowed()
_CALLABLE = {v for v in ALLOWED_GLOBALS.values()
             if callable(v) and not isinstance(v, (StorageType, TorchDtype, Refused))}

CALLABLE_IDS = frozenset(id(f) for f in _CALLABLE)  # module-level objects: ids are stable
