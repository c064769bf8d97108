"""Peak memory of transplanting a ~1 GB checkpoint: it should grow by about the largest
tensor, not by the checkpoint.

A child process builds the target (a PyTorch MLP whose parameters already take ~1 GB: the
model must hold its own weights), records its resident memory, then transplants a ~1 GB
safetensors file (Keras convention, so every tensor is converted: transposed) into it while a
thread samples RSS every 2 ms. Reported: the extra memory at the peak, and its ratio to the
checkpoint size and to the largest tensor. The same is measured, in its own child process,
for the obvious hand-written script: ``safetensors.numpy.load_file``, transpose every kernel,
``load_state_dict``.

Run: ``python bench/bench_transplant_memory.py [--gb 1.0]`` (prints one line of JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WIDTH = 4096


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _layers(gb: float) -> int:
    return max(1, round(gb * (1 << 30) / (WIDTH * WIDTH * 4)))


def make_checkpoint(path: Path, gb: float) -> tuple[int, int]:
    """Keras-convention Dense kernels (in, out), written one tensor at a time."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(_layers(gb)):
        tensors[f"dense_{i}/kernel"] = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32)
        tensors[f"dense_{i}/bias"] = rng.standard_normal(WIDTH, dtype=np.float32)
    save_file(tensors, str(path))
    largest = max(t.nbytes for t in tensors.values())
    return path.stat().st_size, largest


def by_hand(path: str, model: object) -> int:
    """What people write without weightgraft: load everything, transpose, load_state_dict."""
    import torch
    from safetensors.numpy import load_file

    arrays = load_file(path)
    state = {}
    for i in range(len(model)):  # type: ignore[arg-type]
        state[f"{i}.weight"] = torch.from_numpy(arrays[f"dense_{i}/kernel"].T.copy())
        state[f"{i}.bias"] = torch.from_numpy(arrays[f"dense_{i}/bias"])
    model.load_state_dict(state)  # type: ignore[attr-defined]
    return len(state)


def child(path: str, gb: float, way: str) -> None:
    import torch

    import weightgraft as wg

    torch.set_num_threads(1)
    layers = [torch.nn.Linear(WIDTH, WIDTH) for _ in range(_layers(gb))]
    model = torch.nn.Sequential(*layers)
    from weightgraft.frameworks.torch import TorchModelView

    target = TorchModelView(model, input_shape=(WIDTH,))
    _ = target.slots, target.layers  # the probe pass happens before the baseline
    baseline = _rss()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    if way == "weightgraft":
        converted = wg.transplant(path, target).totals["converted"]
    else:
        converted = by_hand(path, model)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    peak[0] = max(peak[0], _rss())
    print(json.dumps({"baseline": baseline, "peak": peak[0], "seconds": seconds,
                      "converted": converted}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--child", default=None)
    parser.add_argument("--way", choices=("weightgraft", "by-hand"), default="weightgraft")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.gb, args.way)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        size, largest = make_checkpoint(path, args.gb)
        for way in ("weightgraft", "by-hand"):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), "--gb",
                                  str(args.gb), "--way", way],
                                 capture_output=True, text=True, check=False,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            results[way] = json.loads(out.stdout.strip().splitlines()[-1])
    mine, hand = results["weightgraft"], results["by-hand"]
    extra = mine["peak"] - mine["baseline"]
    extra_hand = hand["peak"] - hand["baseline"]
    print(json.dumps({
        "benchmark": "transplant_memory", "checkpoint_bytes": size, "largest_tensor_bytes": largest,
        "extra_peak_bytes": extra, "extra_vs_checkpoint": round(extra / size, 3),
        "extra_vs_largest_tensor": round(extra / largest, 2), "seconds": round(mine["seconds"], 2),
        "tensors_converted": mine["converted"],
        "by_hand_extra_peak_bytes": extra_hand, "by_hand_seconds": round(hand["seconds"], 2),
        "by_hand_vs_weightgraft_memory": round(extra_hand / max(extra, 1), 1),
        "weightgraft_vs_by_hand_time": round(mine["seconds"] / max(hand["seconds"], 1e-9), 2),
    }))


if __name__ == "__main__":
    main()
