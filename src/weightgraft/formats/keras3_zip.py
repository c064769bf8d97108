"""Keras 3 ``.keras`` archives: ``config.json``, ``metadata.json`` and ``model.weights.h5``.

The weights are read from inside the zip without extracting or buffering them: h5py opens
the archive member as a seekable file object (Keras writes members uncompressed), and each
tensor's bytes are read on ``load()``. Layer classes and configs come from ``config.json``
and are joined to the weight paths through the ``name`` attribute Keras stores on each
``vars`` group (the path segment ``layers/dense_1`` names the class, not the layer).

Every member's declared size is checked against the archive before anything is read: a
member that claims more bytes than the archive holds or than DEFLATE can produce from its
stored bytes is refused as a zip bomb.

Example:
    >>> import weightgraft as wg                                   # doctest: +SKIP
    >>> with wg.open_checkpoint("model.keras") as ck:             # doctest: +SKIP
    ...     print(ck.framework_version, [l.name for l in ck.layers])
    3.15.0 ['d_0', 'd_1', 'd_2', 'dense']
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import FormatError, UnsafeFileError
from .hdf5_access import open_h5
from .keras3_h5 import checkpoint_from_files

NAME = "keras3-zip"
EXTENSIONS = (".keras",)
ALIASES = ("keras",)

WEIGHTS_MEMBER = "model.weights.h5"
MAX_JSON_BYTES = 64 << 20
# DEFLATE cannot expand more than ~1032:1; anything claiming more is lying about its size.
MAX_EXPANSION = 1100
_SMALL = 1 << 20


def sniff(path: Path, head: bytes) -> bool:
    """A zip whose central directory lists ``config.json`` with Keras's weights or metadata.

    Example:
        >>> sniff(Path("model.keras"), b"\\x89HDF")
        False
    """
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return path.name.lower().endswith(".keras")  # a broken .keras: ours to explain
    return "config.json" in names and (WEIGHTS_MEMBER in names or "metadata.json" in names)


def _check_members(zf: zipfile.ZipFile, path: Path) -> None:
    archive = path.stat().st_size
    for info in zf.infolist():
        declared, stored = info.file_size, info.compress_size
        bad = stored > archive or (
            info.compress_type == zipfile.ZIP_STORED and declared != stored) or (
            declared > _SMALL and declared > MAX_EXPANSION * max(stored, 1))
        if bad:
            raise UnsafeFileError(
                path, f"Not allowed: zip member {info.filename!r} declares {declared} bytes "
                      f"from {stored} stored bytes in a {archive}-byte archive",
                tensor=info.filename, expected="member sizes the archive can actually hold",
                fix="the archive is corrupt or a decompression bomb; re-save the model")


def _read_json(zf: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        with zf.open(name) as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except KeyError as exc:
        raise FormatError(path, f"archive has no {name}", tensor=name,
                          expected="a .keras archive with config.json, metadata.json, "
                                   "model.weights.h5", fix="re-save with model.save('x.keras')") from exc
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise FormatError(path, f"cannot read {name} from the archive ({exc})", tensor=name,
                          fix="the archive is truncated or corrupt; re-save it") from exc
    if len(raw) > MAX_JSON_BYTES:
        raise FormatError(path, f"{name} is larger than 64 MiB", tensor=name)
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"{name} is not valid JSON ({exc})", tensor=name) from exc


def read(path: Path) -> Checkpoint:
    """Read a ``.keras`` archive lazily: configs now, tensor bytes on ``load()``.

    Example:
        >>> ck = read(Path("model.keras"))                          # doctest: +SKIP
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FormatError(path, f"not a readable zip archive ({exc})",
                          expected="a complete .keras archive",
                          fix="the file may be truncated; re-download or re-save it") from exc
    closers = [zf.close]
    try:
        _check_members(zf, path)
        config = _read_json(zf, "config.json", path)
        names = zf.namelist()
        metadata = _read_json(zf, "metadata.json", path) if "metadata.json" in names else {}
        if WEIGHTS_MEMBER not in names:
            found = ", ".join(n for n in names if "weights" in n) or "none"
            raise FormatError(path, f"archive has no {WEIGHTS_MEMBER} (weight members: {found})",
                              expected="HDF5 weights (the default of model.save)",
                              fix="re-save with model.save('x.keras') (npz weights are not read)")
        try:
            member = zf.open(WEIGHTS_MEMBER)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise FormatError(path, f"cannot open {WEIGHTS_MEMBER} ({exc})",
                              tensor=WEIGHTS_MEMBER) from exc
        closers.append(member.close)
        h5 = open_h5(member, f"{path}!{WEIGHTS_MEMBER}")
        closers.append(h5.close)
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        ck = checkpoint_from_files([h5], path, fmt=NAME,
                                   model_config=config if isinstance(config, dict) else None,
                                   version=str(version) if version else None)
    except BaseException:
        for close in reversed(closers):
            close()
        raise
    if isinstance(metadata, dict):
        ck.metadata.update({f"keras_{k}" if not k.startswith("keras") else k: v
                            for k, v in metadata.items() if isinstance(v, (str, int, float))})
    ck._closers.extend(closers)  # Checkpoint.close pops: h5 first, then member, then zip
    return ck
