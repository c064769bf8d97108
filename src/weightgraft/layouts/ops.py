"""Invertible array operations: the vocabulary every layout transform is written in.

Each operation is a frozen dataclass with ``apply``, ``inverse``, ``describe`` and a
dict form. Transforms are sequences of these, so a rule's inverse is never written by
hand: it is the reversed sequence of each operation's own inverse, and every operation is
a pure re-indexing (no arithmetic), which makes ``inverse(forward(w)) == w`` exact.

Example:
    >>> import numpy as np
    >>> op = Transpose((1, 0))
    >>> w = np.arange(6).reshape(2, 3)
    >>> bool((op.inverse().apply(op.apply(w)) == w).all()), op.describe()
    (True, 'transpose axes (1, 0)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ShapeMismatchError


class Op:
    """Base of the invertible operations (see the module docstring)."""

    name: ClassVar[str] = ""
    note: str

    def apply(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def inverse(self) -> Op:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        return {"op": self.name, **data}

    def _label(self, text: str) -> str:
        return f"{text}: {self.note}" if self.note else text

    def _need_rank(self, array: np.ndarray, rank: int | None = None, at_least: int = 0) -> None:
        if (rank is not None and array.ndim != rank) or array.ndim < at_least:
            want = f"rank {rank}" if rank is not None else f"rank >= {at_least}"
            raise ShapeMismatchError(
                f"cannot {self.describe()} on an array of shape {array.shape}",
                expected=f"an array of {want}",
                fix="check that the tensor's kind, role and convention are described correctly",
            )


@dataclass(frozen=True)
class Transpose(Op):
    """Permute axes (``np.transpose``)."""

    axes: tuple[int, ...]
    note: str = ""
    name: ClassVar[str] = "transpose"

    def apply(self, array: np.ndarray) -> np.ndarray:
        self._need_rank(array, len(self.axes))
        return np.require(np.transpose(array, self.axes), requirements="C")

    def inverse(self) -> Transpose:
        return Transpose(tuple(int(i) for i in np.argsort(self.axes)), _reverse_note(self.note))

    def describe(self) -> str:
        return self._label(f"transpose axes {tuple(self.axes)}")


@dataclass(frozen=True)
class Flip(Op):
    """Reverse the given axes (a convolution kernel's spatial axes; its own inverse)."""

    axes: tuple[int, ...]
    note: str = ""
    name: ClassVar[str] = "flip"

    def apply(self, array: np.ndarray) -> np.ndarray:
        self._need_rank(array, at_least=max(self.axes) + 1)
        return np.require(np.flip(array, self.axes), requirements="C")

    def inverse(self) -> Flip:
        return self

    def describe(self) -> str:
        return self._label(f"flip axes {tuple(self.axes)}")


@dataclass(frozen=True)
class SplitAxis(Op):
    """Split one axis into several (a reshape; ``sizes`` may hold one -1)."""

    axis: int
    sizes: tuple[int, ...]
    note: str = ""
    name: ClassVar[str] = "split_axis"

    def apply(self, array: np.ndarray) -> np.ndarray:
        self._need_rank(array, at_least=self.axis + 1)
        sizes = _resolve(self.sizes, array.shape[self.axis], self)
        shape = array.shape[: self.axis] + sizes + array.shape[self.axis + 1 :]
        return array.reshape(shape)

    def inverse(self) -> MergeAxes:
        return MergeAxes(self.axis, self.sizes, _reverse_note(self.note))

    def describe(self) -> str:
        return self._label(f"split axis {self.axis} into {_sizes(self.sizes)}")


@dataclass(frozen=True)
class MergeAxes(Op):
    """Merge ``len(sizes)`` consecutive axes starting at ``axis`` into one (a reshape)."""

    axis: int
    sizes: tuple[int, ...]
    note: str = ""
    name: ClassVar[str] = "merge_axes"

    def apply(self, array: np.ndarray) -> np.ndarray:
        n = len(self.sizes)
        self._need_rank(array, at_least=self.axis + n)
        got = array.shape[self.axis : self.axis + n]
        if any(s != -1 and s != g for s, g in zip(self.sizes, got)):
            raise ShapeMismatchError(
                f"cannot {self.describe()}: the axes have sizes {got}",
                expected=f"sizes {_sizes(self.sizes)}",
                fix="check the layer context (heads, depth multiplier, feature shape)",
            )
        shape = array.shape[: self.axis] + (math.prod(got),) + array.shape[self.axis + n :]
        return array.reshape(shape)

    def inverse(self) -> SplitAxis:
        return SplitAxis(self.axis, self.sizes, _reverse_note(self.note))

    def describe(self) -> str:
        return self._label(f"merge axes {self.axis}..{self.axis + len(self.sizes) - 1} "
                           f"of sizes {_sizes(self.sizes)}")


@dataclass(frozen=True)
class ReorderBlocks(Op):
    """Cut an axis into equal blocks and reorder them: block ``j`` of the output is block
    ``order[j]`` of the input (recurrent gate order)."""

    axis: int
    order: tuple[int, ...]
    note: str = ""
    name: ClassVar[str] = "reorder_blocks"

    def apply(self, array: np.ndarray) -> np.ndarray:
        self._need_rank(array, at_least=self.axis + 1)
        n = len(self.order)
        if array.shape[self.axis] % n:
            raise ShapeMismatchError(
                f"cannot {self.describe()}: axis {self.axis} has size "
                f"{array.shape[self.axis]}",
                expected=f"a multiple of {n} (one block per gate)",
                fix="check the layer kind (LSTM has 4 gates, GRU 3)",
            )
        blocks = np.split(array, n, axis=self.axis)
        return np.concatenate([blocks[i] for i in self.order], axis=self.axis)

    def inverse(self) -> ReorderBlocks:
        return ReorderBlocks(self.axis, tuple(int(i) for i in np.argsort(self.order)),
                             _reverse_note(self.note))

    def describe(self) -> str:
        return self._label(f"reorder blocks of axis {self.axis} as {tuple(self.order)}")


OPS: dict[str, type[Op]] = {
    c.name: c for c in (Transpose, Flip, SplitAxis, MergeAxes, ReorderBlocks)}


def op_from_dict(data: dict[str, Any]) -> Op:
    """Rebuild an operation from ``Op.to_dict()`` output.

    Example:
        >>> op_from_dict({"op": "flip", "axes": [0, 1], "note": ""})
        Flip(axes=(0, 1), note='')
    """
    fields = dict(data)
    cls = OPS[fields.pop("op")]
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _resolve(sizes: tuple[int, ...], total: int, op: Op) -> tuple[int, ...]:
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if known == 0 or total % known:
            raise ShapeMismatchError(f"cannot {op.describe()}: the axis has size {total}",
                                     expected=f"a multiple of {known}",
                                     fix="check the layer context (heads, depth multiplier)")
        return tuple(total // known if s == -1 else s for s in sizes)
    if known != total:
        raise ShapeMismatchError(f"cannot {op.describe()}: the axis has size {total}",
                                 expected=f"size {known}",
                                 fix="check the layer context (feature shape, heads)")
    return tuple(sizes)


def _sizes(sizes: tuple[int, ...]) -> str:
    return "(" + ", ".join("?" if s == -1 else str(s) for s in sizes) + ")"


def _reverse_note(note: str) -> str:
    """``"label: a -> b"`` read backwards (``"label: b -> a"``); other notes are kept."""
    prefix, _, body = note.rpartition(": ") if ": " in note.split(" -> ")[0] else ("", "", note)
    if " -> " in body:
        left, right = body.split(" -> ", 1)
        body = f"{right} -> {left}"
    return f"{prefix}: {body}" if prefix else body


def simplify(ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """Fuse neighbouring transposes and drop identity ones (both halves of a conversion
    through the canonical layout often end and start with a transpose).

    Example:
        >>> simplify((Transpose((1, 0), "(a, b) -> (b, a)"), Transpose((1, 0), "(b, a) -> (a, b)")))
        ()
    """
    out: list[Op] = []
    for op in ops:
        if out and isinstance(op, Transpose) and isinstance(out[-1], Transpose) \
                and len(op.axes) == len(out[-1].axes):
            first = out.pop()
            op = Transpose(tuple(first.axes[i] for i in op.axes), _join_notes(first.note, op.note))
        if isinstance(op, Transpose) and op.axes == tuple(range(len(op.axes))):
            continue
        out.append(op)
    return tuple(out)


def _join_notes(first: str, second: str) -> str:
    if " -> " in first and " -> " in second and ": " not in first + second:
        return f"{first.split(' -> ', 1)[0]} -> {second.split(' -> ', 1)[1]}"
    return "; ".join(n for n in (first, second) if n)
