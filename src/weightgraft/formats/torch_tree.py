"""Turn an unpickled PyTorch object tree into path keys, tensor by tensor.

The key scheme: the path from the root to a tensor, its parts joined with ``.``. Dict keys
are used as they are (``int`` keys as digits), list and tuple positions as digits. So a plain
state dict keeps its own keys (``conv1.weight``), ``{"state_dict": sd, "epoch": 3}`` gives
``state_dict.conv1.weight`` and ``{"optimizer": {"state": {0: {"exp_avg": t}}}}`` gives
``optimizer.state.0.exp_avg``. Nothing is stripped: the reader reports which containers held
tensors in ``metadata["containers"]``, so a matcher can drop a prefix knowingly.

A container that holds no tensor anywhere below it is one *extra* at its path
(``epoch`` -> 3, ``optimizer.param_groups`` -> the list of dicts), kept whole.

Example:
    >>> found = flatten({"epoch": 3, "cfg": {"lr": 0.1}}, "x.pt")
    >>> found.extras
    {'epoch': 3, 'cfg': {'lr': 0.1}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import Group
from ..errors import FormatError
from .torch_globals import MAX_DEPTH, StorageRef, TensorRef, TorchDtype

MAX_NODES = 1_000_000  # objects visited, counting shared ones each time they are reached


@dataclass
class Found:
    """Tensors with their path keys and groups, non-tensor values, and tensor containers."""

    tensors: list[tuple[str, TensorRef, Group]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)


def _part(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return repr(key)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{_part(key)}" if prefix else _part(key)


def _is_optimizer(obj: Any, name: str) -> bool:
    """An optimizer state dict by shape (``state`` + ``param_groups``) or by its key."""
    if isinstance(obj, dict) and "state" in obj and "param_groups" in obj:
        return True
    return "optim" in name.rsplit(".", 1)[-1].lower()


class _Walker:
    def __init__(self, path: Any) -> None:
        self.path = path
        self.sizes: dict[int, int] = {}
        self.holds: dict[int, bool] = {}
        self.open: set[int] = set()
        self.found = Found()

    @staticmethod
    def _children(obj: Any) -> Any:
        if isinstance(obj, dict):
            return obj.values()
        return obj if isinstance(obj, (list, tuple, set, frozenset)) else ()

    def measure(self, obj: Any, depth: int = 0) -> int:
        """Values reached when the tree is expanded (shared objects once per path).

        Memoised per object, so a tree that shares one list at 2**60 paths is measured in
        60 steps and refused, instead of being walked.
        """
        if depth > MAX_DEPTH:
            raise FormatError(self.path, f"the object tree nests deeper than {MAX_DEPTH} levels",
                              expected="a checkpoint of tensors and plain settings")
        children = self._children(obj)
        if not children:
            return 1
        if id(obj) in self.sizes:
            return self.sizes[id(obj)]
        if id(obj) in self.open:
            raise FormatError(self.path, "a container in the object tree contains itself",
                              expected="a tree of dicts, lists and tensors")
        self.open.add(id(obj))
        total = 1 + sum(self.measure(v, depth + 1) for v in children)
        self.open.discard(id(obj))
        if total > MAX_NODES:
            raise FormatError(self.path, f"the object tree expands to more than {MAX_NODES} "
                              "values", expected="a checkpoint of tensors and plain settings")
        self.sizes[id(obj)] = total
        return total

    def holds_tensor(self, obj: Any) -> bool:
        if isinstance(obj, (TensorRef, StorageRef)):
            return True
        if not isinstance(obj, (dict, list, tuple)):
            return False
        if id(obj) not in self.holds:
            self.holds[id(obj)] = any(self.holds_tensor(v) for v in self._children(obj))
        return self.holds[id(obj)]

    def plain(self, obj: Any) -> Any:
        """A copy of a tensor-free value with torch stand-ins spelled as text."""
        if isinstance(obj, TorchDtype):
            return repr(obj)
        if isinstance(obj, dict):
            return type(obj)((k, self.plain(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple, set, frozenset)):
            return type(obj)(self.plain(v) for v in obj)
        return obj

    def walk(self, obj: Any, key: str, group: Group, depth: int) -> None:
        if isinstance(obj, StorageRef):  # a bare storage saved on its own: one flat tensor
            obj = TensorRef(obj, 0, (obj.numel,), (1,), obj.dtype)
        if isinstance(obj, TensorRef):
            self.found.tensors.append((key or "tensor", obj, group))
            return
        # the root container is always opened, so top-level settings are extras of their own
        if not isinstance(obj, (dict, list, tuple)) or (depth and not self.holds_tensor(obj)):
            self.found.extras[key or "value"] = self.plain(obj)
            return
        if group is Group.MODEL and _is_optimizer(obj, key):
            group = Group.OPTIMIZER
        if depth == 1:
            self.found.containers[key] = group.value
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in items:
            self.walk(v, _join(key, k), group, depth + 1)


def flatten(tree: Any, path: Any) -> Found:
    """Path keys for every tensor in ``tree``, plus its non-tensor values, bounded in work.

    Example:
        >>> flatten(7, "x.pt").extras
        {'value': 7}
    """
    walker = _Walker(path)
    walker.measure(tree)  # bounds depth, cycles and expanded size before anything is copied
    walker.walk(tree, "", Group.MODEL, 0)
    return walker.found
