"""Every benchmark in one run (``make bench``): inspect, convert, then any other bench_*.py.

The inspect and convert benchmarks share one generated checkpoint (default 2 GB, 10,000
tensors; ``--gb``/``--tensors`` to change), made in a temporary folder and deleted at the end.

    python bench/run_all.py --gb 2
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_convert  # noqa: E402
import bench_inspect  # noqa: E402

OWN = {"bench_inspect.py", "bench_convert.py", "run_all.py"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="checkpoint size in GB (2)")
    parser.add_argument("--tensors", type=int, default=10_000, help="tensor count (10,000)")
    parser.add_argument("--only-files", action="store_true",
                        help="run the inspect and convert benchmarks only")
    args = parser.parse_args()
    print(f"# weightgraft benchmarks ({platform.python_version()}, {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    folder = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    try:
        start = time.perf_counter()
        files = bench_inspect.make_files(folder, args.gb, args.tensors)
        print(f"\ngenerated {files.nbytes / 1e9:.2f} GB x 2 formats in "
              f"{time.perf_counter() - start:.0f} s under {folder}")
        bench_inspect.main([], files=files)
        bench_convert.main([], files=files)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    failed = 0
    others = [] if args.only_files else sorted(HERE.glob("bench_*.py"))
    for script in others:
        if script.name not in OWN:
            print(f"\n## {script.stem}\n", flush=True)
            failed += subprocess.run([sys.executable, str(script)]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
