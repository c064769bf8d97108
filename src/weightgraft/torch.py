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

from .frameworks import import_torch
from .track import StatsRecorder

if TYPE_CHECKING:
    import torch


def _every(every: str | int) -> str | int:
    if every in ("step", "batch"):
        return 1
    if every == "epoch":
        return "epoch"
    if isinstance(every, int) and every > 0:
        return every
    from .errors import WeightgraftError

    raise WeightgraftError(f"every={every!r} is not a tracking interval",
                           expected='"step", "batch", "epoch" or a positive number of steps')


class WeightTracker:
    """Records norm, update norm, relative update, max |update|, gradient norm and net change
    since the first record, per parameter (keeping two copies of the parameters: the
    previous record's and the first).

    Call ``step()`` after ``optimizer.step()`` (or ``attach(optimizer)`` once), ``end_epoch()``
    at each epoch's end when ``every="epoch"``, and ``close()`` at the end. Tied parameters
    are tracked once (``named_parameters`` yields each tensor once). Frozen parameters
    (``requires_grad=False``) are tracked and flagged.
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

    def _record(self, initial: bool = False) -> None:
        torch = self.torch
        with torch.no_grad():
            cur = [p.detach() for _, p in self.params]
            norms = [c.float().norm() for c in cur]
            if initial:
                upd = mx = None
                change = [0.0] * len(cur)
            else:
                deltas = [(c.float() - pv.float()) for c, pv in zip(cur, self.prev, strict=True)]
                upd = torch.stack([d.norm() for d in deltas]).tolist()
                mx = torch.stack([d.abs().max() if d.numel() else d.new_zeros(())
                                  for d in deltas]).tolist()
                change = torch.stack([(c.float() - f.float()).norm()
                                      for c, f in zip(cur, self.first, strict=True)]).tolist()
                for pv, c in zip(self.prev, cur, strict=True):
                    pv.copy_(c)
            norms_l = torch.stack(norms).tolist()
            grads = [p.grad.float().norm().item() if p.grad is not None else None
                     for _, p in self.params]
        stats = {}
        for i, (name, _) in enumerate(self.params):
            u = None if upd is None else upd[i]
            rel = None if u is None else (u / norms_l[i] if norms_l[i] > 0 else
                                          (0.0 if u == 0 else float("inf")))
            stats[name] = (norms_l[i], u, rel, None if mx is None else mx[i], grads[i],
                           change[i])
        snap = None
        if self.recorder.wants_snapshot():
            snap = {n: p.detach().cpu().numpy().copy() for n, p in self.params}
        self.recorder.write_stats(stats, step=self.steps, epoch=self.epoch, snapshot=snap)

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.recorder.close()

    def __enter__(self) -> WeightTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
