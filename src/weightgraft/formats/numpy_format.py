"""NumPy ``.npy`` and ``.npz``: headers read now, each array on ``load()``; never pickle.

A ``.npy`` header is a Python literal that ``numpy.lib.format`` parses without evaluating
code; the array bytes follow it. An ``.npz`` is a zip of ``.npy`` members. Object arrays
would need pickle to load and are refused (``FormatError``), with no fallback.

Each zip member's declared size is checked against its header (dtype x shape) and against
the archive (stored members must fit in it; deflated ones cannot expand more than deflate's
~1032:1 limit), so a hostile archive cannot make ``load()`` allocate what the file cannot hold.

Writing ``.npz`` streams one member at a time. numpy has no bfloat16: such tensors are stored
as their ``uint16`` bits, and the archive's ``__metadata__`` member (a JSON string array)
lists them under ``"weightgraft.bfloat16"`` so that reading it back restores ``bfloat16``.
``np.load`` sees those members as ``uint16``.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from weightgraft.checkpoint import Checkpoint, TensorEntry
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.npz"
    >>> write(Checkpoint([TensorEntry.from_array("w", np.arange(3.0))], "memory"), path)
    >>> read(path)["w"].load()
    array([0., 1., 2.])
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..atomic import atomic_output
from ..checkpoint import Checkpoint, TensorEntry
from ..errors import FormatError
from ..naming import describe_entries, implied_convention
from . import recorded_convention
from .safetensors_format import range_loader

NAME = "numpy"
ALIASES = ("npz", "npy")
EXTENSIONS = (".npz", ".npy")
# An archive holds metadata only as one more array that ``np.load`` shows beside the weights
# (and ``load_state_dict`` would trip over): conversions do not add it unasked.
CARRIES_METADATA = False

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_METADATA = "__metadata__"
_BF16_KEY = "weightgraft.bfloat16"
_DEFLATE_MAX_RATIO = 1100  # deflate's theoretical limit is ~1032:1
_NUMERIC_KINDS = "biufc"


def sniff(path: Path, head: bytes) -> bool:
    """``.npy`` magic, or a zip whose members are all ``.npy`` (or any zip named ``.npz``)."""
    if head.startswith(_NPY_MAGIC):
        return True
    if not head.startswith(_ZIP_MAGIC):
        return False
    if path.name.lower().endswith(".npz"):
        return True  # read() gives the precise error if the archive is damaged
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _parse_header(path: Path, fh: IO[bytes], member: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape, fortran_order of the ``.npy`` stream at ``fh``, checked for safety."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:  # 3.0 differs only in the header's text encoding; numpy has no public reader
            shape, fortran, dtype = fmt._read_array_header(fh, version)
    except (ValueError, SyntaxError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise FormatError(path, f"the .npy header is unreadable: {exc}", tensor=member,
                          expected="a NumPy .npy header") from None
    if dtype.hasobject:
        raise FormatError(path, f"array of dtype {dtype} holds Python objects, which need "
                          "pickle to load", tensor=member, expected="a numeric array",
                          fix="weightgraft never unpickles; re-save the array with a numeric "
                          "dtype")
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _check_dtype(path: Path, dtype: np.dtype, member: str) -> None:
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise FormatError(path, f"array of dtype {dtype} is not a tensor", tensor=member,
                          expected="a numeric or boolean array")


def _finish(array: np.ndarray, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


# -- .npy -----------------------------------------------------------------------------
def _read_npy(path: Path) -> Checkpoint:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        dtype, shape, fortran = _parse_header(path, fh, path.stem)
        start = fh.tell()
    _check_dtype(path, dtype, path.stem)
    need = math.prod(shape) * dtype.itemsize
    if start + need > size:
        raise FormatError(path, f"{dtype} {shape} needs {need:,} bytes but only "
                          f"{size - start:,} follow the header", tensor=path.stem,
                          expected="a complete .npy file", fix="the file is truncated")
    flat = range_loader(path, start, (math.prod(shape),), dtype.str, path.stem)
    entry = TensorEntry(key=path.stem, shape=shape, dtype=dtype.newbyteorder("=").name,
                        loader=lambda: _finish(flat(), shape, fortran))
    return Checkpoint([entry], format=NAME, path=str(path), framework="numpy",
                      convention_reason="a bare .npy records no layout")


# -- .npz -----------------------------------------------------------------------------
def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FormatError(path, f"not a readable zip archive: {exc}",
                          expected="a complete .npz archive",
                          fix="the file is truncated or corrupt; save it again") from None


def _check_member(path: Path, info: zipfile.ZipInfo, archive_size: int) -> None:
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise FormatError(path, f"member uses zip compression method {info.compress_type}",
                          tensor=info.filename, expected="stored or deflated (as np.savez)")
    if info.header_offset + info.compress_size > archive_size:
        raise FormatError(path, f"member declares {info.compress_size:,} bytes beyond the "
                          f"{archive_size:,}-byte archive", tensor=info.filename,
                          fix="the archive is truncated or corrupt")
    limit = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                  else _DEFLATE_MAX_RATIO)
    if info.file_size > limit + 4096:
        raise FormatError(path, f"member declares {info.file_size:,} bytes from "
                          f"{info.compress_size:,} compressed", tensor=info.filename,
                          expected="a size the compressed data can hold")


def _member_loader(path: Path, member: str, dtype: np.dtype, shape: tuple[int, ...],
                   fortran: bool) -> Callable[[], np.ndarray]:
    nbytes = math.prod(shape) * dtype.itemsize

    def load() -> np.ndarray:
        buf = bytearray(nbytes)
        try:
            with _open_zip(path) as zf, zf.open(member) as fh:
                _parse_header(path, fh, member)
                view, got = memoryview(buf), 0
                while got < nbytes:  # ZipExtFile.readinto may return short reads
                    n = fh.readinto(view[got:])
                    if not n:
                        break
                    got += n
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise FormatError(path, f"cannot read the member: {exc}", tensor=member,
                              fix="the archive is truncated or corrupt") from None
        if got != nbytes:
            raise FormatError(path, f"only {got:,} of {nbytes:,} bytes could be read",
                              tensor=member, fix="the archive is truncated")
        array = np.frombuffer(buf, dtype=dtype)
        if not dtype.isnative:
            array = array.astype(dtype.newbyteorder("="))
        return _finish(array, shape, fortran)

    return load


def _read_metadata(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    with zf.open(info) as fh:
        dtype, shape, _ = _parse_header(path, fh, _METADATA)
        if dtype.kind != "U" or shape != () or info.file_size > 10_000_000:
            return {}
        raw = fh.read(dtype.itemsize)
    try:
        text = np.frombuffer(raw, dtype=dtype)[0]
        meta = json.loads(str(text))
    except (ValueError, IndexError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _read_npz(path: Path) -> Checkpoint:
    size = path.stat().st_size
    entries: list[TensorEntry] = []
    extras: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    with _open_zip(path) as zf:
        members = zf.infolist()
        for info in members:
            if info.filename == f"{_METADATA}.npy":
                _check_member(path, info, size)
                metadata = _read_metadata(path, zf, info)
        for info in members:
            name = info.filename
            if name == f"{_METADATA}.npy" or name.endswith("/"):
                continue
            if not name.endswith(".npy"):
                extras[name] = f"non-array member ({info.file_size:,} bytes), not read"
                continue
            _check_member(path, info, size)
            key = name[: -len(".npy")]
            try:
                with zf.open(info) as fh:
                    dtype, shape, fortran = _parse_header(path, fh, key)
                    header_len = fh.tell()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise FormatError(path, f"cannot read the member: {exc}", tensor=key,
                                  fix="the archive is truncated or corrupt") from None
            if dtype.kind in "USV" and dtype.fields is None:
                extras[key] = f"{dtype} array {shape}, not a tensor"
                continue
            _check_dtype(path, dtype, key)
            need = math.prod(shape) * dtype.itemsize
            if header_len + need != info.file_size:
                raise FormatError(path, f"{dtype} {shape} needs {need:,} bytes but the member "
                                  f"holds {info.file_size - header_len:,}", tensor=key,
                                  expected="a complete .npy member")
            entries.append(TensorEntry(key=key, shape=shape,
                                       dtype=dtype.newbyteorder("=").name,
                                       loader=_member_loader(path, name, dtype, shape, fortran)))
    bf16 = set(metadata.get(_BF16_KEY, []))
    entries = [e.with_(dtype="bfloat16") if e.key in bf16 and e.dtype == "uint16" else e
               for e in entries]
    recorded = recorded_convention(metadata)
    entries = describe_entries(entries, recorded[0] if recorded else None)
    convention, reason = recorded or implied_convention(entries)
    return Checkpoint(entries, format=NAME, path=str(path), framework="numpy",
                      convention=convention, convention_reason=reason, metadata=metadata,
                      extras=extras)


def read(path: Path) -> Checkpoint:
    """Open a ``.npy`` or ``.npz`` lazily; object arrays are refused, never unpickled.

    Example:
        >>> ck = read(Path("weights.npz"))      # doctest: +SKIP
        >>> ck.keys()                           # doctest: +SKIP
        ['conv1/kernel', 'conv1/bias']
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_NPY_MAGIC):
        return _read_npy(path)
    return _read_npz(path)


