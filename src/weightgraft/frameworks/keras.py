"""``KerasModelView``: a Keras 3 model (any backend) seen as layers, weight slots and activations.

Layers are the model's *leaf* layers (Keras's built-in layers; nested models and custom
container layers are expanded, so a layer inside a nested model has the path
``inner/dense``). Their order is the order one probe forward pass calls them: every leaf's
``call`` is wrapped for the pass and restored afterwards, even on error. For graph models
(functional, Sequential) the ``inbound`` edges come from the graph itself, so a raw
``keras.ops`` step between two layers does not hide the connection; for subclassed models
they come from the probe pass (which layer's output object the next layer received).

Only ``keras`` and ``keras.ops`` APIs are used, so jax and tensorflow backends work too.

Example:
    >>> mv = KerasModelView(keras.applications.ResNet50(weights=None))   # doctest: +SKIP
    >>> mv.slots["conv1_conv/kernel"].shape                              # doctest: +SKIP
    (7, 7, 3, 64)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Convention, Kind, Role
from ..errors import ShapeMismatchError, WeightgraftError
from ..modelview import InputSpec, LayerView, ModelView, Slot
from . import import_keras
from .keras_layers import (
    NotAGraph,
    WrappedCalls,
    graph_inbound,
    layer_config,
    layer_kind,
    layer_variables,
    leaf_map,
    probe_inbound,
    variable_role,
)
from .shared import feature_shape, flatten_order, layout_letters, probe_array

if TYPE_CHECKING:
    import keras

_RESHAPING = frozenset({"Permute", "Reshape"})
_SHAPE_ONLY = frozenset({"Permute", "Reshape", "Flatten", "InputLayer"})


@dataclass
class _Call:
    """One call of a leaf layer during a probe pass."""

    path: str
    index: int  # which call of this layer (0 = first)
    inputs: list[Any]
    outputs: list[Any]


@dataclass
class _Probe:
    calls: list[_Call] = field(default_factory=list)
    model_inputs: list[Any] = field(default_factory=list)


class KerasModelView(ModelView):
    """Adapter over a Keras 3 model or layer.

    ``input_shape`` (without batch) or ``inputs`` (arrays with batch) give the probe pass its
    data where the model does not know its input shape (an unbuilt subclassed model).

    Example:
        >>> mv = KerasModelView(model, input_shape=(28, 28, 1))   # doctest: +SKIP
        >>> [lv.path for lv in mv.layers][:2]                     # doctest: +SKIP
        ['conv2d', 'max_pooling2d']
    """

    framework = "keras"
    convention = Convention.KERAS

    def __init__(self, model: keras.Layer, *, input_shape: Sequence[int] | None = None,
                 inputs: Sequence[np.ndarray] | np.ndarray | None = None) -> None:
        self.keras = import_keras("viewing a Keras model")
        self.model = model
        # leaf path -> layer object, and id(layer) -> leaf path
        self._objects, self._paths = leaf_map(self.keras, model)
        self._input_shape = tuple(input_shape) if input_shape is not None else None
        self._given_inputs = inputs
        self._layers: list[LayerView] | None = None
        self._slots: dict[str, Slot] | None = None
        self._variables: dict[str, Any] = {}

    # -- the public face ---------------------------------------------------------------
    @property
    def inputs(self) -> list[InputSpec]:
        fmt = self.keras.config.image_data_format()
        if self._given_inputs is not None:
            arrays = _as_list(self._given_inputs)
            return [InputSpec(tuple(a.shape[1:]), np.asarray(a).dtype.name) for a in arrays]
        if self._input_shape is not None:
            return [InputSpec(self._input_shape, "float32", fmt)]
        try:
            model_inputs = getattr(self.model, "inputs", None)
            if model_inputs:
                return [InputSpec(tuple(t.shape[1:]), str(t.dtype),
                                  fmt if len(t.shape) > 3 else None) for t in model_inputs]
        except (AttributeError, ValueError):
            pass
        built = getattr(self.model, "_build_shapes_dict", None)
        if built and len(built) == 1:
            shape = tuple(next(iter(built.values())))
            first = next(iter(self._objects.values()), None)
            dtype = "int32" if type(first).__name__ == "Embedding" else "float32"
            return [InputSpec(tuple(shape[1:]), dtype, fmt if len(shape) > 3 else None)]
        raise WeightgraftError(
            f"cannot tell the input shape of Keras model {self.model.name!r}",
            expected="a functional/Sequential model with an Input, or a built model",
            fix="pass input_shape=(...) without the batch dimension, e.g. "
                "weightgraft.view(model, input_shape=(32, 32, 3)) (CLI: --input-shape 32,32,3)",
        )

    @property
    def layers(self) -> list[LayerView]:
        if self._layers is None:
            self._describe()
        assert self._layers is not None
        return self._layers

    @property
    def slots(self) -> Mapping[str, Slot]:
        if self._slots is None:
            self._describe()
        assert self._slots is not None
        return self._slots

    def layer_object(self, path: str) -> Any:
        """The live layer object at ``path`` (for identity questions such as sharing)."""
        return self._objects[path]

    def read(self, key: str) -> np.ndarray:
        return np.array(self.keras.ops.convert_to_numpy(self._variable(key).value))

    def assign(self, key: str, array: np.ndarray) -> None:
        variable = self._variable(key)
        array = np.asarray(array)
        expected = tuple(int(d) for d in variable.shape)
        if tuple(array.shape) != expected:
            raise ShapeMismatchError(
                f"slot {key!r} has shape {expected}, the array has shape {tuple(array.shape)}",
                tensor=key, expected=f"shape {expected}",
                fix="convert the layout first (weightgraft.layouts.convert_tensor) or check "
                    "that the source tensor belongs to this slot",
            )
        _check_dtype(key, str(variable.dtype), array.dtype)
        variable.assign(array.astype(str(variable.dtype), copy=False))

    def forward(self, inputs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        out = self.model(self._to_tensors(inputs), training=False)
        return [np.asarray(self.keras.ops.convert_to_numpy(t)) for t in self.keras.tree.flatten(out)]

    def capture(self, inputs: Sequence[np.ndarray] | np.ndarray, *,
                with_inputs: bool = False) -> dict[str, np.ndarray]:
        """Every leaf layer's (first) output; later calls of a shared layer as ``path@1``...
        ``with_inputs`` adds each layer's first input as ``path#input``."""
        probe = self._probe(inputs)
        out: dict[str, np.ndarray] = {}
        for call in probe.calls:
            key = call.path if call.index == 0 else f"{call.path}@{call.index}"
            if call.outputs:
                out[key] = self._numpy(call.outputs[0])
            if with_inputs and call.inputs:
                out[f"{key}#input"] = self._numpy(call.inputs[0])
        return out

    # -- probe pass ------------------------------------------------------------------------
    def probe_inputs(self) -> list[np.ndarray]:
        """The seeded, asymmetric inputs (batch 1) the probe pass uses."""
        if self._given_inputs is not None:
            return [np.asarray(a) for a in _as_list(self._given_inputs)]
        high = min((int(lay.input_dim) for lay in self._objects.values()
                    if type(lay).__name__ == "Embedding"), default=10)
        # unknown sizes: 32 pixels for images (deep CNNs pool them down), 8 steps otherwise
        return [probe_array((1, *(d if d is not None else (32 if len(spec.shape) >= 3 else 8)
                                  for d in spec.shape)), spec.dtype,
                            seed=i, high=high) for i, spec in enumerate(self.inputs)]

    def _to_tensors(self, inputs: Sequence[np.ndarray] | np.ndarray) -> Any:
        arrays = [self.keras.ops.convert_to_tensor(np.asarray(a)) for a in _as_list(inputs)]
        return arrays[0] if len(arrays) == 1 else arrays

    def _numpy(self, tensor: Any) -> np.ndarray:
        return np.asarray(self.keras.ops.convert_to_numpy(tensor))

    def _probe(self, inputs: Sequence[np.ndarray] | np.ndarray) -> _Probe:
        probe = _Probe()
        tensors = self._to_tensors(inputs)
        probe.model_inputs = self.keras.tree.flatten(tensors)
        counts: dict[str, int] = {}
        tree = self.keras.tree

        def wrap(path: str, original: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                index = counts.get(path, 0)
                counts[path] = index + 1
                ins = [t for t in tree.flatten((args, kwargs)) if _is_tensor(self.keras, t)]
                outs = [t for t in tree.flatten(result) if _is_tensor(self.keras, t)]
                probe.calls.append(_Call(path, index, ins, outs))
                return result
            return call

        if not all(getattr(layer, "built", True) for layer in self._objects.values()):
            # Building traces call() symbolically (meta/abstract tensors): do it unrecorded.
            self.model(tensors, training=False)
            self._objects, self._paths = leaf_map(self.keras, self.model)
        with WrappedCalls(self._objects, wrap):
            self.model(tensors, training=False)
        return probe

    # -- description -------------------------------------------------------------------------
    def _describe(self) -> None:
        probe = self._probe(self.probe_inputs())
        first: dict[str, _Call] = {}
        calls: dict[str, int] = {}
        for call in probe.calls:
            first.setdefault(call.path, call)
            calls[call.path] = calls.get(call.path, 0) + 1
        order = list(first) + [p for p in self._objects if p not in first]
        inbound = self._inbound(probe)
        flatten = self._flatten_contexts(probe)

        slots: dict[str, Slot] = {}
        seen_vars: dict[int, str] = {}
        layers: list[LayerView] = []
        for path in order:
            layer = self._objects[path]
            kind = layer_kind(layer)
            config = layer_config(layer)
            if path in flatten:
                config["flatten_input"] = flatten[path]
            keys = []
            for rel, variable in layer_variables(layer):
                key = f"{path}/{rel}"
                if id(variable) in seen_vars:  # one variable reached through two layers
                    owner = seen_vars[id(variable)]
                    slots[owner] = _with_alias(slots[owner], key)
                    continue
                seen_vars[id(variable)] = key
                self._variables[key] = variable
                role = variable_role(kind, rel)
                slots[key] = Slot(
                    key=key, layer=path, role=role,
                    shape=tuple(int(d) for d in variable.shape), dtype=str(variable.dtype),
                    kind=kind, trainable=bool(variable.trainable and layer.trainable),
                    convention=Convention.KERAS,
                    buffer=role in (Role.MOVING_MEAN, Role.MOVING_VARIANCE),
                )
                keys.append(key)
            call = first.get(path)
            layers.append(LayerView(
                path=path, class_name=type(layer).__name__, kind=kind, config=config,
                slots=tuple(keys),
                input_shapes=tuple(_shape(t) for t in call.inputs) if call else (),
                output_shapes=tuple(_shape(t) for t in call.outputs) if call else (),
                calls=calls.get(path, 0), inbound=tuple(sorted(inbound.get(path, ()),
                                                               key=order.index)),
            ))
        self._layers, self._slots = layers, slots

    def _variable(self, key: str) -> Any:
        if self._slots is None:
            self._describe()
        variable = self._variables.get(key)
        if variable is None:
            for slot in self.slots.values():
                if key in slot.aliases:
                    return self._variables[slot.key]
            raise KeyError(f"no slot {key!r} in Keras model {self.model.name!r}")
        return variable

    def _inbound(self, probe: _Probe) -> dict[str, set[str]]:
        """Which leaf layers feed which: from the graph where there is one, else the probe."""
        from_probe = probe_inbound(probe.calls, probe.model_inputs)
        graph: dict[str, set[str]] = {}
        try:
            graph_inbound(self.keras, self._paths, self.model,
                          [set() for _ in probe.model_inputs], graph)
        except NotAGraph:
            return from_probe
        return {path: graph.get(path, from_probe.get(path, set())) for path in self._objects}

    def _flatten_contexts(self, probe: _Probe) -> dict[str, dict[str, Any]]:
        """``flatten_input`` for each Dense fed by a flattened feature map (found from data)."""
        default_fmt = self.keras.config.image_data_format()
        found: dict[str, dict[str, Any]] = {}
        candidates: list[tuple[int, Any, str]] = [
            (0, t, default_fmt) for t in probe.model_inputs if len(t.shape) > 2]
        fmt_of: dict[int, str] = {}  # id(tensor) -> the layout its producer wrote it in
        reshaped: set[int] = set()
        for i, call in enumerate(probe.calls):
            layer = self._objects[call.path]
            name = type(layer).__name__
            # A layer's data_format says how it lays out its output; layers without one
            # (activations, Dense on sequences, Embedding: channels last) keep their input's.
            given = getattr(layer, "data_format", None) if name not in _SHAPE_ONLY else None
            fmt = given or next((fmt_of[id(t)] for t in call.inputs if id(t) in fmt_of),
                                "channels_last" if layer_kind(layer) is not Kind.OTHER
                                else default_fmt)
            if name == "Dense" and call.index == 0 and call.inputs and len(call.inputs[0].shape) == 2:
                flat = self._numpy(call.inputs[0])
                for pos, feature, feature_fmt in reversed(candidates):
                    if int(np.prod(feature.shape[1:])) != flat.shape[1]:
                        continue
                    data = self._numpy(feature)
                    letters = layout_letters(data.ndim - 1, feature_fmt)
                    order = flatten_order(data, letters, flat)
                    if order is None:
                        continue
                    between = {type(self._objects[c.path]).__name__
                               for c in probe.calls[pos:i]}
                    found[call.path] = {
                        "feature_shape": feature_shape(data, letters), "order": order,
                        "explicit": bool(between & _RESHAPING) or order != letters,
                    }
                    break
            if name in _SHAPE_ONLY:
                # The tensor a reshaping layer received is the feature map, unless another
                # reshaping layer made it (then that one's input already is a candidate).
                candidates.extend((i, t, fmt_of.get(id(t), default_fmt)) for t in call.inputs
                                  if len(t.shape) > 2 and id(t) not in reshaped)
                reshaped.update(id(t) for t in call.outputs)
            else:
                candidates.extend((i, t, fmt) for t in call.outputs if len(t.shape) > 2)
                fmt_of.update((id(t), fmt) for t in call.outputs)
        return found


def _is_tensor(keras: Any, value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.ndarray)


def _shape(tensor: Any) -> tuple[int | None, ...]:
    shape = tuple(int(d) if d is not None else None for d in tensor.shape)
    return (None, *shape[1:]) if shape else shape


def _as_list(inputs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(inputs, np.ndarray) or hasattr(inputs, "shape"):
        return [inputs]  # type: ignore[list-item]
    return list(inputs)


def _with_alias(slot: Slot, key: str) -> Slot:
    return replace(slot, aliases=(*slot.aliases, key))


def _check_dtype(key: str, slot_dtype: str, found: np.dtype) -> None:
    """Floats into float slots, integers into integer slots; anything else is refused."""
    want = np.dtype(slot_dtype) if slot_dtype != "bfloat16" else np.dtype("float32")
    ok = (np.issubdtype(want, np.floating) and np.issubdtype(found, np.floating)) or (
        np.issubdtype(want, np.integer) and np.issubdtype(found, np.integer)) or want == found
    if not ok:
        raise ShapeMismatchError(
            f"slot {key!r} holds {slot_dtype}, the array is {found.name}",
            tensor=key, expected=f"a {slot_dtype}-compatible array",
            fix=f"cast the array first, e.g. array.astype({slot_dtype!r})",
        )
