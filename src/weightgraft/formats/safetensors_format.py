"""safetensors single files: the header parsed and checked here, tensor bytes read on demand.

Layout (https://huggingface.co/docs/safetensors): 8 bytes little-endian header length N,
N bytes of JSON ``{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``, then the data buffer; offsets are relative to the buffer.
Every offset is checked against the file size and the tensor's dtype x shape byte count
before anything is loaded, so a hostile header cannot make a read run past the file or
allocate more than the file holds.

The writer streams one tensor at a time (memory bounded by the largest tensor), writes
the header first, pads it with spaces to 8 bytes like the reference implementation, and
renames the finished file into place.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from weightgraft.checkpoint import Checkpoint, TensorEntry
    >>> ck = Checkpoint([TensorEntry.from_array("w", np.eye(2, dtype="float32"))], "memory")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> write(ck, path, metadata={"note": "identity"})
    >>> read(path)["w"].load()[1, 1], read(path).metadata
    (np.float32(1.0), {'note': 'identity'})
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_output
from ..checkpoint import Checkpoint, Convention, TensorEntry
from ..errors import FormatError
from ..naming import describe_entries, implied_convention
from . import recorded_convention

NAME = "safetensors"
EXTENSIONS = (".safetensors",)

# The reference implementation refuses headers above 100 MB; so do we (no huge JSON parse).
MAX_HEADER = 100_000_000

# safetensors dtype code -> numpy dtype (little-endian as stored). BF16 loads as uint16 bits.
_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_ENTRY_DTYPE = {code: ("bfloat16" if code == "BF16" else np.dtype(np_dt).name)
                for code, np_dt in _DTYPES.items()}
_CODE_OF = {name: code for code, name in _ENTRY_DTYPE.items()}
_FRAMEWORKS = {"pt": "pytorch", "tf": "tensorflow", "flax": "flax", "np": "numpy",
               "mlx": "mlx", "paddle": "paddle"}


def sniff(path: Path, head: bytes) -> bool:
    """A sane little-endian header length followed by a JSON object."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    try:
        size = path.stat().st_size
    except OSError:
        return False
    return 2 <= length <= MAX_HEADER and head[8:9] == b"{" and (
        length <= size - 8 or path.name.lower().endswith(".safetensors"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in the header")
        out[key] = value
    return out


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """The parsed, validated header: (tensors, ``__metadata__``, data buffer start).

    Example:
        >>> tensors, meta, start = read_header(Path("model.safetensors"))  # doctest: +SKIP
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise FormatError(path, f"the file is {len(prefix)} bytes long",
                                  expected="at least 8 bytes of safetensors header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                raise FormatError(
                    path, f"header length {length:,} is larger than the file "
                    f"({size - 8:,} bytes after the length field)",
                    expected="a complete safetensors file", fix="the file is truncated or "
                    "not safetensors; download or save it again")
            if length > MAX_HEADER:
                raise FormatError(path, f"header length {length:,} exceeds {MAX_HEADER:,}",
                                  expected="a safetensors header under 100 MB")
            raw = fh.read(length)
    except OSError as exc:
        raise FormatError(path, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(path, f"the header is not valid JSON: {exc}",
                          expected="a UTF-8 JSON object") from None
    if not isinstance(header, dict):
        raise FormatError(path, f"the header is a JSON {type(header).__name__}",
                          expected="a JSON object of tensors")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FormatError(path, "__metadata__ is not a map of strings to strings",
                          tensor="__metadata__")
    start = 8 + length
    _validate(path, header, size - start)
    return header, metadata, start


def _validate(path: Path, header: dict[str, Any], data_size: int) -> None:
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise FormatError(path, "header entry is not an object", tensor=name)
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPES:
            raise FormatError(path, f"dtype {dtype!r} is not supported", tensor=name,
                              expected=", ".join(_DTYPES))
        if not isinstance(shape, list) or not all(
                type(d) is int and d >= 0 for d in shape):
            raise FormatError(path, f"shape {shape!r} is not a list of non-negative integers",
                              tensor=name)
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)):
            raise FormatError(path, f"data_offsets {offsets!r} is not [begin, end]", tensor=name)
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise FormatError(
                path, f"data_offsets [{begin}, {end}] fall outside the data buffer "
                f"(0..{data_size} bytes)", tensor=name,
                expected="offsets within the file", fix="the file is truncated or corrupt")
        need = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
        if end - begin != need:
            raise FormatError(
                path, f"data_offsets span {end - begin:,} bytes but {dtype} {tuple(shape)} "
                f"needs {need:,}", tensor=name, expected="offsets matching dtype x shape")
        spans.append((begin, end, name))
    spans.sort()
    reach, owner = 0, ""  # furthest end so far and the tensor that reaches it
    for begin, end, name in spans:
        if begin < reach and end > begin:
            raise FormatError(path, f"its bytes [{begin}, {end}) overlap tensor {owner!r} "
                              f"(which ends at {reach})", tensor=name,
                              expected="disjoint tensor data", fix="the file is corrupt")
        if end > reach:
            reach, owner = end, name


def range_loader(
    path: Path, offset: int, shape: tuple[int, ...], dtype: str, tensor: str,
) -> Callable[[], np.ndarray]:
    """A ``load()`` that reads exactly one tensor's byte range, checked when it runs.

    Example:
        >>> load = range_loader(Path("x.bin"), 0, (2,), "<f4", "x")   # doctest: +SKIP
    """
    np_dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * np_dtype.itemsize

    def load() -> np.ndarray:
        buf = bytearray(nbytes)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                got = fh.readinto(buf)
        except OSError as exc:
            raise FormatError(path, f"cannot read tensor bytes: {exc.strerror or exc}",
                              tensor=tensor) from None
        if got != nbytes:
            raise FormatError(path, f"only {got:,} of {nbytes:,} bytes could be read",
                              tensor=tensor, expected="a complete file",
                              fix="the file was truncated after it was opened")
        array = np.frombuffer(buf, dtype=np_dtype).reshape(shape)
        return array if np_dtype.isnative else array.astype(np_dtype.newbyteorder("="))

    return load


def read(path: Path) -> Checkpoint:
    """Open a ``.safetensors`` file lazily: header now, each tensor's bytes on ``load()``.

    Example:
        >>> ck = read(Path("model.safetensors"))          # doctest: +SKIP
        >>> ck["encoder.weight"].dtype                    # doctest: +SKIP
        'bfloat16'
    """
    path = Path(path)
    header, metadata, start = read_header(path)
    entries = [
        TensorEntry(key=name, shape=tuple(info["shape"]), dtype=_ENTRY_DTYPE[info["dtype"]],
                    loader=range_loader(path, start + info["data_offsets"][0],
                                        tuple(info["shape"]), _DTYPES[info["dtype"]], name))
        for name, info in header.items()
    ]
    framework = _FRAMEWORKS.get(metadata.get("format", ""))
    recorded = recorded_convention(metadata)
    if recorded is not None:
        convention, reason = recorded
        entries = describe_entries(entries, convention)
    elif framework == "pytorch":
        convention, reason = Convention.TORCH, "__metadata__ says format='pt', the PyTorch layout"
        entries = describe_entries(entries, convention)
    else:
        entries = describe_entries(entries, None)
        convention, reason = implied_convention(entries)
    return Checkpoint(entries, format=NAME, path=str(path), framework=framework,
                      convention=convention, convention_reason=reason,
                      metadata=dict(metadata))


def _metadata_strings(path: Path, metadata: dict[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise FormatError(path, f"metadata key {key!r} is not a string",
                              expected="a map of strings")
        # safetensors allows only strings: anything else is stored as its JSON text.
        out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def write(checkpoint: Checkpoint, path: Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Write the checkpoint's model tensors to a safetensors file, bit-exact and atomic.

    Non-string metadata values are stored as JSON text (safetensors allows strings only).

    Example:
        >>> write(ck, Path("out.safetensors"), metadata={"source": "model.h5"})  # doctest: +SKIP
    """
    path = Path(path)
    entries = checkpoint.model_entries()
    header: dict[str, Any] = {}
    meta = _metadata_strings(path, metadata)
    if meta:
        header["__metadata__"] = meta
    offset = 0
    for e in entries:
        code = _CODE_OF.get(e.dtype)
        if code is None:
            raise FormatError(path, f"dtype {e.dtype} cannot be stored in safetensors",
                              tensor=e.key, expected=", ".join(_CODE_OF))
        header[e.key] = {"dtype": code, "shape": list(e.shape),
                         "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for e in entries:
            fh.write(_tensor_bytes(path, e))
        fh.flush()
        os.fsync(fh.fileno())


def _tensor_bytes(path: Path, entry: TensorEntry) -> memoryview:
    array = np.asarray(entry.load(raw=True))
    want = np.dtype(_DTYPES[_CODE_OF[entry.dtype]])
    if array.shape != entry.shape or array.dtype.newbyteorder("=") != want.newbyteorder("="):
        raise FormatError(path, f"loaded {array.dtype} {array.shape} but the table says "
                          f"{entry.dtype} {entry.shape}", tensor=entry.key)
    array = np.require(array, dtype=want, requirements="C")
    return memoryview(array.reshape(-1).view(np.uint8))
