"""One exception family for everything weightgraft refuses.

Every error says three things: what happened, what was expected, and how to fix it.
Each class also derives from the builtin exception a caller would naturally catch
(``ValueError`` for bad content, ``ImportError`` for a missing extra, ...), so code that
does not know weightgraft still handles it sensibly.

Example:
    >>> try:
    ...     raise FormatError("model.h5", "the file is empty", expected="an HDF5 file")
    ... except WeightgraftError as exc:
    ...     print(exc)
    model.h5: the file is empty (expected an HDF5 file)
"""

from __future__ import annotations

import os
from typing import Any


class WeightgraftError(Exception):
    """Base of every error weightgraft raises on purpose."""

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike[str] | None = None,
        tensor: str | None = None,
        expected: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = os.fspath(path) if path is not None else None
        self.tensor = tensor
        self.expected = expected
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}"
            if self.tensor:
                where += f" [{self.tensor}]"
            where += ": "
        elif self.tensor:
            where = f"[{self.tensor}]: "
        text = where + self.problem
        if self.expected:
            text += f" (expected {self.expected})"
        if self.fix:
            text += f". Fix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The error as data, for ``--json`` output."""
        return {
            "error": type(self).__name__,
            "message": str(self),
            "path": self.path,
            "tensor": self.tensor,
            "problem": self.problem,
            "expected": self.expected,
            "fix": self.fix,
        }


class FormatError(WeightgraftError, ValueError):
    """A file's content is not what its format promises (truncated, corrupt, malformed)."""

    def __init__(self, path: Any, problem: str, **kw: Any) -> None:
        super().__init__(problem, path=path, **kw)


class UnknownFormatError(FormatError):
    """No reader recognises the file's content."""


class UnsafeFileError(WeightgraftError, ValueError):
    """The file asks to run code or reach outside itself; it is refused, with no unsafe fallback."""

    def __init__(self, path: Any, problem: str, **kw: Any) -> None:
        super().__init__(problem, path=path, **kw)


class MissingDependencyError(WeightgraftError, ImportError):
    """An optional extra (torch, keras, matplotlib, onnx) is needed but not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs {package}, which is not installed",
            fix=f"pip install 'weightgraft[{extra}]'",
        )


class ShapeMismatchError(WeightgraftError, ValueError):
    """A tensor's shape or dtype does not fit the slot it was meant for."""


class LayoutError(WeightgraftError, ValueError):
    """No registered layout transform covers a (kind, role, convention) combination."""


class PlanError(WeightgraftError, ValueError):
    """A match or transplant plan cannot be carried out as asked (missing, unused, ambiguous)."""


class ModelSpecError(WeightgraftError, ValueError):
    """A model given on the command line (file or factory spec) cannot be built."""


class VerificationError(WeightgraftError, AssertionError):
    """Two models that were meant to agree do not."""


def require(package: str, extra: str, purpose: str) -> Any:
    """Import an optional package or raise ``MissingDependencyError`` with an install hint.

    Example:
        >>> np = require("numpy", "all", "reading arrays")
    """
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError(package, extra, purpose) from exc
