"""Tracking overhead: the same small-CNN training loop untracked, tracked per epoch, per batch.

Run: ``.venv/bin/python bench/bench_track.py [--epochs 3] [--framework torch|keras|both]``.
Prints wall time per variant (best of ``--repeat`` runs) and the overhead ratio against the
untracked loop measured in the same process. Targets: per-epoch < 5 %, per-batch < 15 %.

On a shared machine one-second loops jitter by a few percent either way, so the script also
times one record by itself (median of 30) and prints what it implies: per-batch overhead =
record / training step, per-epoch overhead = record / (step x batches per epoch). Those two
lines hold still where the wall-clock comparison does not.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "torch")


def torch_cnn():  # noqa: ANN201 - a torch.nn.Sequential
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))


def torch_loop(track: str | None, epochs: int, batches: int, folder: str) -> float:
    import torch

    from weightgraft.torch import WeightTracker

    model = torch_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batches, 64, 3, 32, 32)
    y = torch.randint(0, 10, (batches, 64))
    tracker = None
    if track:
        tracker = WeightTracker(model, os.path.join(folder, f"t-{track}.wgt"), every=track)
        tracker.attach(opt)
    start = time.perf_counter()
    for _ in range(epochs):
        for b in range(batches):
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if tracker:
            tracker.end_epoch()
    elapsed = time.perf_counter() - start
    if tracker:
        tracker.close()
    return elapsed


def keras_cnn():  # noqa: ANN201 - a compiled keras.Sequential
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def keras_loop(track: str | None, epochs: int, batches: int, folder: str) -> float:
    from weightgraft.keras import WeightTracker

    model = keras_cnn()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batches * 64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batches * 64)
    cbs = [WeightTracker(os.path.join(folder, f"k-{track}.wgt"), every=track)] if track else []
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=cbs)
    return time.perf_counter() - start


def record_seconds(name: str, folder: str, n: int = 30) -> float:
    """Median time of one tracking record of the bench CNN, measured by itself."""
    times = []
    if name == "torch":
        from weightgraft.torch import WeightTracker

        model = torch_cnn()
        tracker = WeightTracker(model, os.path.join(folder, "rec-t.wgt"), every=1)
        for _ in range(n):
            start = time.perf_counter()
            tracker._record()
            times.append(time.perf_counter() - start)
        tracker.close()
    else:
        from weightgraft.keras import WeightTracker as KerasTracker

        callback = KerasTracker(os.path.join(folder, "rec-k.wgt"), every="batch")
        callback.set_model(keras_cnn())
        callback.on_train_begin()
        for _ in range(n):
            start = time.perf_counter()
            callback._record()
            times.append(time.perf_counter() - start)
        callback.on_train_end()
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--framework", choices=("torch", "keras", "both"), default="both")
    args = ap.parse_args()
    loops = {"torch": torch_loop, "keras": keras_loop}
    names = list(loops) if args.framework == "both" else [args.framework]
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'framework':<9} {'variant':<10} {'seconds':>9} {'overhead':>9}  target")
        for name in names:
            loop = loops[name]
            loop(None, 1, 2, folder)  # warm-up: imports, kernels, allocator
            # Interleave the variants so drift on a shared machine hits all of them alike.
            best: dict[str | None, float] = {None: float("inf"), "epoch": float("inf"),
                                             "batch": float("inf")}
            for _ in range(args.repeat):
                for variant in best:
                    best[variant] = min(best[variant],
                                        loop(variant, args.epochs, args.batches, folder))
            base = best[None]
            for variant, target in ((None, ""), ("epoch", "< 5%"), ("batch", "< 15%")):
                over = "" if variant is None else f"{(best[variant] / base - 1) * 100:+8.1f}%"
                print(f"{name:<9} {variant or 'untracked':<10} {best[variant]:9.3f} {over:>9}  "
                      f"{target}")
            record = record_seconds(name, folder)
            step = base / (args.epochs * args.batches)
            print(f"{name:<9} one record {record * 1e3:.2f} ms, one training step "
                  f"{step * 1e3:.1f} ms: implied overhead per batch {record / step:+.1%}, "
                  f"per epoch of {args.batches} batches {record / (step * args.batches):+.2%}")


if __name__ == "__main__":
    main()
