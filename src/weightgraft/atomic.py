"""Outputs appear whole or not at all: write to a temporary name beside the target, then rename.

The output gets the permissions any other file the user writes gets: ``0666`` less the
umask (``0644`` under the usual umask 022), or the mode of the file it replaces.
``tempfile.mkstemp`` would leave every output private (``0600``).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(d / "out.bin") as tmp:
    ...     _ = tmp.write_bytes(b"abc")
    >>> (d / "out.bin").read_bytes()
    b'abc'
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "create_beside"]

_ATTEMPTS = 100


def create_beside(target: Path, suffix: str = ".tmp") -> Path:
    """Create an empty, new temporary file in ``target``'s folder and return its path.

    Like ``tempfile.mkstemp`` (a fresh name, never an existing file or link), but created
    with mode ``0666`` so that the umask decides the permissions, as for any file the user
    writes; a target that already exists lends its own permission bits instead.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> tmp = create_beside(d / "model.pt", ".pt")
        >>> tmp.name.startswith(".model.pt.") and tmp.name.endswith(".pt")
        True
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            with contextlib.suppress(FileNotFoundError):
                mode = stat.S_IMODE(os.stat(target).st_mode)
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)
                else:  # pragma: no cover - Windows
                    os.chmod(tmp, mode)
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {target}")  # pragma: no cover


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` ends the temporary name, for writers that insist on an ending
    (Keras's ``.weights.h5``).

    Example:
        >>> import tempfile, pathlib, stat
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_output(d / "plan.json") as tmp:
        ...     _ = tmp.write_text("{}")
        >>> oct(stat.S_IMODE((d / "plan.json").stat().st_mode))   # under umask 022  # doctest: +SKIP
        '0o644'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_beside(target, suffix)
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        yield tmp
        # Some writers (safetensors) replace the file they are given with one of their own,
        # private mode: the output gets the mode chosen above all the same.
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

