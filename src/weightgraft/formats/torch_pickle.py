"""PyTorch ``.pt`` / ``.pth`` / ``.bin`` checkpoints, read and written without torch.

Two layouts exist. The zip format (PyTorch >= 1.6) holds ``<top>/data.pkl`` (the object
tree, with storages as persistent ids), one member ``<top>/data/<key>`` per storage,
``<top>/byteorder`` and ``<top>/version``; ``<top>`` is whatever the writer chose (the file
stem, or ``archive``), so it is taken from the archive. The legacy format (before 1.6, or
``_use_new_zipfile_serialization=False``) is five pickles in a row (magic number, protocol
version, sys_info, the object tree, the sorted storage keys) followed by each storage as an
8-byte element count and its raw bytes.

The object tree is interpreted by ``RestrictedUnpickler``: tensors become ``TensorRef``s,
nothing is imported or called. Nested dicts become dotted path keys
(``{"state_dict": {"fc.weight": t}}`` -> ``state_dict.fc.weight``), see ``flatten``.

Example:
    >>> from weightgraft.formats import torch_pickle       # doctest: +SKIP
    >>> ck = torch_pickle.read("resnet18.pth")             # doctest: +SKIP
    >>> ck["conv1.weight"].shape, ck["conv1.weight"].kind  # doctest: +SKIP
    ((64, 3, 7, 7), <Kind.CONV2D: 'conv2d'>)
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..checkpoint import Checkpoint, Convention, Group, Role, TensorEntry
from ..errors import FormatError
from ..naming import describe_entries
from .restricted_unpickler import RestrictedUnpickler
from .torch_globals import STORAGE_DTYPES, StorageRef, StorageType, TensorRef
from .torch_tree import flatten
from .torch_zip_writer import write

NAME = "pytorch"
ALIASES = ("torch", "pt", "pth")
EXTENSIONS = (".pt", ".pth", ".bin")
__all__ = ["NAME", "ALIASES", "EXTENSIONS", "sniff", "read", "write"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_MAGIC_PICKLED = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
_CONVENTION_REASON = ("PyTorch stores conv weights as (out, in, *kernel) and linear weights "
                      "as (out, in)")


def sniff(path: Path, head: bytes) -> bool:
    """A zip whose first member is ``<top>/data.pkl``, or a legacy pickle with torch's magic.

    Example:
        >>> sniff(Path("x.pt"), b"\\x80\\x02" + _MAGIC_PICKLED + b".")
        True
    """
    if head[:1] == b"\x80" and head[2:14] == _MAGIC_PICKLED:
        return True
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return False
    name_len = struct.unpack("<H", head[26:28])[0]
    if head[30:30 + name_len].endswith(b"/data.pkl"):
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return _top_folder(zf.namelist()) is not None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def read(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a PyTorch checkpoint's structure; tensor bytes are read on ``load()``.

    Example:
        >>> ck = read("model.pt")                                  # doctest: +SKIP
        >>> ck.metadata["serialization"], ck.metadata["tied"]      # doctest: +SKIP
        ('zip', [['embed.weight', 'head.weight']])
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise FormatError(p, f"cannot be read: {exc.strerror}") from None
    if head.startswith(b"PK"):
        source: _Source = _ZipSource(p)
    elif head[:1] == b"\x80" and head[2:14] == _MAGIC_PICKLED:
        source = _LegacySource(p)
    else:
        raise FormatError(p, "is not a PyTorch checkpoint",
                          expected="a zip archive with data.pkl, or a legacy torch pickle")
    try:
        return _checkpoint(p, source)
    except BaseException:
        source.close()
        raise


class _Source:
    """Where a checkpoint's storages live, and how to read a byte range of one."""

    path: Path
    metadata: dict[str, Any]
    storages: dict[str, StorageRef]

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.storages = {}
        self.metadata = {}
        self._fh: BinaryIO | None = None
        self._lock = threading.Lock()

    def tree(self) -> Any:
        raise NotImplementedError

    def storage_nbytes(self, key: str) -> int:
        """The bytes the file really holds for a storage (checked before any read)."""
        raise NotImplementedError

    def data_offset(self, key: str) -> int:
        raise NotImplementedError

    def read(self, key: str, start: int, length: int) -> bytearray:
        offset = self.data_offset(key) + start
        buf = bytearray(length)
        try:
            with self._lock:
                if self._fh is None:  # reopened after close(): entries stay loadable
                    self._fh = open(self.path, "rb")
                self._fh.seek(offset)
                got = self._fh.readinto(buf)
        except OSError as exc:
            raise FormatError(self.path, f"storage {key!r} cannot be read: {exc}") from None
        if got != length:
            raise FormatError(self.path, f"storage {key!r} ends early: {got} of {length} bytes",
                              fix="the file is truncated; download or save it again")
        return buf

    def _persistent_load(self, pid: Any) -> StorageRef:
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage")
                or not isinstance(pid[1], StorageType)):
            raise FormatError(self.path, f"unexpected persistent id {str(pid)[:80]!r}",
                              expected="('storage', torch.<X>Storage, key, location, numel)")
        stype, key, location, numel = pid[1:5]
        key = key.decode() if isinstance(key, bytes) else str(key)
        location = location.decode() if isinstance(location, bytes) else str(location)
        if not isinstance(numel, int) or numel < 0:
            raise FormatError(self.path, f"storage {key!r} declares {numel!r} elements")
        dtype, itemsize = STORAGE_DTYPES[stype.name]
        ref = self.storages.get(key) or StorageRef(key, dtype, itemsize, numel, location)
        self.storages.setdefault(key, ref)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # pre-0.4 storage views: a window on the root storage
            view_key, offset, size = view
            if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0
                    and size >= 0 and offset + size <= ref.numel):
                raise FormatError(self.path, f"storage view {view_key!r} lies outside its "
                                  f"storage {key!r} ({ref.numel} elements)")
            return StorageRef(key, dtype, itemsize, size, location, (str(view_key), offset, size))
        return ref

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _top_folder(names: list[str]) -> str | None:
    tops = {n.split("/", 1)[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
    return tops.pop() if len(tops) == 1 else None


class _ZipSource(_Source):
    """Zip format: storages are members ``<top>/data/<key>``, read in place when stored."""

    # data.pkl only describes tensors; anything larger than this is not a state dict
    MAX_PICKLE = 1 << 30

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self.zf = zipfile.ZipFile(path)
            names = self.zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
            raise FormatError(path, f"is not a readable zip archive ({exc})",
                              expected="a complete PyTorch zip checkpoint",
                              fix="the file is truncated or damaged; save or download it again"
                              ) from None
        top = _top_folder(names)
        if top is None:
            raise FormatError(path, "has no single '<folder>/data.pkl' member",
                              expected="a PyTorch checkpoint zip (torch.save)")
        self.top = top
        if any(n.startswith(f"{top}/code/") or n == f"{top}/constants.pkl" for n in names):
            raise FormatError(path, "is a TorchScript archive, not a checkpoint",
                              fix="load it with torch.jit.load and torch.save its state_dict()")
        self.infos = {i.filename: i for i in self.zf.infolist()}
        for info in self.infos.values():
            if info.header_offset + 30 + len(info.filename) + info.compress_size > self.size:
                raise FormatError(path, f"member {info.filename!r} declares "
                                  f"{info.compress_size} bytes at offset {info.header_offset}, "
                                  f"beyond the end of the {self.size}-byte archive",
                                  fix="the file is truncated or damaged")
        self._offsets: dict[str, int] = {}
        self.metadata = {"serialization": "zip", "archive_root": top,
                         "byteorder": self._record("byteorder") or "little",
                         "format_version": self._record(".format_version"),
                         "serialization_version": self._record("version")}
        extra = self.infos.get(f"{top}/extra/weightgraft.json")
        if extra is not None and extra.file_size < (1 << 24):
            try:
                self.metadata["weightgraft"] = json.loads(self._member(extra))
            except ValueError:
                raise FormatError(path, "extra/weightgraft.json is not valid JSON") from None

    def _record(self, name: str) -> str | None:
        info = self.infos.get(f"{self.top}/{name}")
        if info is None or info.file_size > 64:
            return None
        return self._member(info).decode("utf-8", "replace").strip()

    def _member(self, info: zipfile.ZipInfo) -> bytes:
        try:
            with self.zf.open(info) as fh:
                return fh.read()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError, struct.error) as exc:
            raise FormatError(self.path, f"member {info.filename!r} cannot be read ({exc})",
                              fix="the file is truncated or damaged") from None

    def tree(self) -> Any:
        info = self.infos[f"{self.top}/data.pkl"]
        if info.file_size > self.MAX_PICKLE:
            raise FormatError(self.path, f"data.pkl declares {info.file_size} bytes",
                              expected=f"at most {self.MAX_PICKLE} bytes of object tree")
        return RestrictedUnpickler(self._member(info), self.path,
                                   persistent_load=self._persistent_load).load()

    def _info(self, key: str) -> zipfile.ZipInfo:
        info = self.infos.get(f"{self.top}/data/{key}")
        if info is None:
            raise FormatError(self.path, f"storage {key!r} has no member {self.top}/data/{key}",
                              fix="the archive is incomplete")
        return info

    def storage_nbytes(self, key: str) -> int:
        return self._info(key).file_size

    def data_offset(self, key: str) -> int:
        if key not in self._offsets:
            info = self._info(key)
            if info.compress_type != zipfile.ZIP_STORED:
                raise FormatError(self.path, f"storage {key!r} is compressed",
                                  expected="stored (uncompressed) members, as torch.save writes")
            with open(self.path, "rb") as fh:  # the local header's own lengths count here
                fh.seek(info.header_offset)
                local = fh.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise FormatError(self.path, f"member for storage {key!r} has no local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len
            if offset + info.file_size > self.size:
                raise FormatError(self.path, f"storage {key!r} runs past the end of the file")
            self._offsets[key] = offset
        return self._offsets[key]

    def close(self) -> None:
        super().close()
        self.zf.close()


class _LegacySource(_Source):
    """Legacy format: five pickles, then ``<count:int64><bytes>`` per storage, in key order."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.metadata = {"serialization": "legacy"}
        self._offsets: dict[str, tuple[int, int]] = {}

    def tree(self) -> Any:
        with open(self.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = 0

            def next_pickle(**kw: Any) -> Any:
                nonlocal pos
                unpickler = RestrictedUnpickler(mm, self.path, start=pos, **kw)
                value = unpickler.load()
                pos = unpickler.pos
                return value

            if next_pickle() != LEGACY_MAGIC or next_pickle() != LEGACY_PROTOCOL:
                raise FormatError(self.path, "has a wrong magic number or protocol version",
                                  expected=f"torch legacy protocol {LEGACY_PROTOCOL}")
            sys_info = next_pickle()
            little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
            self.metadata["byteorder"] = "little" if little else "big"
            tree = next_pickle(persistent_load=self._persistent_load)
            keys = next_pickle()
            if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
                raise FormatError(self.path, "the storage key list is malformed")
            self._scan(fh, pos, [k.decode() if isinstance(k, bytes) else k for k in keys], little)
        return tree

    def _scan(self, fh: BinaryIO, pos: int, keys: list[str], little: bool) -> None:
        # One pass over the 8-byte count headers, seeking over the data: offsets, no bytes.
        for key in keys:
            ref = self.storages.get(key)
            if ref is None:
                raise FormatError(self.path, f"storage {key!r} is listed but never used")
            fh.seek(pos)
            header = fh.read(8)
            if len(header) != 8:
                raise FormatError(self.path, f"the file ends before storage {key!r}",
                                  fix="the file is truncated; save or download it again")
            count = int.from_bytes(header, "little" if little else "big", signed=True)
            nbytes = count * ref.itemsize
            if count < 0 or pos + 8 + nbytes > self.size:
                raise FormatError(self.path, f"storage {key!r} declares {count} elements "
                                  f"({nbytes} bytes) at offset {pos + 8}, but the file has "
                                  f"{self.size} bytes", fix="the file is truncated")
            self._offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes

    def storage_nbytes(self, key: str) -> int:
        return self._offsets[key][1] if key in self._offsets else 0

    def data_offset(self, key: str) -> int:
        return self._offsets[key][0]


def _np_dtype(name: str, byteorder: str) -> np.dtype:
    base = np.dtype("uint16" if name == "bfloat16" else name)
    return base.newbyteorder("<" if byteorder == "little" else ">") if base.itemsize > 1 else base


def _extent(ref: TensorRef, itemsize: int) -> tuple[int, int]:
    """Byte offset into the root storage and byte span a tensor needs."""
    base = ref.offset * itemsize
    if ref.storage.view is not None:
        base += ref.storage.view[1] * ref.storage.itemsize
    if math.prod(ref.shape) == 0:
        return base, 0
    span = 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    return base, span * itemsize


def _loader(source: _Source, ref: TensorRef, byteorder: str) -> Callable[[], np.ndarray]:
    dtype = _np_dtype(ref.dtype, byteorder)
    start, length = _extent(ref, dtype.itemsize)

    def load() -> np.ndarray:
        if length == 0:
            return np.empty(ref.shape, dtype=dtype.newbyteorder("="))
        flat = np.frombuffer(source.read(ref.storage.key, start, length), dtype=dtype)
        strides = tuple(s * dtype.itemsize for s in ref.stride)
        view = np.lib.stride_tricks.as_strided(flat, ref.shape, strides, writeable=False)
        return np.array(view, dtype=dtype.newbyteorder("="), order="C")

    return load


def _check_extent(source: _Source, key: str, ref: TensorRef) -> None:
    itemsize = _np_dtype(ref.dtype, "little").itemsize
    start, length = _extent(ref, itemsize)
    storage = ref.storage
    declared = storage.numel * storage.itemsize
    if storage.view is not None:
        declared += storage.view[1] * storage.itemsize
    held = source.storage_nbytes(storage.key)
    if declared > held:
        raise FormatError(source.path, f"storage {storage.key!r} declares {storage.numel} "
                          f"{storage.dtype} elements ({declared} bytes) but the file holds "
                          f"{held} bytes for it", tensor=key, fix="the file is damaged")
    if start + length > declared:
        raise FormatError(source.path, f"needs bytes [{start}, {start + length}) of storage "
                          f"{storage.key!r}, which holds {declared}", tensor=key,
                          expected="a tensor inside its storage")


def _checkpoint(path: Path, source: _Source) -> Checkpoint:
    tree = source.tree()
    found = flatten(tree, path)
    byteorder = source.metadata.get("byteorder", "little")
    entries: list[TensorEntry] = []
    by_storage: dict[str, list[str]] = {}
    for key, ref, group in found.tensors:
        _check_extent(source, key, ref)
        by_storage.setdefault(ref.storage.key, []).append(key)
        fields: dict[str, Any] = {"convention": Convention.TORCH, "group": group}
        if group is Group.OPTIMIZER:
            fields.update(role=Role.OPTIMIZER_STATE, layer=key.rpartition(".")[0])
        entries.append(TensorEntry(key, ref.shape, ref.dtype, _loader(source, ref, byteorder),
                                   **fields))
    entries = describe_entries(entries, Convention.TORCH)
    metadata = dict(source.metadata)
    metadata["tied"] = [keys for keys in by_storage.values() if len(keys) > 1]
    metadata["devices"] = sorted({ref.storage.location for _, ref, _ in found.tensors})
    metadata["containers"] = found.containers
    ck = Checkpoint(entries, format=NAME, path=str(path), framework="pytorch",
                    convention=Convention.TORCH, convention_reason=_CONVENTION_REASON,
                    metadata=metadata, extras=found.extras)
    ck._closers.append(source.close)
    return ck
