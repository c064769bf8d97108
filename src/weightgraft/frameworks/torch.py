"""``TorchModelView``: a PyTorch ``nn.Module`` seen as layers, state-dict slots and activations.

Layers are the leaf modules (and the modules that compute with their children's weights
themselves: ``MultiheadAttention``, ``LSTM``/``GRU``/``RNN``), in the order one probe forward
pass runs them (forward hooks). ``inbound`` edges come from the same pass, through autograd:
a module's input tensor is traced back through ``grad_fn`` to the module outputs it was
computed from, so ``torch.cat``/``x + y``/``x.permute`` between modules keep the edge.
Slots are the state-dict keys, buffers included; tied parameters are one slot with aliases.

The probe pass runs in eval mode; every module's training flag is restored afterwards and
every hook removed, even on error.

Example:
    >>> mv = TorchModelView(torchvision.models.resnet18(), input_shape=(3, 64, 64))  # doctest: +SKIP
    >>> mv.slots["conv1.weight"].shape                                                 # doctest: +SKIP
    (64, 3, 7, 7)
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Convention, Kind
from ..errors import ShapeMismatchError, WeightgraftError
from ..modelview import InputSpec, LayerView, ModelView, Slot
from . import import_torch
from .torch_layers import (
    CHANNELS_FIRST_OPS,
    CHANNELS_LAST_OPS,
    RESHAPES,
    SEQUENCE_KINDS,
    layer_modules,
    module_config,
    module_kind,
    slot_owner,
    slot_role,
)
from .shared import feature_shape, flatten_order, layout_letters, probe_array

if TYPE_CHECKING:
    import torch

_RECENT = 64  # feature maps kept for the Flatten search
_SPATIAL_GUESS = {1: (64,), 2: (32, 32), 3: (16, 16, 16)}


@dataclass
class _Call:
    path: str
    index: int
    inputs: list[Any]
    outputs: list[Any]
    inbound: set[str] = field(default_factory=set)


class TorchModelView(ModelView):
    """Adapter over a ``torch.nn.Module``.

    The probe pass needs example inputs: ``inputs=`` (arrays with batch), ``input_shape=``
    (one input, without batch), or, by default, a guess from the first module (a ``Conv2d``
    with C input channels gets (C, 32, 32), then 28, 64, 224 and 96 pixels if that fails).

    Example:
        >>> mv = TorchModelView(net, input_shape=(1, 28, 28))   # doctest: +SKIP
        >>> mv.assign("fc.bias", np.zeros(10, "float32"))       # doctest: +SKIP
    """

    framework = "torch"
    convention = Convention.TORCH

    def __init__(self, model: torch.nn.Module, *, input_shape: Sequence[int] | None = None,
                 inputs: Sequence[np.ndarray] | np.ndarray | None = None) -> None:
        self.torch = import_torch("viewing a PyTorch model")
        self.model = model
        self._objects: dict[str, Any] = dict(layer_modules(model))
        self._input_shape = tuple(input_shape) if input_shape is not None else None
        self._given = [np.asarray(a) for a in _as_list(inputs)] if inputs is not None else None
        self._probe_arrays: list[np.ndarray] | None = None
        self._layers: list[LayerView] | None = None
        self._slots: dict[str, Slot] | None = None
        self._tensors: dict[str, Any] = {}
        self._alias_of: dict[str, str] = {}
        self._flatten: dict[str, dict[str, Any]] = {}

    # -- the public face ----------------------------------------------------------------------
    @property
    def inputs(self) -> list[InputSpec]:
        arrays = self.probe_inputs()
        return [InputSpec(tuple(a.shape[1:]), a.dtype.name,
                          "channels_first" if a.ndim > 3 else None) for a in arrays]

    @property
    def inputs_guessed(self) -> bool:
        """True when the probe inputs are a guess from the first layer, not given."""
        return self._input_shape is None and self._given is None

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
        """The live module at ``path`` (for identity questions such as sharing)."""
        return self._objects[path]

    def read(self, key: str) -> np.ndarray:
        tensor = self._tensor(key).detach()
        if tensor.dtype == self.torch.bfloat16:
            tensor = tensor.float()
        return tensor.cpu().numpy().copy()

    def assign(self, key: str, array: np.ndarray) -> None:
        tensor = self._tensor(key)
        array = np.asarray(array)
        expected = tuple(tensor.shape)
        if tuple(array.shape) != expected:
            raise ShapeMismatchError(
                f"slot {key!r} has shape {expected}, the array has shape {tuple(array.shape)}",
                tensor=key, expected=f"shape {expected}",
                fix="convert the layout first (weightgraft.layouts.convert_tensor) or check "
                    "that the source tensor belongs to this slot",
            )
        want = tensor.dtype
        if (want.is_floating_point != np.issubdtype(array.dtype, np.floating)
                or np.issubdtype(array.dtype, np.complexfloating) or array.dtype == bool):
            raise ShapeMismatchError(
                f"slot {key!r} holds {_dtype_name(want)}, the array is {array.dtype.name}",
                tensor=key, expected=f"a {_dtype_name(want)}-compatible array",
                fix=f"cast the array first, e.g. array.astype({_dtype_name(want)!r})",
            )
        with self.torch.no_grad():
            source = self.torch.from_numpy(np.array(array, order="C"))  # 0-d stays 0-d
            tensor.copy_(source.to(device=tensor.device, dtype=want))

    def forward(self, inputs: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        with _eval_mode(self.model), self.torch.no_grad():
            out = self.model(*self._to_tensors(inputs))
        return [_numpy(t) for t in _tensors_in(self.torch, out)]

    def capture(self, inputs: Sequence[np.ndarray] | np.ndarray, *,
                with_inputs: bool = False) -> dict[str, np.ndarray]:
        """Every layer's (first) output; later calls of a shared module as ``path@1``...
        ``with_inputs`` adds each layer's first input as ``path#input``."""
        with self.torch.no_grad():
            calls = self._run(self._to_tensors(inputs), trace=False)
        out: dict[str, np.ndarray] = {}
        for call in calls:
            key = call.path if call.index == 0 else f"{call.path}@{call.index}"
            if call.outputs:
                out[key] = _numpy(call.outputs[0])
            if with_inputs and call.inputs:
                out[f"{key}#input"] = _numpy(call.inputs[0])
        return out

    def probe_inputs(self) -> list[np.ndarray]:
        """The seeded, asymmetric inputs (batch 2) the probe pass uses."""
        if self._given is not None:
            return self._given
        if self._probe_arrays is None:
            self._probe_arrays = self._find_probe_inputs()
        return self._probe_arrays

    # -- probe pass -------------------------------------------------------------------------------
    def _to_tensors(self, inputs: Sequence[np.ndarray] | np.ndarray) -> list[Any]:
        device = next((p.device for p in self.model.parameters()), None)
        # float data in the model's own float type (a half-precision model takes halves)
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        out = []
        for a in _as_list(inputs):
            t = self.torch.from_numpy(np.array(a, order="C")).to(device)
            out.append(t.to(dtype) if dtype is not None and t.is_floating_point() else t)
        return out

    def _candidates(self) -> Iterator[list[np.ndarray]]:
        if self._input_shape is not None:
            yield [probe_array((2, *self._input_shape), "float32")]
            return
        first = next((m for m in self._objects.values() if module_kind(m) is not Kind.OTHER), None)
        name = type(first).__name__ if first is not None else ""
        if first is None:
            return
        if name == "Embedding":
            yield [probe_array((2, 16), "int64", high=first.num_embeddings)]
        elif name in ("Linear", "Bilinear"):
            yield [probe_array((2, first.in_features), "float32")]
        elif name in ("LSTM", "GRU", "RNN"):
            yield [probe_array((2, 8, first.input_size), "float32")]
        elif name == "MultiheadAttention":
            yield [probe_array((2, 8, first.embed_dim), "float32", seed=i) for i in range(3)]
        elif name == "LayerNorm":
            yield [probe_array((2, 8, *first.normalized_shape), "float32")]
        elif hasattr(first, "in_channels") or hasattr(first, "num_features"):
            channels = getattr(first, "in_channels", None) or first.num_features
            rank = (len(first.kernel_size) if hasattr(first, "kernel_size")
                    else int(name[-2]) if name[-2:-1].isdigit() else 2)
            if rank == 2:
                for size in (32, 28, 64, 224, 96):
                    yield [probe_array((2, channels, size, size), "float32")]
            else:
                yield [probe_array((2, channels, *_SPATIAL_GUESS.get(rank, (32,))), "float32")]

    def _find_probe_inputs(self) -> list[np.ndarray]:
        last: Exception | None = None
        tried: list[str] = []
        for arrays in self._candidates():
            try:
                self.forward(arrays)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                last = exc
                tried.append(" and ".join(str(tuple(a.shape)) for a in arrays))
                continue
            return arrays
        raise WeightgraftError(
            f"no probe input ran through {type(self.model).__name__}"
            + (f" (tried {', '.join(tried[:4])}{', ...' if len(tried) > 4 else ''}; the "
               f"model's forward raised: {str(last).splitlines()[0]})" if last else
               " (its first layer tells no input shape to try)"),
            expected="a model whose first layer tells its input shape",
            fix="pass input_shape=(C, H, W) without the batch dimension, or inputs=[array], "
                "e.g. weightgraft.view(model, input_shape=(3, 224, 224)) (CLI: --input-shape "
                "3,224,224)",
        )

    def _run(self, tensors: list[Any], trace: bool) -> list[_Call]:
        """One forward pass with hooks on every layer module; training flags restored."""
        torch = self.torch
        calls: list[_Call] = []
        counts: dict[str, int] = {}
        owner: dict[int, str] = {}  # id(grad_fn) or id(tensor) -> producing layer
        keep: list[Any] = []  # objects whose ids are in ``owner`` stay alive
        inputs = {id(t) for t in tensors}

        def hook(path: str) -> Any:
            def record(module: Any, args: Any, kwargs: Any, output: Any) -> None:
                busy.append(path)
                try:
                    _record(path, module, args, kwargs, output)
                finally:
                    busy.pop()
            return record

        def _record(path: str, module: Any, args: Any, kwargs: Any, output: Any) -> None:
            index = counts.get(path, 0)
            counts[path] = index + 1
            ins = _tensors_in(torch, (args, kwargs))
            outs = _tensors_in(torch, output)
            call = _Call(path, index, ins, outs)
            if trace and index == 0 and module_kind(module) is Kind.DENSE and ins:
                context = _flatten_context(ins[0], recent, layout)
                if context is not None:
                    flatten[path] = context
            if trace:
                kind = module_kind(module)
                for t in outs:
                    if t.dim() > 2 and kind in SEQUENCE_KINDS:
                        layout[t] = "channels_last"
                    elif t.dim() > 2 and kind is not Kind.OTHER:
                        layout[t] = "channels_first"
                call.inbound = _producers(ins, owner, inputs, calls)
                for t in outs:
                    owner[id(t)] = path
                    if t.grad_fn is not None:
                        owner[id(t.grad_fn)] = path
                        keep.append(t.grad_fn)
                    keep.append(t)
            calls.append(call)

        recent: deque[Any] = deque(maxlen=_RECENT)
        from torch.utils.weak import WeakIdKeyDictionary

        layout = WeakIdKeyDictionary()  # tensor -> "channels_first" / "channels_last"
        busy: list[str] = []  # non-empty while our own hook runs: its torch calls are not data
        flatten = self._flatten = {}

        class Record(torch.overrides.TorchFunctionMode):  # type: ignore[misc]
            """Keeps the newest feature maps made by any torch op (F.max_pool2d, relu...)."""

            def __torch_function__(self, func: Any, types: Any, args: Any = (),
                                   kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                if busy or not isinstance(out, torch.Tensor) or out.dim() <= 2:
                    return out
                name = getattr(func, "__name__", "")
                if name in CHANNELS_FIRST_OPS:
                    layout[out] = "channels_first"
                elif name in CHANNELS_LAST_OPS:
                    layout[out] = "channels_last"
                elif out not in layout:
                    first = next((a for a in _tensors_in(torch, (args, kwargs)) if a in layout),
                                 None)
                    if first is not None:
                        layout[out] = layout[first]
                if name not in RESHAPES:
                    recent.append(out)
                return out

        handles = []
        try:
            with _eval_mode(self.model), contextlib.ExitStack() as stack:
                if trace:
                    stack.enter_context(Record())
                for path, module in self._objects.items():
                    handles.append(module.register_forward_hook(hook(path), with_kwargs=True))
                if trace:  # a differentiable copy of each float input, so grad_fn links exist
                    keep.extend(tensors)  # ids of freed tensors get reused
                    tensors = [t.detach().requires_grad_(True).clone()
                               if t.is_floating_point() else t for t in tensors]
                    keep.extend(tensors)
                    inputs |= {id(t) for t in tensors}
                    recent.extend(t for t in tensors if t.dim() > 2)
                    for t in tensors:  # images arrive NC...; integer ids become sequences
                        if t.dim() > 3 or (t.dim() == 3 and t.is_floating_point()
                                           and _first_is_conv(self._objects)):
                            layout[t] = "channels_first"
                    with torch.enable_grad():
                        self.model(*tensors)
                else:
                    self.model(*tensors)
        finally:
            for handle in handles:
                handle.remove()
        return calls

    # -- description ---------------------------------------------------------------------------------
    def _describe(self) -> None:
        calls = self._run(self._to_tensors(self.probe_inputs()), trace=True)
        first: dict[str, _Call] = {}
        count: dict[str, int] = {}
        inbound: dict[str, set[str]] = {}
        for call in calls:
            first.setdefault(call.path, call)
            count[call.path] = count.get(call.path, 0) + 1
            inbound.setdefault(call.path, set()).update(call.inbound - {call.path})
        order = list(first) + [p for p in self._objects if p not in first]
        flatten = self._flatten

        by_layer: dict[str, list[str]] = {p: [] for p in order}
        state = self.model.state_dict(keep_vars=True)
        buffers = {id(b) for b in self.model.buffers()}
        for key in state:
            by_layer.setdefault(slot_owner(key, self._objects), []).append(key)

        slots: dict[str, Slot] = {}
        primary: dict[int, str] = {}
        layers: list[LayerView] = []
        for path in by_layer:
            module = self._objects.get(path)
            kind = module_kind(module) if module is not None else Kind.OTHER
            keys = []
            for key in by_layer[path]:
                tensor = state[key]
                if id(tensor) in primary:  # tied: the same Parameter under a second name
                    main = primary[id(tensor)]
                    slots[main] = replace(slots[main], aliases=(*slots[main].aliases, key))
                    self._alias_of[key] = main
                    continue
                primary[id(tensor)] = key
                self._tensors[key] = tensor
                rel = key[len(path) + 1:] if path else key
                is_buffer = id(tensor) in buffers
                slots[key] = Slot(
                    key=key, layer=path, role=slot_role(kind, rel), shape=tuple(tensor.shape),
                    dtype=_dtype_name(tensor.dtype), kind=kind,
                    trainable=bool(tensor.requires_grad) and not is_buffer,
                    convention=Convention.TORCH, buffer=is_buffer,
                )
                keys.append(key)
            if module is None:
                continue
            config = module_config(module)
            if path in flatten:
                config["flatten_input"] = flatten[path]
            call = first.get(path)
            layers.append(LayerView(
                path=path, class_name=type(module).__name__, kind=kind, config=config,
                slots=tuple(keys),
                input_shapes=tuple(_shape(t, _batch_axis(module, i, False))
                                   for i, t in enumerate(call.inputs)) if call else (),
                output_shapes=tuple(_shape(t, _batch_axis(module, i, True))
                                    for i, t in enumerate(call.outputs)) if call else (),
                calls=count.get(path, 0),
                inbound=tuple(sorted(inbound.get(path, ()), key=order.index)),
            ))
        self._layers, self._slots = layers, slots

    def _tensor(self, key: str) -> Any:
        if self._slots is None:
            self._describe()
        key = self._alias_of.get(key, key)
        if key not in self._tensors:
            raise KeyError(f"no slot {key!r} in {type(self.model).__name__} "
                           "(slot keys are state-dict keys)")
        return self._tensors[key]


def _producers(ins: list[Any], owner: dict[int, str], inputs: set[int],
               calls: list[_Call]) -> set[str]:
    """The layers whose outputs an input was computed from (autograd graph, then identity)."""
    found: set[str] = set()
    for t in ins:
        if id(t) in inputs:
            continue
        fn = t.grad_fn
        if fn is None:
            if id(t) in owner:
                found.add(owner[id(t)])
            elif calls:  # no graph to follow (integer data, no_grad inside forward)
                found.add(calls[-1].path)
            continue
        stack, seen = [fn], set()
        while stack and len(seen) < 100_000:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in owner:
                found.add(owner[id(node)])
                continue
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    return found


def _first_is_conv(objects: Mapping[str, Any]) -> bool:
    first = next((m for m in objects.values() if module_kind(m) is not Kind.OTHER), None)
    return first is not None and module_kind(first) not in SEQUENCE_KINDS


def _flatten_context(flat_input: Any, recent: Sequence[Any],
                     layout: Mapping[Any, str]) -> dict[str, Any] | None:
    """``flatten_input`` for a Linear whose input is ``flat_input``, from the feature maps
    (newest last) the probe pass produced before it; None when none fits. A map's layout
    (NC... or N...C) is what the op that made it writes; unknown ones count as NC...."""
    if flat_input.dim() != 2:
        return None
    flat: np.ndarray | None = None
    for feature in reversed(recent):
        if feature.numel() != flat_input.numel() or feature.shape[0] != flat_input.shape[0]:
            continue
        flat = _numpy(flat_input) if flat is None else flat
        data = _numpy(feature)
        letters = layout_letters(data.ndim - 1, layout.get(feature, "channels_first"))
        order = flatten_order(data, letters, flat)
        if order is not None:
            return {"feature_shape": feature_shape(data, letters), "order": order,
                    "explicit": order != letters}
    return None


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Eval mode for the duration; each module's own training flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _tensors_in(torch: Any, value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(torch, v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors_in(torch, v)]
    return []


def _numpy(tensor: Any) -> np.ndarray:
    tensor = tensor.detach()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.cpu().numpy().copy()


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(tensor: Any, batch_axis: int = 0) -> tuple[int | None, ...]:
    """The tensor's shape with its batch axis shown as None (the probe's batch is no fact
    about the model)."""
    shape: list[int | None] = [int(d) for d in tensor.shape]
    if 0 <= batch_axis < len(shape):
        shape[batch_axis] = None
    return tuple(shape)


def _batch_axis(module: Any, position: int, output: bool) -> int:
    """Where the batch sits in a module's ``position``-th input or output tensor.

    Recurrent layers and attention put it second unless ``batch_first``; an RNN's hidden
    states (h_n, c_n: (layers * directions, N, H)) always have it second.
    """
    import torch

    if isinstance(module, torch.nn.RNNBase):
        if position > 0:  # h_0 / c_0 in, h_n / c_n out
            return 1
        return 0 if module.batch_first else 1
    if isinstance(module, torch.nn.MultiheadAttention) and not (output and position > 0):
        return 0 if module.batch_first else 1
    return 0


def _as_list(inputs: Any) -> list[Any]:
    if hasattr(inputs, "shape"):
        return [inputs]
    return list(inputs)
