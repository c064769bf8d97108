"""Keras 3 side of weight tracking: ``WeightTracker``, a callback for ``model.fit``.

Works on every Keras backend: values are read through ``keras.ops.convert_to_numpy``.

Example:
    >>> model.fit(x, y, callbacks=[WeightTracker("runs/mlp.wgt", every="batch")])  # doctest: +SKIP
    >>> # then: graft track show runs/mlp.wgt
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .frameworks import import_keras
from .track import StatsRecorder

_keras = import_keras("weightgraft.keras.WeightTracker")


class WeightTracker(_keras.callbacks.Callback):
    """Record per-weight norm, update norm, relative update and max |update| during ``fit``.

    ``every``: ``"epoch"``, ``"batch"`` or a number N (every N batches). Gradient norms are
    not visible to a Keras callback and are recorded as missing. Non-trainable weights
    (frozen layers, BatchNorm statistics) are tracked and flagged as not trainable.

    Passing the same callback to a later ``fit`` continues its run file (steps and epochs
    counting on, the new trainable flags noted), so a freeze / fit / unfreeze / fit workflow
    is one run; a new ``WeightTracker`` on an existing path starts that file afresh.
    Snapshots (``snapshot_every=K``) are keyed by the variables' paths (``dense/kernel``),
    which ``graft diff`` pairs with the layers of a ``.weights.h5`` or ``.keras`` file.
    """

    def __init__(self, path: str | os.PathLike[str], every: str | int = "epoch", *,
                 snapshot_every: int | None = None) -> None:
        super().__init__()
        if every not in ("epoch", "batch") and not (
                isinstance(every, int) and not isinstance(every, bool) and every > 0):
            from .errors import WeightgraftError

            raise WeightgraftError(f"every={every!r} is not a tracking interval",
                                   expected='"epoch", "batch" or a positive number of batches')
        self.path = path
        self.every = every
        self.snapshot_every = snapshot_every
        self.recorder: StatsRecorder | None = None
        self._vars: list[Any] = []
        self._names: list[str] = []
        self._steps = 0
        self._epoch = 0

    def on_train_begin(self, logs: Any = None) -> None:
        seen: set[int] = set()
        self._vars, self._names = [], []
        for v in self.model.weights:
            if id(v) in seen:  # a variable reached twice (shared layer) is tracked once
                continue
            seen.add(id(v))
            self._vars.append(v)
            self._names.append(v.path)
        shapes = {n: tuple(v.shape) for n, v in zip(self._names, self._vars, strict=True)}
        trainable = {n: bool(v.trainable) for n, v in zip(self._names, self._vars, strict=True)}
        if self.recorder is not None:
            self._resume(self.recorder, shapes, trainable)
            return
        layers = {n: n.rsplit("/", 1)[0] for n in self._names}
        self.recorder = StatsRecorder(self.path, shapes, trainable, framework="keras",
                                      every=str(self.every), layers=layers,
                                      snapshot_every=self.snapshot_every)
        self._record()

    def _resume(self, recorder: StatsRecorder, shapes: dict[str, tuple[int, ...]],
                trainable: dict[str, bool]) -> None:
        """A later ``fit`` with the same callback (freeze, fit, unfreeze, fit): append to the
        same run, steps and epochs continuing, the new trainable flags in a phase line."""
        before = recorder.shapes
        if before != shapes:
            from .errors import WeightgraftError

            raise WeightgraftError(
                f"this WeightTracker recorded {len(before)} weights in {self.path}; the model "
                f"now has {len(shapes)} with different names or shapes",
                expected="the same model's weights in every fit() this callback sees",
                fix="pass a new WeightTracker with another path for a different model")
        recorder.resume(trainable, step=self._steps)

    def _values(self) -> dict[str, np.ndarray]:
        ops = _keras.ops
        # On JAX, fit() keeps the weights out of the variables between syncs; Keras's own
        # Callback.model property syncs them back (as ModelCheckpoint relies on).
        _ = self.model
        return {n: np.asarray(ops.convert_to_numpy(v.value))
                for n, v in zip(self._names, self._vars, strict=True)}

    def _record(self) -> None:
        if self.recorder is None:  # fit() has not begun: nothing to record yet
            return
        self.recorder.record(self._values(), step=self._steps, epoch=self._epoch)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self._steps += 1
        if self.every == "batch" or (isinstance(self.every, int)
                                     and self._steps % self.every == 0):
            self._record()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._epoch += 1  # epochs this callback has seen, counted on across fit() calls
        if self.every == "epoch":
            self._record()

    def on_train_end(self, logs: Any = None) -> None:
        if self.recorder is not None:
            self.recorder.close()
