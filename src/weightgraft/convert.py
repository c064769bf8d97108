"""Change a checkpoint's file format, tensor by tensor, bit-exact; layouts stay as they are.

The source is read lazily and each writer loads one tensor at a time, so memory stays
bounded by the largest tensor. The output is written to a temporary name beside the target
and renamed when complete; the input file is never touched.

Example:
    >>> from weightgraft.convert import convert                     # doctest: +SKIP
    >>> r = convert("tiny.pth", "tiny.safetensors")                 # doctest: +SKIP
    >>> r.tensors, r.output_format                                  # doctest: +SKIP
    (42, 'safetensors')
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, Group, TensorEntry
from .errors import VerificationError, WeightgraftError

__all__ = ["ConvertResult", "convert", "check_same_tensors"]

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote, what it left out, and how long it took."""

    source: str
    output: str
    source_format: str
    output_format: str
    tensors: int
    params: int
    nbytes: int
    seconds: float
    left_out: tuple[str, ...] = ()  # optimizer state and other non-model tensors, by key
    extras_left_out: tuple[str, ...] = ()  # non-tensor values no writer can carry
    checked: bool = False  # the output was read back and compared byte for byte

    @property
    def bytes_per_second(self) -> float:
        return self.nbytes / self.seconds if self.seconds > 0 else float("inf")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _with_progress(ck: Checkpoint, progress: Progress) -> None:
    """Report bytes as each tensor is loaded by the writer (the only place bytes move)."""
    total = sum(e.nbytes for e in ck.model_entries())
    done = [0]

    def wrap(entry: TensorEntry) -> TensorEntry:
        inner = entry.loader

        def load() -> np.ndarray:
            array = inner()
            done[0] += entry.nbytes
            progress(done[0], total)
            return array

        return entry.with_(loader=load)

    ck.replace_entries([wrap(e) if e.group is Group.MODEL else e for e in ck])
    progress(0, total)


def check_same_tensors(source: Checkpoint, output: Checkpoint) -> None:
    """Raise ``VerificationError`` unless every model tensor of ``source`` is in ``output``
    with the same key, shape, dtype and bytes. Loads one pair of tensors at a time.

    Example:
        >>> with open_checkpoint("a.pth") as a, open_checkpoint("a.safetensors") as b:  # doctest: +SKIP
        ...     check_same_tensors(a, b)
    """
    for e in source.model_entries():
        if e.key not in output:
            raise VerificationError(f"tensor {e.key!r} is missing from the output",
                                    path=output.path, expected="every model tensor of the source")
        o = output[e.key]
        if o.shape != e.shape or o.dtype != e.dtype:
            raise VerificationError(
                f"tensor {e.key!r} is {o.shape} {o.dtype} in the output",
                path=output.path, expected=f"{e.shape} {e.dtype} as in the source")
        a, b = e.load(raw=True), o.load(raw=True)
        if (np.require(a, requirements="C").tobytes()
                != np.require(b, requirements="C").tobytes()):
            raise VerificationError(f"tensor {e.key!r} differs from the source",
                                    path=output.path, expected="bit-identical bytes")


def convert(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, format: str | None = None,
    metadata: dict[str, Any] | None = None, check: bool = False,
    progress: Progress | None = None,
) -> ConvertResult:
    """Write ``src``'s model tensors to ``dst`` in another file format, bit-exact.

    ``format`` names the output format (else it follows ``dst``'s ending); ``metadata`` is
    passed to writers that store it (safetensors). ``check=True`` reads the output back
    and compares every tensor byte for byte. ``progress(done, total)`` is called in bytes.

    Example:
        >>> r = convert("model.safetensors", "model.pt", check=True)   # doctest: +SKIP
        >>> r.checked, r.left_out                                      # doctest: +SKIP
        (True, ())
    """
    from .formats import for_output, open_checkpoint

    src_path, dst_path = Path(src), Path(dst)
    if _same_file(src_path, dst_path):
        raise WeightgraftError("the output is the input file", path=dst_path,
                               expected="a different output path",
                               fix="name a new file with -o; inputs are never overwritten")
    writer = for_output(dst_path, format)  # fail before reading anything
    started = time.perf_counter()
    with open_checkpoint(src_path) as ck:
        model = ck.model_entries()
        left_out = tuple(e.key for e in ck if e.group is not Group.MODEL)
        if progress is not None:
            _with_progress(ck, progress)
        writer.write(ck, dst_path, metadata=metadata)
        if check:
            with open_checkpoint(dst_path) as out:
                check_same_tensors(ck, out)
        result = ConvertResult(
            source=str(src_path), output=str(dst_path), source_format=ck.format,
            output_format=writer.NAME, tensors=len(model),
            params=sum(e.num_params for e in model), nbytes=sum(e.nbytes for e in model),
            seconds=time.perf_counter() - started, left_out=left_out,
            extras_left_out=tuple(str(k) for k in ck.extras), checked=check,
        )
    return result
