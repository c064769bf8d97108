"""Readers and writers, one module per format, behind one small interface.

Each format module defines:

- ``NAME``: the format's name as shown to users (``"safetensors"``, ``"keras-h5"``, ...);
- ``EXTENSIONS``: file name endings it usually has (used for writing and for hints only);
- ``sniff(path, head) -> bool``: whether the content (``head`` = first 4096 bytes) is ours;
- ``read(path) -> Checkpoint``: lazy, hardened; raises ``FormatError``/``UnsafeFileError``;
- optionally ``write(checkpoint, path, *, metadata=None) -> None``: atomic.

Example:
    >>> from weightgraft.formats import open_checkpoint   # doctest: +SKIP
    >>> with open_checkpoint("model.safetensors") as ck:   # doctest: +SKIP
    ...     print(len(ck), ck.format)
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

from ..checkpoint import Checkpoint, Convention
from ..errors import FormatError, UnknownFormatError

# Metadata key under which ``graft convert`` records the layout the tensors are stored in,
# so that a reader of a format without a layout of its own (safetensors, npz) need not guess.
CONVENTION_KEY = "weightgraft.convention"

# Sniff order matters only where two formats share a container (HDF5, zip, JSON index):
# the more specific reader goes first.
_MODULES = (
    "safetensors_format",
    "sharded_index",
    "keras3_zip",
    "keras3_h5",
    "keras_legacy_h5",
    "torch_pickle",
    "numpy_format",
    "onnx_format",
)


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":  # reader not written yet
            return None
        raise


def formats() -> list[ModuleType]:
    """The available format modules, in sniff order."""
    return [m for m in (_load(n) for n in _MODULES) if m is not None]


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4096)


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _regular_file(p: Path) -> os.stat_result:
    """``p``'s status, or a ``FormatError`` saying why it is no checkpoint file.

    Checked before anything opens ``p``: reading a FIFO blocks until a writer comes, and a
    device such as ``/dev/zero`` reports size 0 yet never ends.
    """
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FormatError(p, "no such file", fix="check the path") from None
    except OSError as exc:
        raise FormatError(p, f"cannot be read ({exc.strerror or exc})",
                          fix="check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(p, "is a directory, not a checkpoint file", fix="name one file inside it")
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "special file")
        raise FormatError(p, f"is not a regular file: it is {what}",
                          expected="a checkpoint file on disk",
                          fix="save the stream to a file first, then name that file")
    return st


def detect(path: str | os.PathLike[str]) -> ModuleType:
    """The format module that recognises ``path``'s content.

    Example:
        >>> detect("model.safetensors").NAME                  # doctest: +SKIP
        'safetensors'
    """
    p = Path(path)
    if _regular_file(p).st_size == 0:
        raise FormatError(p, "the file is empty", expected="a checkpoint file with content")
    head = _head(p)
    for mod in formats():
        if mod.sniff(p, head):
            return mod
    known = ", ".join(m.NAME for m in formats())
    raise UnknownFormatError(
        p,
        "no reader recognises this file's content",
        expected=f"one of: {known}",
        fix="check the file is a complete checkpoint (not truncated or a different kind of file)",
    )


def recorded_convention(metadata: dict[str, Any]) -> tuple[Convention, str] | None:
    """The convention a file's metadata records under ``CONVENTION_KEY``, and why; else None.

    Example:
        >>> recorded_convention({"weightgraft.convention": "theano"})
        (<Convention.THEANO: 'theano'>, "metadata says weightgraft.convention='theano' (recorded when the file was converted)")
    """
    value = metadata.get(CONVENTION_KEY)
    try:
        convention = Convention(value)
    except ValueError:
        return None
    if convention is Convention.UNKNOWN:
        return None
    return convention, (f"metadata says {CONVENTION_KEY}={value!r} "
                        "(recorded when the file was converted)")


def by_name(name: str) -> ModuleType:
    for mod in formats():
        if name == mod.NAME or name in getattr(mod, "ALIASES", ()):
            return mod
    raise UnknownFormatError(None, f"unknown format {name!r}",
                             expected=", ".join(m.NAME for m in formats()))


def for_output(path: str | os.PathLike[str], format: str | None = None) -> ModuleType:
    """The writer for an output path, from an explicit format name or the file's ending."""
    if format:
        mod = by_name(format)
    else:
        name = os.fspath(path).lower()
        candidates = [m for m in formats() if hasattr(m, "write")
                      and any(name.endswith(ext) for ext in m.EXTENSIONS)]
        if not candidates:
            writable = [f"{m.NAME} ({', '.join(m.EXTENSIONS)})" for m in formats() if hasattr(m, "write")]
            raise UnknownFormatError(path, "cannot tell the output format from the file name",
                                     expected="; ".join(writable), fix="pass --format")
        mod = max(candidates, key=lambda m: max(len(e) for e in m.EXTENSIONS if name.endswith(e)))
    if not hasattr(mod, "write"):
        raise UnknownFormatError(path, f"format {mod.NAME} can be read but not written")
    return mod


def open_checkpoint(path: str | os.PathLike[str], *, format: str | None = None) -> Checkpoint:
    """Read any supported checkpoint lazily: header and index now, tensor bytes on ``load()``."""
    if format:
        _regular_file(Path(path))  # detect checks this too; a named reader would just block
        mod = by_name(format)
    else:
        mod = detect(path)
    return mod.read(Path(path))


def write_checkpoint(
    checkpoint: Checkpoint, path: str | os.PathLike[str], *, format: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint's model tensors to ``path``, atomically, bit-exact."""
    for_output(path, format).write(checkpoint, Path(path), metadata=metadata)
