"""Planning time for a generated 10,000-tensor model pair (target: under one second).

Source: a synthetic PyTorch-convention ``Checkpoint`` (conv + BatchNorm blocks of varying
widths and a Linear head, torch-style names ``stages.3.blocks.7.conv.weight``). Target: a
lightweight ``ModelView`` that only *describes* the same network in the Keras convention under
different names (``s3_b7_conv/kernel``), with one extra layer inserted in the middle, so the
structure tier (sequence alignment) has to place every layer. Building a live 10,000-tensor
Keras model would take minutes and measure Keras, not matching; this measures ``match``.

Run: ``python bench/bench_match.py`` (prints one line of JSON).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from weightgraft.checkpoint import Checkpoint, Convention, Kind, Role, TensorEntry
from weightgraft.match import match
from weightgraft.modelview import InputSpec, LayerView, ModelView, Slot

BN_ROLES = (Role.GAMMA, Role.BETA, Role.MOVING_MEAN, Role.MOVING_VARIANCE)
TORCH_BN = ("weight", "bias", "running_mean", "running_var")
KERAS_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def layers_spec(n_blocks: int) -> list[tuple[str, str, Kind, list[tuple[Role, tuple[int, ...], str, str]]]]:
    """(torch layer, keras layer, kind, [(role, torch shape, torch var, keras var)])."""
    out = []
    widths = [16, 24, 32, 48, 64, 96, 128]
    cin = 3
    for b in range(n_blocks):
        stage, blk = divmod(b, 50)
        cout = widths[(b * 7 + stage) % len(widths)]
        k = 3 if b % 3 else 1
        out.append((f"stages.{stage}.blocks.{blk}.conv", f"s{stage}_b{blk}_conv", Kind.CONV2D,
                    [(Role.KERNEL, (cout, cin, k, k), "weight", "kernel"),
                     (Role.BIAS, (cout,), "bias", "bias")]))
        out.append((f"stages.{stage}.blocks.{blk}.bn", f"s{stage}_b{blk}_bn", Kind.BATCH_NORM,
                    [(r, (cout,), tv, kv) for r, tv, kv in zip(BN_ROLES, TORCH_BN, KERAS_BN)]))
        cin = cout
    out.append(("head", "predictions", Kind.DENSE,
                [(Role.KERNEL, (1000, cin), "weight", "kernel"), (Role.BIAS, (1000,), "bias", "bias")]))
    return out


def source_checkpoint(spec: list) -> Checkpoint:
    entries = []
    for tname, _, kind, tensors in spec:
        for role, shape, tvar, _ in tensors:
            entries.append(TensorEntry(key=f"{tname}.{tvar}", shape=shape, dtype="float32",
                                       loader=lambda s=shape: np.zeros(s, np.float32),
                                       layer=tname, kind=kind, role=role,
                                       convention=Convention.TORCH))
    return Checkpoint(entries, format="synthetic", convention=Convention.TORCH)


class DescribedView(ModelView):
    """A model known only by its description: layers and slots, no framework behind it."""

    framework = "keras"
    convention = Convention.KERAS

    def __init__(self, spec: list, insert_at: int) -> None:
        self.model = None
        self._layers: list[LayerView] = []
        self._slots: dict[str, Slot] = {}
        for i, (_, kname, kind, tensors) in enumerate(spec):
            if i == insert_at:  # an extra Dense nobody has weights for
                self._add("inserted_dense", Kind.DENSE, [(Role.KERNEL, (77, 77), "", "kernel"),
                                                          (Role.BIAS, (77,), "", "bias")])
            self._add(kname, kind, tensors)

    def _add(self, name: str, kind: Kind, tensors: list) -> None:
        keys = []
        for role, shape, _, kvar in tensors:
            if kind is Kind.CONV2D and role is Role.KERNEL:
                shape = (shape[2], shape[3], shape[1], shape[0])
            elif kind is Kind.DENSE and role is Role.KERNEL and len(shape) == 2 and name != "inserted_dense":
                shape = (shape[1], shape[0])
            key = f"{name}/{kvar}"
            self._slots[key] = Slot(key, name, role, shape, "float32", kind,
                                    convention=Convention.KERAS)
            keys.append(key)
        self._layers.append(LayerView(name, kind.value, kind, {}, tuple(keys)))

    @property
    def layers(self) -> list[LayerView]:
        return self._layers

    @property
    def slots(self) -> Mapping[str, Slot]:
        return self._slots

    @property
    def inputs(self) -> Sequence[InputSpec]:
        return [InputSpec((32, 32, 3))]

    def read(self, key: str) -> np.ndarray:
        return np.zeros(self._slots[key].shape, np.float32)

    def assign(self, key: str, array: np.ndarray) -> None:
        raise NotImplementedError("a described model holds no weights")

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def capture(self, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def main() -> None:
    n_blocks = 1666  # 6 tensors per block + 2 head tensors = 9,998 tensors
    spec = layers_spec(n_blocks)
    ckpt = source_checkpoint(spec)
    target = DescribedView(spec, insert_at=len(spec) // 2)
    # Best of three: the wall clock on a shared machine measures the neighbours too.
    runs = []
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        plan = match(ckpt, target)
        runs.append((time.perf_counter() - start, time.process_time() - cpu))
    elapsed, cpu_seconds = min(runs)
    filled = sum(len(a.target_keys) for a in plan.assignments)
    print(json.dumps({
        "benchmark": "match", "source_tensors": len(ckpt), "target_slots": len(target.slots),
        "layers": len(spec), "seconds": round(elapsed, 3), "cpu_seconds": round(cpu_seconds, 3),
        "target_met_cpu": cpu_seconds < 1.0, "target_met_wall": elapsed < 1.0,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "slots_filled": filled, "unmatched": len(plan.unmatched_targets),
        "ambiguous": len(plan.ambiguous), "tiers": plan.tier_counts(),
    }))


if __name__ == "__main__":
    main()
