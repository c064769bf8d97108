"""PyTorch side of weight tracking: ``WeightTracker`` records per-tensor statistics in training.

Example:
    >>> tracker = WeightTracker(model, "runs/cnn.wgt", every="step")   # doctest: +SKIP
    >>> tracker.attach(optimizer)           # records after every optimizer.step()  # doctest: +SKIP
    >>> ...train...; tracker.close()                                       # doctest: +SKIP
    >>> # then: graft track show runs/cnn.wgt
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import TensorEntry
from .frameworks import import_torch
from .track import StatsRecorder, bfloat16_entry

if TYPE_CHECKING:
    import torch


def _every(every: str | int) -> str | int:
    if every in ("step", "batch"):
        return 1
    if every == "epoch":
        return "epoch"
    if isinstance(every, int) and not isinstance(every, bool) and every > 0:
        return every
    from .errors import WeightgraftError

    raise WeightgraftError(f"every={every!r} is not a tracking interval",
                           expected='"step", "batch", "epoch" or a positive number of steps')


def _gather(torch: Any, scalars: list[torch.Tensor]) -> list[float]:
    """0-d tensors as Python floats, one ``stack`` + ``tolist`` (one device sync) per dtype
    rather than one ``item()`` per tensor; float64 scalars stay float64."""
    out: list[float] = [0.0] * len(scalars)
    by_dtype: dict[Any, list[int]] = {}
    for i, t in enumerate(scalars):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        for i, v in zip(idx, torch.stack([scalars[i] for i in idx]).tolist(), strict=True):
            out[i] = v
    return out


class WeightTracker:
    """Records norm, update norm, relative update, max |update|, gradient norm and net change
    since the first record, per parameter (keeping two copies of the parameters: the
    previous record's and the first).

    Call ``step()`` after ``optimizer.step()`` (or ``attach(optimizer)`` once), ``end_epoch()``
    at each epoch's end when ``every="epoch"``, and ``close()`` at the end. Tied parameters
    are tracked once (``named_parameters`` yields each tensor once). Frozen parameters
    (``requires_grad=False``) are tracked and flagged. Statistics are computed in float64 for
    float64 parameters and in float32 for the rest (fp16 and bf16 upcast). Snapshots
    (``snapshot_every=K``) keep each parameter's dtype and its ``named_parameters`` key, the
    key ``torch.save(model.state_dict())`` gives it, so ``graft diff`` pairs the two.
    """

    def __init__(self, model: torch.nn.Module, path: str | os.PathLike[str], *,
                 every: str | int = "epoch", snapshot_every: int | None = None) -> None:
        self.torch = import_torch("weightgraft.torch.WeightTracker")
        self.every = _every(every)
        self.params = list(model.named_parameters())
        shapes = {n: tuple(p.shape) for n, p in self.params}
        trainable = {n: bool(p.requires_grad) for n, p in self.params}
        layers = {n: n.rsplit(".", 1)[0] if "." in n else n for n, _ in self.params}
        self.recorder = StatsRecorder(path, shapes, trainable, framework="torch",
                                      every=str(every), layers=layers,
                                      snapshot_every=snapshot_every)
        with self.torch.no_grad():
            self.prev = [p.detach().clone() for _, p in self.params]
            self.first = [p.detach().clone() for _, p in self.params]
        self.steps = 0
        self.epoch = 0
        self._hook: Any = None
        self._record(initial=True)

    def attach(self, optimizer: torch.optim.Optimizer) -> WeightTracker:
        """Record automatically after every ``optimizer.step()``."""
        self._hook = optimizer.register_step_post_hook(lambda *_: self.step())
        return self

    def step(self) -> None:
        self.steps += 1
        if isinstance(self.every, int) and self.steps % self.every == 0:
            self._record()

    def end_epoch(self) -> None:
        self.epoch += 1
        if self.every == "epoch":
            self._record()

    def _acc(self, p: torch.Tensor) -> torch.dtype:
        """The dtype statistics are computed in: float64 stays float64 (a float32 update of
        a 1e-9 change loses digits), everything else (fp16, bf16, fp32) is float32."""
        return self.torch.float64 if p.dtype == self.torch.float64 else self.torch.float32

    def _record(self, initial: bool = False) -> None:
        torch = self.torch
        n = len(self.params)
        with torch.no_grad():
            cur = [p.detach() for _, p in self.params]
            acc = [self._acc(c) for c in cur]
            scalars = [c.to(a).norm() for c, a in zip(cur, acc, strict=True)]
            if not initial:
                deltas = [c.to(a) - pv.to(a) for c, pv, a in zip(cur, self.prev, acc, strict=True)]
                scalars += [d.norm() for d in deltas]
                scalars += [d.abs().max() if d.numel() else d.new_zeros(()) for d in deltas]
                scalars += [(c.to(a) - f.to(a)).norm()
                            for c, f, a in zip(cur, self.first, acc, strict=True)]
                for pv, c in zip(self.prev, cur, strict=True):
                    pv.copy_(c)
            with_grad = [i for i, (_, p) in enumerate(self.params) if p.grad is not None]
            scalars += [self.params[i][1].grad.to(acc[i]).norm() for i in with_grad]
            values = _gather(torch, scalars)
        norms_l = values[:n]
        if initial:
            upd = mx = None
            change: list[float] = [0.0] * n
            rest = values[n:]
        else:
            upd, mx, change = values[n:2 * n], values[2 * n:3 * n], values[3 * n:4 * n]
            rest = values[4 * n:]
        grads: list[float | None] = [None] * n
        for i, g in zip(with_grad, rest, strict=True):
            grads[i] = g
        stats = {}
        for i, (name, _) in enumerate(self.params):
            u = None if upd is None else upd[i]
            rel = None if u is None else (u / norms_l[i] if norms_l[i] > 0 else
                                          (0.0 if u == 0 else float("inf")))
            stats[name] = (norms_l[i], u, rel, None if mx is None else mx[i], grads[i],
                           change[i])
        snap = None
        if self.recorder.wants_snapshot():
            snap = {name: self._snapshot_value(name, p) for name, p in self.params}
        self.recorder.write_stats(stats, step=self.steps, epoch=self.epoch, snapshot=snap)

    def _snapshot_value(self, name: str, p: torch.Tensor) -> np.ndarray | TensorEntry:
        """The parameter on the CPU in its own dtype; bfloat16, which numpy lacks, as its
        bits in an entry of dtype ``bfloat16`` (read back as bfloat16 by ``graft diff``)."""
        t = p.detach().cpu()
        if t.dtype == self.torch.bfloat16:
            return bfloat16_entry(name, t.contiguous().view(self.torch.int16).numpy().copy())
        return t.numpy().copy()

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.recorder.close()

    def __enter__(self) -> WeightTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
