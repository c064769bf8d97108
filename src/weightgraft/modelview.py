"""The framework-neutral face of a live model: layers, weight slots, assign, capture.

Concrete adapters live in ``weightgraft.frameworks.keras`` and ``weightgraft.frameworks.torch``
and import their framework only there. ``view(model)`` picks the right one without importing
a framework the caller has not imported already.

Example:
    >>> import weightgraft                                   # doctest: +SKIP
    >>> mv = weightgraft.view(torch.nn.Linear(3, 2))        # doctest: +SKIP
    >>> [s.key for s in mv.slots.values()]                  # doctest: +SKIP
    ['weight', 'bias']
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, Convention, Kind, Role


@dataclass(frozen=True)
class Slot:
    """One weight variable (or buffer) of a live model.

    ``key`` is unique in the model: the PyTorch state-dict key (``features.0.weight``) or,
    for Keras, ``<layer path>/<variable name>`` (``block1_conv1/kernel``).
    ``aliases`` lists other keys that reach the same storage (tied or shared weights).
    """

    key: str
    layer: str
    role: Role
    shape: tuple[int, ...]
    dtype: str
    kind: Kind = Kind.OTHER
    trainable: bool = True
    convention: Convention = Convention.UNKNOWN
    buffer: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerView:
    """One layer of a live model as seen by a probe forward pass.

    ``calls`` counts how often the probe pass called it (more than once: shared).
    ``inbound`` names the layers whose outputs fed it (for depth and graph questions).
    ``config`` holds what matters for numerical equivalence: padding, strides, dilation,
    groups, epsilon, momentum, activation, data format, use_bias, reset_after, ...
    """

    path: str
    class_name: str
    kind: Kind
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    slots: tuple[str, ...] = ()
    input_shapes: tuple[tuple[int | None, ...], ...] = ()
    output_shapes: tuple[tuple[int | None, ...], ...] = ()
    calls: int = 1
    inbound: tuple[str, ...] = ()

    @property
    def shared(self) -> bool:
        return self.calls > 1


@dataclass(frozen=True)
class InputSpec:
    """One model input: shape without batch dimension, dtype, and channel layout."""

    shape: tuple[int | None, ...]
    dtype: str = "float32"
    data_format: str | None = None  # "channels_first" / "channels_last" / None for non-images


class ModelView(abc.ABC):
    """Adapter over one live model. Inspection never changes the model."""

    framework: str
    convention: Convention
    model: Any

    @property
    @abc.abstractmethod
    def layers(self) -> list[LayerView]:
        """Layers in execution order (probe forward pass)."""

    @property
    @abc.abstractmethod
    def slots(self) -> Mapping[str, Slot]:
        """Weight slots by key, in layer execution order."""

    @property
    @abc.abstractmethod
    def inputs(self) -> Sequence[InputSpec]:
        """The model's inputs, for generating probe data."""

    @abc.abstractmethod
    def read(self, key: str) -> np.ndarray:
        """A slot's current value as a numpy array (a copy)."""

    @abc.abstractmethod
    def assign(self, key: str, array: np.ndarray) -> None:
        """Set a slot's value; raises ``ShapeMismatchError`` when shape or dtype do not fit."""

    @abc.abstractmethod
    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model in inference mode; returns its outputs as numpy arrays."""

    @abc.abstractmethod
    def capture(self, inputs: Sequence[np.ndarray], *,
                with_inputs: bool = False) -> dict[str, np.ndarray]:
        """Every layer's output (by layer path) for ``inputs``, in inference mode;
        ``with_inputs`` adds each layer's input as ``path#input``."""

    def snapshot(self) -> Checkpoint:
        """A copy of every weight now, in memory: compare it with the model after training.

        Example:
            >>> before = weightgraft.view(model).snapshot()      # doctest: +SKIP
            >>> model.fit(x, y)                                   # doctest: +SKIP
            >>> weightgraft.diff(before, model)                   # doctest: +SKIP
        """
        live = self.as_checkpoint()
        frozen = [e.with_(loader=(lambda a=e.load(raw=True): a)) for e in live]
        live.replace_entries(frozen)
        live.format = f"{self.framework}-snapshot"
        return live

    def as_checkpoint(self) -> Checkpoint:
        """The model's current weights as a described ``Checkpoint`` (lazy reads)."""
        from .checkpoint import TensorEntry

        entries = []
        for slot in self.slots.values():
            entries.append(
                TensorEntry(
                    key=slot.key, shape=slot.shape, dtype=slot.dtype,
                    loader=(lambda k=slot.key: self.read(k)),
                    layer=slot.layer, kind=slot.kind, role=slot.role,
                    convention=slot.convention, trainable=slot.trainable,
                )
            )
        return Checkpoint(entries, format=f"{self.framework}-model", framework=self.framework,
                          convention=self.convention,
                          convention_reason=f"live {self.framework} model")


def view(model: Any, **options: Any) -> ModelView:
    """Wrap a live Keras 3 model or PyTorch module in its ``ModelView``.

    Frameworks are only consulted if the caller already imported them, so this never pulls
    torch or keras into a process that does not use them. ``options`` go to the adapter:
    ``input_shape=(3, 32, 32)`` (without batch) or ``inputs=[array]`` for the probe pass.
    """
    if isinstance(model, ModelView):
        return model
    # Keras first: on the torch backend every Keras layer is also a torch.nn.Module.
    if "keras" in sys.modules:
        import keras

        if isinstance(model, keras.Model | keras.layers.Layer):
            from .frameworks.keras import KerasModelView

            return KerasModelView(model, **options)
    if "torch" in sys.modules:
        import torch

        if isinstance(model, torch.nn.Module):
            from .frameworks.torch import TorchModelView

            return TorchModelView(model, **options)
    from .errors import WeightgraftError

    raise WeightgraftError(
        f"cannot view an object of type {type(model).__module__}.{type(model).__qualname__}",
        expected="a Keras 3 model or layer, or a torch.nn.Module",
    )
