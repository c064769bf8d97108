"""Hardened, lazy HDF5 access shared by the Keras readers.

h5py follows whatever a file says: external links to other files, soft links, datasets whose
bytes live in external raw files, chunked datasets that declare terabytes and store nothing.
Keras 3 refuses these (``saving_lib.safe_get_h5_group``/``safe_get_h5_dataset``: "Not allowed:
H5 file with ExternalLink"); so do we, and every h5py exception becomes a ``FormatError`` or
``UnsafeFileError`` naming the file and the group or dataset.

Example:
    >>> import h5py, numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.h5"
    >>> with h5py.File(p, "w") as f:
    ...     f["g/w"] = np.arange(3.0)
    >>> f = open_h5(p, p)
    >>> dataset_loader(f, H5Index(f, p).datasets["g/w"], p)()
    array([0., 1., 2.])
    >>> f.close()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5l, h5o

from ..errors import FormatError, UnsafeFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Like Keras: a dataset declaring far more bytes than it stores is a shape/decompression bomb.
BOMB_FLOOR_BYTES = 1 << 30
BOMB_MAX_EXPANSION = 1000


def is_hdf5(head: bytes) -> bool:
    """HDF5 signature at offset 0 or after a user block (512, 1024, 2048 bytes).

    Example:
        >>> is_hdf5(b"\\x89HDF\\r\\n\\x1a\\n" + bytes(8)), is_hdf5(b"PK\\x03\\x04")
        (True, False)
    """
    return any(head[off:off + 8] == HDF5_SIGNATURE for off in (0, 512, 1024, 2048))


def open_h5(source: Any, path: Path | str) -> h5py.File:
    """Open an HDF5 file (or file-like object) read-only, errors as ``FormatError``.

    Example:
        >>> open_h5("/nonexistent.h5", "/nonexistent.h5")        # doctest: +SKIP
    """
    try:
        return h5py.File(source, "r")
    except Exception as exc:  # h5py raises OSError/ValueError/KeyError for broken files
        raise FormatError(path, f"cannot open as HDF5 ({exc_summary(exc)})",
                          expected="a complete HDF5 file",
                          fix="the file may be truncated or corrupt: re-download or re-save it") from exc


def exc_summary(exc: BaseException) -> str:
    """The first line of an exception's message, for embedding in our own errors.

    Example:
        >>> exc_summary(OSError("truncated file\\nmore detail"))
        'truncated file'
    """
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@dataclass(frozen=True)
class DatasetHeader:
    """What a reader needs to know about one dataset, read from the header only."""

    path: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name, "bfloat16" where Keras tagged it so, "" if not numeric
    offset: int | None  # file offset of contiguous data (grows in write order), else None


class H5Index:
    """Every link, group and dataset of an open file, from one pass over its header.

    Refuses soft and external links anywhere in the file, and datasets stored in external
    files or as virtual views, before anything is read. Uses h5py's low-level API: building
    one high-level object per dataset costs ~100x more on a 10,000-tensor file.

    Example:
        >>> import h5py, numpy as np, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.h5"
        >>> with h5py.File(p, "w") as f:
        ...     f["g/w"] = np.arange(3.0)
        >>> with h5py.File(p, "r") as f:
        ...     index = H5Index(f, p)
        ...     index.datasets["g/w"].shape, "g" in index.groups
        ((3,), True)
    """

    def __init__(self, file: h5py.File, path: Path | str) -> None:
        self.file, self.path = file, path
        self.groups: set[str] = {""}
        self.datasets: dict[str, DatasetHeader] = {}
        bad: list[tuple[bytes, int]] = []
        try:
            # Raising inside h5py's visit callback garbles the error: record, stop, raise after.
            file.id.links.visit(lambda name, info: bad.append((name, info.type)) or 1
                                if info.type in (h5l.TYPE_SOFT, h5l.TYPE_EXTERNAL) else None,
                                info=True)
            if bad:
                self._refuse_link(*bad[0])
            found: list[tuple[str, int]] = []
            h5o.visit(file.id, lambda name, info: found.append((name.decode("utf-8", "replace"),
                                                                  info.type)), info=True)
        except UnsafeFileError:
            raise
        except Exception as exc:
            raise FormatError(path, f"cannot list the HDF5 file's contents ({exc_summary(exc)})",
                              fix="the file may be truncated or corrupt") from exc
        for name, kind in found:
            if kind == h5o.TYPE_GROUP:
                self.groups.add(name)
            elif kind == h5o.TYPE_DATASET:
                self.datasets[name] = self._header(name)

    def _refuse_link(self, name: bytes, link_type: int) -> None:
        kind = "SoftLink" if link_type == h5l.TYPE_SOFT else "ExternalLink"
        where = "/" + name.decode("utf-8", "replace")
        raise UnsafeFileError(
            self.path, f"Not allowed: H5 file with {kind} at {where}", tensor=where,
            expected="plain groups and datasets stored inside the file",
            fix="re-save the weights with Keras; links can point outside the file")

    def _header(self, name: str) -> DatasetHeader:
        try:
            ds = h5d.open(self.file.id, name.encode())
            plist = ds.get_create_plist()
            external = plist.get_external_count()
            virtual = plist.get_layout() == h5d.VIRTUAL
            dt = ds.dtype
            tagged = h5a.exists(ds, b"dtype") and self._attr_of(ds, "dtype") in (
                "bfloat16", b"bfloat16")
            offset = ds.get_offset()
            shape = tuple(ds.shape)
        except Exception as exc:
            raise FormatError(self.path, f"cannot read dataset header ({exc_summary(exc)})",
                              tensor="/" + name) from exc
        if external:
            raise UnsafeFileError(self.path, "Not allowed: H5 file with external dataset storage "
                                             f"({plist.get_external(0)[0]!r})", tensor="/" + name,
                                  fix="re-save the weights so the data is inside the file")
        if virtual:
            raise UnsafeFileError(self.path, "Not allowed: H5 file with a virtual dataset",
                                  tensor="/" + name,
                                  fix="re-save the weights so the data is inside the file")
        dtype = "bfloat16" if tagged else (dt.name if dt.kind in "biufc" else "")
        return DatasetHeader(name, shape, dtype, offset)

    @staticmethod
    def _attr_of(obj: Any, name: str) -> Any:
        attr = h5a.open(obj, name.encode())
        value = np.empty(attr.shape or (), dtype=attr.dtype)
        if value.size:
            attr.read(value)
        return value[()] if value.ndim == 0 else value

    def attr(self, group: str, name: str) -> Any:
        """A group's attribute (``None`` when absent), read without building h5py objects."""
        try:
            gid = h5g.open(self.file.id, (group or "/").encode())
            if not h5a.exists(gid, name.encode()):
                return None
            return self._attr_of(gid, name)
        except Exception as exc:
            raise FormatError(self.path, f"cannot read attribute {name!r} of /{group} "
                                         f"({exc_summary(exc)})", tensor="/" + group) from exc

    def dataset(self, group: str, name: str, *, what: str) -> DatasetHeader:
        """The numeric dataset ``group/name``; a FormatError naming what listed it if absent."""
        full = f"{group}/{name}" if group else name
        header = self.datasets.get(full)
        if header is None:
            problem = "is a group, not a dataset" if full in self.groups else "does not exist"
            raise FormatError(self.path, f"{what} '/{full}' {problem}", tensor="/" + full,
                              expected="every name the file lists to be stored in it",
                              fix="the file is incomplete or was edited; re-save it")
        if not header.dtype:
            raise FormatError(self.path, "dataset does not hold numbers", tensor="/" + full,
                              expected="a numeric weight array")
        return header

    def require_group(self, group: str, *, what: str) -> None:
        """A FormatError naming what listed ``group`` when the file has no such group."""
        if group not in self.groups:
            raise FormatError(self.path, f"{what} '/{group}' does not exist", tensor="/" + group,
                              expected="every name the file lists to be stored in it",
                              fix="the file is incomplete or was edited; re-save it")


def dataset_loader(file: h5py.File, header: DatasetHeader,
                   path: Path | str) -> Callable[[], np.ndarray]:
    """A loader that reads one dataset when called, after the bomb check."""
    ds_path = header.path

    def load() -> np.ndarray:
        try:
            ds = file[ds_path]
            declared = math.prod(ds.shape) * ds.dtype.itemsize
            if declared > BOMB_FLOOR_BYTES:
                stored = ds.id.get_storage_size()
                if declared > BOMB_MAX_EXPANSION * max(stored, 1):
                    raise UnsafeFileError(
                        path, f"Not allowed: dataset declares {declared} bytes but stores "
                              f"{stored}; refusing a decompression/shape bomb", tensor=ds_path)
            array = np.asarray(ds[()])
        except UnsafeFileError:
            raise
        except Exception as exc:
            hint = "load tensors before closing the checkpoint" if not file.id.valid else \
                "the file may be truncated or corrupt"
            raise FormatError(path, f"cannot read tensor data ({exc_summary(exc)})", tensor=ds_path,
                              fix=hint) from exc
        return array.view(np.uint16) if header.dtype == "bfloat16" else array

    return load