def write(checkpoint: Checkpoint, path: Path, *, metadata: dict[str, Any] | None = None) -> None:
    """Write model tensors to an uncompressed ``.npz`` (as ``np.savez``), one at a time.

    ``metadata`` (JSON-serialisable) is stored in a ``__metadata__`` string member.

    Example:
        >>> write(ck, Path("weights.npz"), metadata={"source": "model.pth"})  # doctest: +SKIP
    """
    path = Path(path)
    if not path.name.lower().endswith(".npz"):
        raise FormatError(path, "numpy output must be an .npz archive",
                          expected="a name ending in .npz", fix="rename the output")
    entries = checkpoint.model_entries()
    meta = dict(metadata or {})
    bf16 = [e.key for e in entries if e.dtype == "bfloat16"]
    if bf16:
        meta[_BF16_KEY] = bf16
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for e in entries:
                array = np.asarray(e.load(raw=True))
                if array.shape != e.shape:
                    raise FormatError(path, f"loaded shape {array.shape} but the table says "
                                      f"{e.shape}", tensor=e.key)
                with zf.open(f"{e.key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.require(array, requirements="C"),
                                              allow_pickle=False)
            if meta:
                text = np.array(json.dumps(meta, sort_keys=True, default=str))
                with zf.open(f"{_METADATA}.npy", "w") as fh:
                    np.lib.format.write_array(fh, text, allow_pickle=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

