"""What a Keras 3 layer is, for ``KerasModelView``: leaves, kind, config, variables, edges.

Leaves are Keras's built-in layers; models and custom layers that only hold other layers'
weights are containers and are expanded (``inner/dense``). Edges between leaves come from a
functional graph (raw ``keras.ops`` steps are transparent) or, for subclassed models, from
the tensors a probe pass handed from layer to layer.

Example:
    >>> objects, paths = leaf_map(keras, model)           # doctest: +SKIP
    >>> list(objects)                                      # doctest: +SKIP
    ['stem', 'inner/dense', 'out']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..checkpoint import Kind, Role
from ..formats.keras_names import kind_for_class, role_for_variable

# Config keys that change what a layer computes (numerical equivalence), kept verbatim.
_CONFIG_KEYS = (
    "units", "filters", "kernel_size", "strides", "padding", "dilation_rate", "groups",
    "data_format", "use_bias", "activation", "recurrent_activation", "epsilon", "momentum",
    "center", "scale", "axis", "depth_multiplier", "shared_axes", "num_heads", "key_dim",
    "value_dim", "reset_after", "go_backwards", "return_sequences", "return_state",
    "input_dim", "output_dim", "output_padding", "dims", "target_shape", "merge_mode",
    "use_cudnn", "unroll", "stateful", "rms_scaling",
)
_MHA_ROLES = {
    "query": (Role.QUERY_KERNEL, Role.QUERY_BIAS), "key": (Role.KEY_KERNEL, Role.KEY_BIAS),
    "value": (Role.VALUE_KERNEL, Role.VALUE_BIAS),
    "attention_output": (Role.OUTPUT_KERNEL, Role.OUTPUT_BIAS),
}
class NotAGraph(Exception):
    """The model (or a nested one) is subclassed: its edges come from the probe pass."""


def graph_inbound(keras: Any, paths: Mapping[int, str], model: Any,
                  in_producers: list[set[str]], out: dict[str, set[str]]) -> list[set[str]]:
    """Walk a functional/Sequential graph, adding each leaf's feeding leaves to ``out``;
    return the leaves that produce the model's outputs. Raises ``NotAGraph`` for a
    subclassed model anywhere inside (its edges come from the probe pass instead)."""
    if type(model).__name__ == "Sequential":
        functional = getattr(model, "_functional", None)
        if functional is None:
            produced = set().union(*in_producers) if in_producers else set()
            for layer in model.layers:
                produced = _feed(keras, paths, layer, [produced], out)[0]
            return [produced]
        model = functional
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise NotAGraph
    producers: dict[int, set[str]] = {
        id(t): p for t, p in zip(model.inputs, in_producers)}
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ins = [producers.get(id(t), set()) for t in node.input_tensors]
            results = _feed(keras, paths, node.operation, ins, out)
            for i, tensor in enumerate(node.outputs):
                producers[id(tensor)] = results[min(i, len(results) - 1)] if results else set()
    return [producers.get(id(t), set()) for t in model.outputs]


def _feed(keras: Any, paths: Mapping[int, str], op: Any, ins: list[set[str]],
          out: dict[str, set[str]]) -> list[set[str]]:
    path = paths.get(id(op))
    union = set().union(*ins) if ins else set()
    if path is not None:  # a leaf layer
        out.setdefault(path, set()).update(union)
        return [{path}]
    if is_container(keras, op):
        return graph_inbound(keras, paths, op, ins, out)
    return [union]  # a raw keras.ops operation: transparent


def probe_inbound(calls: Sequence[Any], model_inputs: Sequence[Any]) -> dict[str, set[str]]:
    """Edges by tensor identity over recorded calls (``.path``, ``.inputs``, ``.outputs``);
    a layer fed by a tensor no layer made (a raw op's result) follows the previous one."""
    producer: dict[int, str] = {}
    inputs = {id(t) for t in model_inputs}
    keep_alive = []  # ids stay unique only while the tensors live
    inbound: dict[str, set[str]] = {}
    previous: str | None = None
    for call in calls:
        edges = inbound.setdefault(call.path, set())
        for t in call.inputs:
            if id(t) in producer:
                edges.add(producer[id(t)])
            elif id(t) not in inputs and previous is not None:
                edges.add(previous)
        for t in call.outputs:
            producer[id(t)] = call.path
            keep_alive.append(t)
        previous = call.path
    for path, edges in inbound.items():
        edges.discard(path)
    return inbound


def leaf_map(keras: Any, model: Any) -> tuple[dict[str, Any], dict[int, str]]:
    """``{path: layer}`` and ``{id(layer): path}`` for the leaves; a shared layer once.

    Example:
        >>> objects, paths = leaf_map(keras, keras.Sequential([keras.layers.Dense(2)]))  # doctest: +SKIP
        >>> list(objects)                                                               # doctest: +SKIP
        ['dense']
    """
    objects: dict[str, Any] = {}
    paths: dict[int, str] = {}
    for path, layer in leaf_layers(keras, model, ""):
        if id(layer) not in paths:  # a shared layer keeps its first path
            paths[id(layer)] = path
            objects[path] = layer
    return objects, paths


def leaf_layers(keras: Any, layer: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(path, layer) for every leaf layer, nested models and custom containers expanded."""
    if not is_container(keras, layer):
        if type(layer).__name__ != "InputLayer":
            yield prefix + layer.name, layer
        return
    for child in child_layers(layer):
        child_prefix = prefix if not is_container(keras, child) else f"{prefix}{child.name}/"
        if is_container(keras, child):
            yield from leaf_layers(keras, child, child_prefix)
        elif type(child).__name__ != "InputLayer":
            yield prefix + child.name, child


def child_layers(layer: Any) -> list[Any]:
    """A model's own layers (``model.layers``) or a custom layer's directly tracked ones."""
    if hasattr(layer, "layers") and hasattr(layer, "summary"):  # a Model (Sequential too)
        return list(layer.layers)
    if hasattr(layer, "_flatten_layers"):
        return list(layer._flatten_layers(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def is_container(keras: Any, layer: Any) -> bool:
    """Models always; custom (non-Keras) layers that only hold other layers' weights too."""
    if isinstance(layer, keras.Model):
        return True
    if not isinstance(layer, keras.layers.Layer):
        return False
    if type(layer).__module__.startswith("keras."):
        return False
    children = child_layers(layer)
    own = {id(v) for v in layer.weights} - {id(v) for c in children for v in c.weights}
    return bool(children) and not own


class WrappedCalls:
    """Context: every leaf layer's ``call`` replaced by a recording wrapper, then restored."""

    def __init__(self, objects: Mapping[str, Any],
                 wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> None:
        self.objects, self.wrap = objects, wrap
        self.saved: list[tuple[Any, bool, Any]] = []

    def __enter__(self) -> None:
        try:
            for path, layer in self.objects.items():
                had_own = "call" in vars(layer)
                self.saved.append((layer, had_own, vars(layer).get("call")))
                # Instance attribute: Operation.__call__ looks up self.call on the instance.
                object.__setattr__(layer, "call", self.wrap(path, layer.call))
        except BaseException:
            self.__exit__()  # ``with`` does not call __exit__ when __enter__ fails
            raise

    def __exit__(self, *exc: object) -> None:
        while self.saved:
            layer, had_own, original = self.saved.pop()
            if had_own:
                object.__setattr__(layer, "call", original)
            else:
                vars(layer).pop("call", None)


def layer_variables(layer: Any) -> list[tuple[str, Any]]:
    """(name relative to the layer, variable): ``kernel``, ``query/kernel``, ``forward_lstm/bias``."""
    cells = set()
    for holder in (layer, getattr(layer, "forward_layer", None),
                   getattr(layer, "backward_layer", None), getattr(layer, "layer", None)):
        cell = getattr(holder, "cell", None)
        if cell is not None:
            cells.add(cell.name)
    own = getattr(layer, "path", None) or layer.name
    out = []
    for variable in layer.weights:
        path = str(getattr(variable, "path", variable.name))
        rel = path[len(own) + 1:] if path.startswith(own + "/") else variable.name
        parts = [p for p in rel.split("/") if p not in cells] or [variable.name]
        out.append(("/".join(parts), variable))
    return out


def layer_kind(layer: Any) -> Kind:
    """The layer's kind by class; wrappers (Bidirectional, TimeDistributed) by what they wrap.

    Example:
        >>> layer_kind(keras.layers.Bidirectional(keras.layers.LSTM(2)))  # doctest: +SKIP
        <Kind.LSTM: 'lstm'>
    """
    name = type(layer).__name__
    if name in ("Bidirectional", "TimeDistributed"):
        inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
        return layer_kind(inner) if inner is not None else Kind.OTHER
    if name == "RNN":  # keras.layers.RNN(LSTMCell(...)) computes what LSTM(...) does
        cell = type(getattr(layer, "cell", None)).__name__
        if cell in _CELLS:
            return _CELLS[cell]
    return kind_for_class(name)


_CELLS = {"LSTMCell": Kind.LSTM, "GRUCell": Kind.GRU, "SimpleRNNCell": Kind.SIMPLE_RNN}


def variable_role(kind: Kind, rel: str) -> Role:
    """The role of a variable named ``rel`` inside a layer of ``kind``.

    Example:
        >>> variable_role(Kind.MULTI_HEAD_ATTENTION, "query/kernel")
        <Role.QUERY_KERNEL: 'query_kernel'>
        >>> variable_role(Kind.BATCH_NORM, "moving_variance")
        <Role.MOVING_VARIANCE: 'moving_variance'>
    """
    parts = rel.split("/")
    if kind is Kind.MULTI_HEAD_ATTENTION and parts[0] in _MHA_ROLES:
        kernel, bias = _MHA_ROLES[parts[0]]
        return kernel if parts[-1] == "kernel" else bias
    if kind is Kind.EMBEDDING and parts[-1] == "embeddings":
        return Role.EMBEDDINGS
    return role_for_variable(f"x/{parts[-1]}", kind)[0]


def layer_config(layer: Any) -> dict[str, Any]:
    """The ``get_config()`` entries that change the numbers (padding, epsilon, activation...).

    Example:
        >>> layer_config(keras.layers.Conv2D(4, 3, padding="same"))["padding"]  # doctest: +SKIP
        'same'
    """
    try:
        full = layer.get_config()
    except (NotImplementedError, TypeError):
        return {}
    config = {k: full[k] for k in _CONFIG_KEYS if k in full}
    activation = config.get("activation")
    if isinstance(activation, dict):  # a serialized custom activation or function
        inner_cfg = activation.get("config")
        # A plain function serialises its name as the config itself; a layer as a dict.
        config["activation"] = (inner_cfg if isinstance(inner_cfg, str)
                                else (inner_cfg or {}).get("name")
                                or activation.get("class_name") or "custom")
    for wrapped in ("layer", "cell"):  # Bidirectional / TimeDistributed, or RNN(cell)
        inner = full.get(wrapped)
        if isinstance(inner, dict):
            config.update({k: v for k, v in inner.get("config", {}).items()
                           if k in _CONFIG_KEYS and k not in config})
    return config
