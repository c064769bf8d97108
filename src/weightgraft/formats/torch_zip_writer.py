"""Write a PyTorch zip state dict without torch, loadable by ``torch.load(weights_only=True)``.

The pickle is written opcode by opcode (protocol 2, as ``torch.save`` does): an
``OrderedDict`` of key -> ``torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False,
OrderedDict())`` with each storage a persistent id ``('storage', torch.FloatStorage, key,
'cpu', numel)``. dtypes without a legacy storage class (uint16/32/64) use
``_rebuild_tensor_v3`` over an ``UntypedStorage``, as torch does. Storage members are stored
uncompressed with their data 64-byte aligned (torch's ``storage_alignment``), so
``torch.load(mmap=True)`` works too. One tensor is in memory at a time.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from weightgraft.checkpoint import Checkpoint, TensorEntry
    >>> ck = Checkpoint([TensorEntry.from_array("w", np.eye(2, dtype="float32"))], format="m")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> write(ck, out)
    >>> out.stat().st_size > 0
    True
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_output
from ..checkpoint import Checkpoint, TensorEntry
from ..errors import FormatError

ALIGNMENT = 64
_STORAGE_CLASS = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
    "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
    "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
    "bool": "BoolStorage", "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
}
_UNTYPED = {"uint16", "uint32", "uint64"}  # torch pickles these through _rebuild_tensor_v3


class _Pickle:
    """A protocol-2 opcode writer for the few shapes a state dict needs."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")
        self.memo: dict[tuple[str, str], int] = {}

    def global_(self, module: str, name: str) -> None:
        index = self.memo.get((module, name))
        if index is not None:
            self.out += b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)
            return
        self.out += f"c{module}\n{name}\n".encode()
        index = self.memo[(module, name)] = len(self.memo)
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def str_(self, text: str) -> None:
        raw = text.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw

    def int_(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(raw)]) + raw

    def ints(self, values: tuple[int, ...]) -> None:
        if not values:
            self.out += b")"
            return
        self.out += b"("
        for v in values:
            self.int_(v)
        self.out += b"t"

    def empty_ordered_dict(self) -> None:
        self.global_("collections", "OrderedDict")
        self.out += b")R"

    def tensor(self, storage_key: str, dtype: str, shape: tuple[int, ...]) -> None:
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        stride = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
        untyped = dtype in _UNTYPED
        self.global_("torch._utils", "_rebuild_tensor_v3" if untyped else "_rebuild_tensor_v2")
        self.out += b"(("
        self.str_("storage")
        if untyped:
            self.global_("torch.storage", "UntypedStorage")
        else:
            self.global_("torch", _STORAGE_CLASS[dtype])
        self.str_(storage_key)
        self.str_("cpu")
        self.int_(numel * np.dtype(dtype).itemsize if untyped else numel)
        self.out += b"tQ"  # the id tuple, then BINPERSID
        self.int_(0)
        self.ints(shape)
        self.ints(stride)
        self.out += b"\x89"
        self.empty_ordered_dict()
        if untyped:
            self.global_("torch", dtype)
        self.out += b"tR"


def state_dict_pickle(entries: list[TensorEntry]) -> bytes:
    """``data.pkl`` for entries whose storages are named ``"0"``, ``"1"``, ... in order.

    Example:
        >>> from weightgraft.checkpoint import TensorEntry
        >>> pkl = state_dict_pickle([TensorEntry.from_array("b", np.zeros(2, "float32"))])
        >>> pkl[:2], pkl[-1:]
        (b'\\x80\\x02', b'.')
    """
    p = _Pickle()
    p.empty_ordered_dict()
    for start in range(0, len(entries), 1000):  # SETITEMS in batches, as pickle does
        p.out += b"("
        for i, e in enumerate(entries[start:start + 1000], start):
            p.str_(e.key)
            p.tensor(str(i), e.dtype, e.shape)
        p.out += b"u"
    p.out += b"."
    return bytes(p.out)


def _put(zf: zipfile.ZipFile, name: str, data: bytes | memoryview, *, align: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    size = len(data) if isinstance(data, bytes) else data.nbytes
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT
    if align:  # pad the local header's extra field so the data starts on a 64-byte boundary
        here = zf.fp.tell()  # type: ignore[union-attr]
        fixed = here + 30 + len(name.encode()) + 4 + (20 if zip64 else 0)  # + zip64 extra
        pad = -fixed % ALIGNMENT
        info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with zf.open(info, "w", force_zip64=zip64) as fh:
        fh.write(data)


def _archive_root(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]", "_", path.name.split(".")[0])
    return stem or "archive"


def _tensor_bytes(entry: TensorEntry) -> memoryview:
    array = np.asarray(entry.load(raw=True))
    expected = "uint16" if entry.dtype == "bfloat16" else entry.dtype
    if array.shape != entry.shape or array.dtype.name != expected:
        raise FormatError(None, f"loaded as {array.dtype.name}{list(array.shape)}",
                          tensor=entry.key, expected=f"{expected}{list(entry.shape)}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # reshape(-1) then a byte view: memoryview.cast refuses 0-d and empty shapes
    return memoryview(np.require(array, requirements="C").reshape(-1).view(np.uint8))


def write(checkpoint: Checkpoint, path: str | Path, *,
          metadata: dict[str, Any] | None = None) -> None:
    """Write ``checkpoint``'s model tensors as a torch zip state dict, atomically, bit-exact.

    ``metadata`` (JSON-able) goes into the member ``<root>/extra/weightgraft.json``, which
    torch ignores and this reader returns as ``metadata["weightgraft"]``.

    Example:
        >>> write(ck, "model.pt")   # doctest: +SKIP
        >>> torch.load("model.pt", weights_only=True)["fc.weight"].shape   # doctest: +SKIP
    """
    target = Path(path)
    entries = checkpoint.model_entries()
    for e in entries:
        if e.dtype not in _STORAGE_CLASS and e.dtype not in _UNTYPED:
            raise FormatError(target, f"dtype {e.dtype} has no PyTorch storage", tensor=e.key,
                              expected=", ".join([*_STORAGE_CLASS, *_UNTYPED]))
    root = _archive_root(target)
    with atomic_output(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                       allowZip64=True) as zf:
        _put(zf, f"{root}/data.pkl", state_dict_pickle(entries), align=False)
        _put(zf, f"{root}/.format_version", b"1", align=False)
        _put(zf, f"{root}/.storage_alignment", str(ALIGNMENT).encode(), align=False)
        _put(zf, f"{root}/byteorder", b"little", align=False)
        for i, e in enumerate(entries):
            _put(zf, f"{root}/data/{i}", _tensor_bytes(e), align=True)
        if metadata:
            _put(zf, f"{root}/extra/weightgraft.json",
                 json.dumps(metadata, sort_keys=True).encode(), align=False)
        _put(zf, f"{root}/version", b"3\n", align=False)
