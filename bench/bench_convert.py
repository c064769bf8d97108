"""``graft convert`` throughput and peak memory against a plain file copy of the same bytes.

Each variant runs in its own child process, started by a small measuring process that
reports the child's wall time and peak resident memory (``resource.getrusage(
RUSAGE_CHILDREN).ru_maxrss``), so no variant's memory leaks into another's figure.

    python bench/bench_convert.py --gb 2 --tensors 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inspect import BenchFiles, make_files  # noqa: E402

# Runs one command and reports its time and the peak RSS of that command alone.
MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kilobytes on Linux
print(json.dumps({"rc": rc, "seconds": seconds, "peak_mb": peak_kb / 1024}))
"""


def measure(command: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of ``command`` run in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def variants(files: BenchFiles, out: Path) -> list[tuple[str, list[str], Path]]:
    py = sys.executable
    graft = [py, "-m", "weightgraft.cli", "convert"]
    rows = [
        ("python start-up + import weightgraft", [py, "-c", "import weightgraft"], out / "none"),
        ("shutil.copyfile (safetensors bytes)",
         [py, "-c", "import shutil,sys; shutil.copyfile(sys.argv[1], sys.argv[2])",
          str(files.safetensors), str(out / "copy.safetensors")], out / "copy.safetensors"),
        # The writers fsync before renaming (an output survives a crash whole); so does this.
        ("shutil.copyfile + fsync",
         [py, "-c", "import os,shutil,sys; shutil.copyfile(sys.argv[1], sys.argv[2]); "
          "fd = os.open(sys.argv[2], os.O_RDONLY); os.fsync(fd); os.close(fd)",
          str(files.safetensors), str(out / "copy2.safetensors")], out / "copy2.safetensors"),
        ("graft convert safetensors -> torch zip",
         [*graft, str(files.safetensors), "-o", str(out / "out.pt")], out / "out.pt"),
        ("graft convert safetensors -> npz",
         [*graft, str(files.safetensors), "-o", str(out / "out.npz")], out / "out.npz"),
        ("graft convert safetensors -> safetensors",
         [*graft, str(files.safetensors), "-o", str(out / "out.safetensors")],
         out / "out.safetensors"),
    ]
    if files.torch_zip is not None:
        rows.append(("graft convert torch zip -> safetensors",
                     [*graft, str(files.torch_zip), "-o", str(out / "from_pt.safetensors")],
                     out / "from_pt.safetensors"))
    return rows


def run(files: BenchFiles) -> list[dict[str, object]]:
    """Measure every variant; outputs are deleted as soon as they are measured."""
    out = files.folder / "out"
    out.mkdir(exist_ok=True)
    rows = []
    for name, command, output in variants(files, out):
        result = measure(command)
        size = output.stat().st_size if output.exists() else 0
        rows.append({"what": name, **result, "output_bytes": size})
        if output.exists():
            output.unlink()
    return rows


def print_table(rows: list[dict[str, object]], files: BenchFiles) -> None:
    print(f"\n## convert: {files.tensors:,} tensors, {files.nbytes / 1e9:.2f} GB "
          f"(each variant in its own process)\n")
    print(f"| {'what':40} | {'seconds':>8} | {'MB/s':>7} | {'vs copy':>8} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 9}|{'-' * 10}|{'-' * 13}|")
    copy = next(r for r in rows if str(r["what"]).startswith("shutil.copyfile ("))
    for r in rows:
        ok = r["rc"] == 0
        seconds = float(r["seconds"])
        moves = "start-up" not in str(r["what"])
        rate = f"{files.nbytes / seconds / 1e6:,.0f}" if ok and moves else "-"
        ratio = f"{seconds / float(copy['seconds']):.1f}x" if ok and moves else "-"
        shown = f"{seconds:.2f}" if ok else f"rc={r['rc']}"
        print(f"| {r['what']:40} | {shown:>8} | {rate:>7} | {ratio:>8} | {r['peak_mb']:>11,.0f} |")


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
    os.environ.setdefault("KERAS_BACKEND", "torch")
    main()
