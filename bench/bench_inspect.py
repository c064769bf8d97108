"""Inspect time on a 10,000-tensor, multi-GB checkpoint against loading it.

Generates the same content as safetensors and as a PyTorch zip checkpoint in a temporary
folder (deleted afterwards), then times ``weightgraft.inspect`` (reads headers only) against
``torch.load(weights_only=True)`` and ``safetensors.numpy.load_file`` (read every byte).
All runs see a warm page cache: the comparison is parsing and copying, not disk speed.

    python bench/bench_inspect.py --gb 2 --tensors 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchFiles:
    """The generated checkpoints: same tensors, two formats."""

    folder: Path
    safetensors: Path
    torch_zip: Path | None
    tensors: int
    nbytes: int


def _shape_for(gb: float, tensors: int) -> tuple[int, int]:
    per_tensor = max(1, int(gb * 1e9 / 4 / tensors))
    rows = max(1, int(per_tensor ** 0.5))
    return rows, max(1, per_tensor // rows)


def write_safetensors(path: Path, tensors: int, shape: tuple[int, int], seed: int = 0) -> int:
    """Stream a float32 safetensors file tensor by tensor (never the whole thing in memory)."""
    rng = np.random.default_rng(seed)
    nbytes = shape[0] * shape[1] * 4
    header = {f"blocks.{i}.weight": {"dtype": "F32", "shape": list(shape),
                                     "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i in range(tensors)}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for _ in range(tensors):
            fh.write(rng.standard_normal(shape, dtype=np.float32).tobytes())
    return tensors * nbytes


def make_files(folder: Path, gb: float, tensors: int) -> BenchFiles:
    """Generate the benchmark checkpoints under ``folder``."""
    shape = _shape_for(gb, tensors)
    st = folder / "bench.safetensors"
    nbytes = write_safetensors(st, tensors, shape)
    pt: Path | None = folder / "bench.pt"
    try:
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(str(st)), pt)  # the same tensors, saved by torch itself
    except ImportError:
        pt = None
    return BenchFiles(folder, st, pt, tensors, nbytes)


CHILD = """
import sys, time
setup, stmt = sys.argv[1], sys.argv[2]
exec(setup)
start = time.perf_counter()
exec(stmt)
print(time.perf_counter() - start)
"""

# Linux carries a process's peak RSS across fork and exec, so a child started straight from
# this (large) process would report our peak. A small launcher in between starts clean and
# reports its child's own peak through RUSAGE_CHILDREN.
LAUNCH = """
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True).stdout
print(out.strip().splitlines()[-1], resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def _time(setup: str, stmt: str, repeat: int) -> tuple[float, float]:
    """Median seconds of ``stmt`` over ``repeat`` fresh processes (imports not counted),
    and the largest peak RSS (MB) among those processes.

    A fresh process per run keeps one measurement's heap and garbage collector from
    slowing the next.
    """
    times, peaks = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", LAUNCH, sys.executable, "-c", CHILD, setup,
                              stmt], capture_output=True, text=True, check=True, cwd=ROOT)
        seconds, peak = out.stdout.strip().splitlines()[-1].split()
        times.append(float(seconds))
        peaks.append(float(peak))
    return statistics.median(times), max(peaks)


def _cli_seconds(path: Path) -> tuple[float, None]:
    """Wall time of the command a user runs, Python start-up included."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "weightgraft.cli", "inspect", str(path), "--json"],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start, None


def run(files: BenchFiles, repeat: int = 3) -> list[dict[str, object]]:
    """Time every reader on the generated files; returns one row per measurement."""
    import weightgraft

    rows: list[dict[str, object]] = []

    def add(name: str, path: Path, measured: tuple[float, float | None] | None,
            note: str = "") -> None:
        seconds, peak = measured if measured else (None, None)
        rows.append({"what": name, "file": path.name, "seconds": seconds, "peak_mb": peak,
                     "note": note})

    # Import every reader up front, as the loaders' setup imports torch or safetensors.
    wg = "import weightgraft, weightgraft.inspection; weightgraft.formats.formats()"
    for path in (files.safetensors, files.torch_zip):
        if path is None:
            continue
        try:
            ins = weightgraft.inspect(path)
            assert len(ins.tensors) == files.tensors
            add("weightgraft.inspect", path,
                _time(wg, f"weightgraft.inspect({str(path)!r})", repeat))
            add("graft inspect --json (CLI, incl. start-up)", path, _cli_seconds(path))
        except weightgraft.UnknownFormatError:
            add("weightgraft.inspect", path, None, "reader not available")
    # Control: the same number of tensors holding 1/500 of the bytes. Inspect time is set by
    # the tensor count (header parsing and naming), not by the size of the data.
    small = files.folder / "small.safetensors"
    write_safetensors(small, files.tensors, (5, 10))
    add("weightgraft.inspect, same count, 2 MB", small,
        _time(wg, f"weightgraft.inspect({str(small)!r})", repeat))
    small.unlink()
    add("safetensors.numpy.load_file", files.safetensors,
        _time("from safetensors.numpy import load_file",
              f"d = load_file({str(files.safetensors)!r})", repeat))
    if files.torch_zip is not None:
        pt = str(files.torch_zip)
        add("torch.load(weights_only=True)", files.torch_zip,
            _time("import torch", f"d = torch.load({pt!r}, weights_only=True)", repeat))
        add("torch.load(weights_only=True, mmap=True)", files.torch_zip,
            _time("import torch", f"d = torch.load({pt!r}, weights_only=True, mmap=True)",
                  repeat))
    return rows


def print_table(rows: list[dict[str, object]], files: BenchFiles) -> None:
    print(f"\n## inspect: {files.tensors:,} tensors, {files.nbytes / 1e9:.2f} GB of float32\n")
    print(f"| {'what':44} | {'file':17} | {'seconds':>9} | {'÷ inspect':>10} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 46}|{'-' * 19}|{'-' * 11}|{'-' * 12}|{'-' * 13}|")
    base = {r["file"]: r["seconds"] for r in rows if r["what"] == "weightgraft.inspect"}
    st_base = base.get(files.safetensors.name)
    for r in rows:
        seconds = r["seconds"]
        # a loader is compared with inspecting the same file (torch) or the safetensors file
        ref = base.get(str(r["file"])) or st_base
        ratio = (f"{seconds / ref:,.2f}x" if isinstance(seconds, float) and ref
                 and r["what"] != "weightgraft.inspect" else "")
        shown = f"{seconds:.3f}" if isinstance(seconds, float) else str(r["note"])
        peak = f"{r['peak_mb']:,.0f}" if isinstance(r["peak_mb"], float) else "-"
        print(f"| {r['what']:44} | {r['file']:17} | {shown:>9} | {ratio:>10} | {peak:>11} |")


def main(argv: list[str] | None = None, files: BenchFiles | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="checkpoint size (default 2)")
    parser.add_argument("--tensors", type=int, default=10_000, help="tensor count (10,000)")
    args = parser.parse_args(argv)
    own = files is None
    folder = Path(tempfile.mkdtemp(prefix="graft-bench-")) if own else files.folder
    try:
        if files is None:
            files = make_files(folder, args.gb, args.tensors)
        rows = run(files)
        print_table(rows, files)
        return rows
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
