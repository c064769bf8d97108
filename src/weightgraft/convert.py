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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, Convention, Group, TensorEntry
from .errors import VerificationError, WeightgraftError
from .formats import CONVENTION_KEY  # the layout, recorded so no reader guesses it from names

__all__ = ["CONVENTION_KEY", "ConvertResult", "carried_metadata", "check_same_tensors", "convert"]

# What each framework's safetensors files say in ``format`` (transformers checks this key).
_ECOSYSTEM_FORMAT = {Convention.TORCH: "pt"}
# Keys a writer adds for itself, not the source's own metadata.
_WRITER_KEYS = frozenset({"weightgraft.bfloat16"})

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
    metadata: dict[str, str] = field(default_factory=dict)  # what the output records
    metadata_left_out: tuple[str, ...] = ()  # keys the output format cannot hold

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


def _source_strings(ck: Checkpoint) -> dict[str, str]:
    """The source's own string metadata, wherever its format keeps it."""
    meta: Any = ck.metadata or {}
    if ck.format.startswith("safetensors"):
        meta = meta.get("shard_metadata", {}) if ck.format.endswith("-sharded") else meta
    elif ck.format == "pytorch":  # what this writer stored in extra/weightgraft.json
        meta = meta.get("weightgraft") or {}
    elif ck.format != "numpy":  # other readers' metadata is their own bookkeeping
        meta = {}
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items()
            if isinstance(k, str) and isinstance(v, str) and k not in _WRITER_KEYS}


def carried_metadata(ck: Checkpoint, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a converted file records: the source's string metadata, the source's layout
    convention (``format='pt'`` for a PyTorch layout, as the safetensors ecosystem writes
    it, and ``weightgraft.convention``), then ``extra`` on top.

    Example:
        >>> from weightgraft.checkpoint import Checkpoint
        >>> carried_metadata(Checkpoint([], "safetensors", convention="torch",
        ...                             metadata={"note": "hi"}))
        {'note': 'hi', 'format': 'pt', 'weightgraft.convention': 'torch'}
    """
    meta: dict[str, Any] = _source_strings(ck)
    convention = Convention(ck.convention)
    if convention in _ECOSYSTEM_FORMAT:
        meta.setdefault("format", _ECOSYSTEM_FORMAT[convention])
    if convention is not Convention.UNKNOWN:
        meta[CONVENTION_KEY] = convention.value
    meta.update(extra or {})
    return meta


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

    ``format`` names the output format (else it follows ``dst``'s ending). The output
    records the source's string metadata and its layout convention (see
    ``carried_metadata``), with ``metadata`` on top; a format that cannot hold them
    (``.npz``) gets only ``metadata``, and the result lists what was left out.
    ``check=True`` reads the output back and compares every tensor byte for byte.
    ``progress(done, total)`` is called in bytes.

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
        meta = carried_metadata(ck, metadata)
        meta_left_out: tuple[str, ...] = ()
        if not getattr(writer, "CARRIES_METADATA", True):
            meta_left_out = tuple(k for k in meta if k not in (metadata or {}))
            meta = dict(metadata or {})
        writer.write(ck, dst_path, metadata=meta or None)
        if check:
            with open_checkpoint(dst_path) as out:
                check_same_tensors(ck, out)
        result = ConvertResult(
            source=str(src_path), output=str(dst_path), source_format=ck.format,
            output_format=writer.NAME, tensors=len(model),
            params=sum(e.num_params for e in model), nbytes=sum(e.nbytes for e in model),
            seconds=time.perf_counter() - started, left_out=left_out,
            extras_left_out=tuple(str(k) for k in ck.extras), checked=check,
            metadata={str(k): v if isinstance(v, str) else str(v) for k, v in meta.items()},
            metadata_left_out=meta_left_out,
        )
    return result
