"""Training runs as compact, append-only, crash-safe files of per-tensor statistics.

A run file is text, one record per line. The first line is the header (tensor names, shapes,
trainable flags, framework); each later line is one record: step, epoch, time and, per tensor,
``[norm, update_norm, relative_update, max_abs_update, grad_norm, change_norm]``, where the
update is since the previous record and ``change_norm`` is ||w - w_first||, the net change
since the run's first record (the number ``graft diff`` of the two weight sets would give).
A *phase* line (``{"phase": n, "step", "trainable"}``) marks where a reused Keras callback
resumed the run for another ``fit`` (with the trainable flags of that fit). Every line ends
with a tab and the CRC-32 of its JSON, and is written with one ``write`` and a flush, so a
process killed at any moment leaves a file that reads back up to its last complete record: a
torn last line fails its checksum and is dropped.

Snapshots (``snapshot_every=K``) are ``.npz`` files keyed by the tensors' own names (``/``
kept, as Keras's variable paths and PyTorch's parameter names have them), written by the
numpy format writer, so ``graft diff`` pairs them with the model's own checkpoints; dtypes
are kept (bfloat16 as its bits, which that reader restores as bfloat16).

Example:
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "run.wgt")
    >>> rec = StatsRecorder(path, {"w": (2,)}, {"w": True}, framework="numpy")
    >>> rec.record({"w": np.array([1.0, 2.0])}, step=0)
    >>> rec.record({"w": np.array([1.0, 2.5])}, step=1)
    >>> rec.close()
    >>> run = read_run(path)
    >>> len(run.records), round(run.records[1].stats["w"].update_norm, 3)
    (2, 0.5)
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import TensorEntry
from .errors import FormatError

MAGIC = "weightgraft-run"
VERSION = 1
FIELDS = ("norm", "update_norm", "rel_update", "max_update", "grad_norm", "change_norm")
DEAD_REL_UPDATE = 1e-8
EXPLODING_NORM_GROWTH = 10.0
STALLED_RECORDS = 5  # trailing records below DEAD_REL_UPDATE, after moving, that flag "stalled"


@dataclass(frozen=True)
class TensorStats:
    norm: float
    update_norm: float | None
    rel_update: float | None
    max_update: float | None
    grad_norm: float | None
    change_norm: float | None = None  # ||w - w_first||; absent in files of older writers


@dataclass(frozen=True)
class Record:
    step: int
    epoch: int | None
    time: float
    stats: dict[str, TensorStats]


@dataclass(frozen=True)
class Phase:
    """Where a run was resumed (a reused Keras callback's next ``fit``): the step it resumed
    at, how many records came before, and the trainable flags from then on."""

    step: int
    records_before: int
    trainable: dict[str, bool]


@dataclass(frozen=True)
class Run:
    """A run file read back: header facts and every complete record.

    ``trainable`` holds the flags of the last phase (the header's when the run was never
    resumed), ``trainable_at_start`` the header's; ``phases`` lists every resumption.
    """

    path: str
    framework: str
    tensors: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    trainable: dict[str, bool]
    layers: dict[str, str]
    every: str
    records: tuple[Record, ...]
    dropped_lines: int = 0
    snapshots: tuple[str, ...] = ()
    phases: tuple[Phase, ...] = ()
    trainable_at_start: dict[str, bool] = field(default_factory=dict)  # the header's flags


def _line(obj: Any) -> str:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=True)
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n"


def _parse(line: str) -> Any | None:
    """The JSON of one complete, intact line, or None for a torn or corrupt one."""
    if not line.endswith("\n") or "\t" not in line:
        return None
    body, _, crc = line.rstrip("\n").rpartition("\t")
    if f"{zlib.crc32(body.encode()):08x}" != crc:
        return None
    return json.loads(body)


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


def _norm(x: np.ndarray) -> float:
    """L2 norm without BLAS: ``np.linalg.norm`` wakes OpenBLAS's thread pool, whose
    spinning threads then compete with the training loop's own threads for the cores
    (measured: Keras per-batch tracking went from +159% to a few percent overhead)."""
    return math.sqrt(float(np.square(x).sum()))


class StatsRecorder:
    """Framework-neutral recorder: give it the current arrays, it writes one record.

    The framework trackers (``weightgraft.keras.WeightTracker``,
    ``weightgraft.torch.WeightTracker``) compute statistics in their own framework and call
    ``write_stats``; ``record`` is the numpy path used by tests and simple loops.
    """

    def __init__(self, path: str | os.PathLike[str], shapes: Mapping[str, tuple[int, ...]],
                 trainable: Mapping[str, bool], *, framework: str, every: str = "step",
                 layers: Mapping[str, str] | None = None, snapshot_every: int | None = None
                 ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.names = list(shapes)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.snapshot_every = snapshot_every
        self._records = 0
        self._phases = 0
        self._prev: dict[str, np.ndarray] = {}
        self._first: dict[str, np.ndarray] = {}
        header = {"magic": MAGIC, "version": VERSION, "framework": framework, "every": every,
                  "created": time.time(), "tensors": self.names,
                  "shapes": {k: list(v) for k, v in shapes.items()},
                  "trainable": dict(trainable), "layers": dict(layers or {})}
        # A new recorder starts a new file; only ``resume`` (the same run, continued) appends.
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._write(header)

    def _write(self, obj: Any) -> None:
        self._fh.write(_line(obj))
        self._fh.flush()

    def write_stats(self, stats: Mapping[str, tuple[float | None, ...]], *, step: int,
                    epoch: int | None = None,
                    snapshot: Mapping[str, np.ndarray | TensorEntry] | None = None) -> None:
        """Append one record of ``name -> (norm, update_norm, rel, max_update, grad_norm,
        change_norm)``; ``snapshot`` (arrays, or entries for dtypes numpy lacks) is written
        when this record is one of every ``snapshot_every``."""
        rows = [[_f(v) for v in stats[name]] for name in self.names]
        self._write({"step": int(step), "epoch": epoch, "time": time.time(), "stats": rows})
        self._records += 1
        if snapshot is not None and self.snapshot_every and \
                (self._records - 1) % self.snapshot_every == 0:
            self._snapshot(step, snapshot)

    def wants_snapshot(self) -> bool:
        return bool(self.snapshot_every) and self._records % self.snapshot_every == 0

    def _snapshot(self, step: int, arrays: Mapping[str, np.ndarray | TensorEntry]) -> None:
        """Write every tensor under its own name, in its own dtype, to ``step-N.npz``
        (atomically), readable by ``graft diff`` against the model's checkpoints."""
        from .checkpoint import Checkpoint
        from .formats import numpy_format

        folder = self.path.with_name(self.path.name + ".snapshots")
        folder.mkdir(exist_ok=True)
        entries = [snapshot_entry(k, v) for k, v in arrays.items()]
        # No metadata of our own: ``np.load`` would show it as one more array beside the
        # weights. The writer adds ``__metadata__`` only to list bfloat16 tensors.
        numpy_format.write(Checkpoint(entries, format="memory"), folder / f"step-{step:08d}.npz")

    def record(self, arrays: Mapping[str, np.ndarray], *, step: int, epoch: int | None = None,
               grads: Mapping[str, np.ndarray] | None = None) -> None:
        """Compute statistics with numpy against the previous call's arrays, and append."""
        stats = {}
        for name in self.names:
            x = np.asarray(arrays[name], dtype=np.float64)
            norm = _norm(x)
            prev = self._prev.get(name)
            if prev is None:
                upd = rel = mx = None
                change = 0.0
                self._first[name] = x.copy()
            else:
                d = x - prev
                upd = _norm(d)
                rel = upd / norm if norm > 0 else (0.0 if upd == 0 else math.inf)
                mx = float(np.abs(d).max()) if d.size else 0.0
                change = _norm(x - self._first[name])
            g = None if not grads or grads.get(name) is None else \
                _norm(np.asarray(grads[name], dtype=np.float64))
            stats[name] = (norm, upd, rel, mx, g, change)
            self._prev[name] = x.copy()
        snap = arrays if self.wants_snapshot() else None
        self.write_stats(stats, step=step, epoch=epoch, snapshot=snap)

    def resume(self, trainable: Mapping[str, bool], *, step: int) -> None:
        """Continue this run in the same file after ``close()``: append a phase line with
        the trainable flags from now on. Records keep measuring against the previous and
        first records this recorder saw, so a second ``fit`` continues the first.

        Example:
            >>> rec.close(); rec.resume({"w": False}, step=12)          # doctest: +SKIP
        """
        if not self._fh.closed:
            self._fh.close()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._phases += 1
        self._write({"phase": self._phases, "step": int(step), "records": self._records,
                     "trainable": {n: bool(trainable.get(n, True)) for n in self.names}})

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> StatsRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a run file up to its last complete record (torn or corrupt lines are dropped)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(p, "no such run file", fix="pass the path a WeightTracker wrote")
    with open(p, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    header = _parse(lines[0]) if lines else None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise FormatError(p, "not a weightgraft run file (missing or corrupt header line)",
                          expected=f"a file written by WeightTracker ({MAGIC} v{VERSION})")
    names = tuple(header["tensors"])
    records = []
    dropped = 0
    trainable = dict(header.get("trainable", {}))
    phases = []
    for line in lines[1:]:
        obj = _parse(line)
        if isinstance(obj, dict) and "phase" in obj and isinstance(obj.get("trainable"), dict):
            trainable = {n: bool(obj["trainable"].get(n, trainable.get(n, True))) for n in names}
            phases.append(Phase(step=int(obj.get("step", 0)), records_before=len(records),
                                trainable=dict(trainable)))
            continue
        if not isinstance(obj, dict) or len(obj.get("stats", ())) != len(names):
            dropped += 1
            continue
        stats = {n: TensorStats(*row) for n, row in zip(names, obj["stats"], strict=True)}
        records.append(Record(obj["step"], obj.get("epoch"), obj["time"], stats))
    snaps_dir = p.with_name(p.name + ".snapshots")
    snaps = tuple(sorted(str(s) for s in snaps_dir.glob("step-*.npz"))) if snaps_dir.is_dir() \
        else ()
    return Run(path=str(p), framework=header.get("framework", "?"), tensors=names,
               shapes={k: tuple(v) for k, v in header.get("shapes", {}).items()},
               trainable=trainable, layers=dict(header.get("layers", {})),
               every=header.get("every", "step"), records=tuple(records), dropped_lines=dropped,
               snapshots=snaps, phases=tuple(phases),
               trainable_at_start=dict(header.get("trainable", {})))


@dataclass(frozen=True)
class TensorSummary:
    """One tensor over a whole run, with the flags ``graft track show`` prints."""

    name: str
    layer: str
    trainable: bool
    first_norm: float
    last_norm: float
    total_rel_change: float | None  # ||w_last - w_first|| / ||w_first||; None from a zero start
    total_change_norm: float | None  # ||w_last - w_first||
    latest_rel_update: float | None
    max_rel_update: float | None
    last_grad_norm: float | None
    flags: tuple[str, ...] = field(default_factory=tuple)


def _stalled(rels: list[float]) -> bool:
    """Moved once, then the last ``STALLED_RECORDS`` relative updates all below 1e-8."""
    if len(rels) <= STALLED_RECORDS:
        return False
    tail, head = rels[-STALLED_RECORDS:], rels[:-STALLED_RECORDS]
    return all(r < DEAD_REL_UPDATE for r in tail) and any(r >= DEAD_REL_UPDATE for r in head)


def bfloat16_entry(key: str, bits: np.ndarray) -> TensorEntry:
    """A bfloat16 tensor, which numpy lacks, as its ``uint16`` bits under dtype ``bfloat16``
    (the numpy writer stores them so, and its reader restores the dtype)."""
    bits = np.asarray(bits).view(np.uint16)
    return TensorEntry(key=key, shape=bits.shape, dtype="bfloat16", loader=lambda: bits)


def snapshot_entry(key: str, value: np.ndarray | TensorEntry) -> TensorEntry:
    """A snapshot tensor as a ``TensorEntry``: arrays as they are, ml_dtypes bfloat16 (what
    Keras gives on some backends) through ``bfloat16_entry``."""
    if isinstance(value, TensorEntry):
        return value.with_(key=key)
    arr = np.asarray(value)
    if arr.dtype.name == "bfloat16":
        return bfloat16_entry(key, arr)
    return TensorEntry.from_array(key, arr)


def summarise(run: Run) -> list[TensorSummary]:
    """Per tensor: total relative change, latest relative update, and flags.

    Flags: ``frozen`` (not trainable, in the last phase), ``never-changed`` (every update
    exactly zero), ``dead`` (trainable, but every relative update below 1e-8), ``stalled``
    (trainable, moved by at least 1e-8 relative at some point, but the last
    ``STALLED_RECORDS`` relative updates are all below it), ``exploding`` (norm grew more than
    tenfold, or became inf/nan).
    """
    out = []
    for name in run.tensors:
        series = [r.stats[name] for r in run.records]
        if not series:
            continue
        updates = [s.update_norm for s in series if s.update_norm is not None]
        rels = [s.rel_update for s in series if s.rel_update is not None]
        first, last = series[0].norm, series[-1].norm
        # Net change since the first record; files of older writers only give the path
        # length (the sum of update norms), an upper bound of it.
        change = series[-1].change_norm if series[-1].change_norm is not None else (
            sum(updates) if updates else None)
        total = None if change is None or first == 0 else change / first
        if change is not None and first == 0 and change == 0:
            total = 0.0
        trainable = bool(run.trainable.get(name, True))
        flags = []
        if not trainable:
            flags.append("frozen")
        if updates and all(u == 0 for u in updates):
            flags.append("never-changed")
        elif trainable and rels and all(r < DEAD_REL_UPDATE for r in rels):
            flags.append("dead")
        elif trainable and _stalled(rels):
            flags.append("stalled")
        if not math.isfinite(last) or (first > 0 and last / first > EXPLODING_NORM_GROWTH):
            flags.append("exploding")
        grads = [s.grad_norm for s in series if s.grad_norm is not None]
        out.append(TensorSummary(
            name=name, layer=run.layers.get(name, name.rsplit("/", 1)[0].rsplit(".", 1)[0]),
            trainable=trainable, first_norm=first, last_norm=last, total_rel_change=total,
            total_change_norm=change,
            latest_rel_update=rels[-1] if rels else None,
            max_rel_update=max(rels) if rels else None,
            last_grad_norm=grads[-1] if grads else None, flags=tuple(flags)))
    return out
