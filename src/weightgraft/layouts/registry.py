"""The rule registry and per-tensor conversion: ``tensor_transform`` and ``convert_tensor``.

A *rule* says, for one (kind, role, convention), how to bring a tensor stored in that
convention to the canonical one (``keras``: channels-last, kernels (*spatial, in, out),
dense (in, out)). The rule's way back (canonical -> convention) is not written by hand: it
is the inverse of the same operation sequence, so each rule is registered together with its
inverse, and a conversion ``src -> dst`` is ``to_canonical(src)`` followed by
``from_canonical(dst)``. N conventions need 2N directions per tensor, not N^2.

Example:
    >>> import numpy as np
    >>> t = tensor_transform("dense", "kernel", "keras", "torch")
    >>> t.steps
    ('transpose axes (1, 0): (in, out) -> (out, in)',)
    >>> convert_tensor(np.zeros((3, 2)), "dense", "kernel", "keras", "torch").shape
    (2, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checkpoint import Convention, Kind, Role
from ..errors import LayoutError
from .ops import MergeAxes, Op, SplitAxis, Transpose, op_from_dict, simplify

Context = Mapping[str, Any]
OpsBuilder = Callable[[Context], tuple[Op, ...]]

CANONICAL = Convention.KERAS


@dataclass(frozen=True)
class Rule:
    """How one (kind, role) stored in ``convention`` reaches the canonical layout."""

    kind: Kind
    role: Role
    convention: Convention
    layout: str  # the stored layout in words, e.g. "(out, in, kh, kw)"
    build: OpsBuilder

    def to_canonical(self, context: Context | None = None) -> tuple[Op, ...]:
        return self.build(context or {})

    def from_canonical(self, context: Context | None = None) -> tuple[Op, ...]:
        return tuple(op.inverse() for op in reversed(self.to_canonical(context)))


_RULES: dict[tuple[Kind, Role, Convention], Rule] = {}
# Roles that exist only as part of a whole-layer conversion, with the reason.
_LAYER_ONLY: dict[tuple[Kind, Role, Convention], str] = {}


def register(kind: Kind, role: Role, convention: Convention, layout: str,
             build: OpsBuilder | tuple[Op, ...] = ()) -> Rule:
    """Register how ``(kind, role)`` stored in ``convention`` reaches the canonical layout.

    ``build`` is a tuple of operations or a function of the context returning one; its
    inverse (the way back from canonical) is derived, never written separately.

    Example:
        >>> r = register(Kind.OTHER, Role.OTHER, Convention.TORCH, "(a, b)", (Transpose((1, 0)),))
        >>> r.from_canonical()
        (Transpose(axes=(1, 0), note=''),)
        >>> _ = unregister(Kind.OTHER, Role.OTHER, Convention.TORCH)
    """
    builder: OpsBuilder = build if callable(build) else (lambda _ctx, ops=tuple(build): ops)
    rule = Rule(Kind(kind), Role(role), Convention(convention), layout, builder)
    _RULES[(rule.kind, rule.role, rule.convention)] = rule
    return rule


def unregister(kind: Kind, role: Role, convention: Convention) -> Rule | None:
    """Remove a rule (tests and experiments); returns it, or None when there was none."""
    return _RULES.pop((Kind(kind), Role(role), Convention(convention)), None)


def layer_only(kind: Kind, role: Role, convention: Convention, reason: str) -> None:
    """Mark a role as converted only with its whole layer (``convert_layer``), saying why."""
    _LAYER_ONLY[(Kind(kind), Role(role), Convention(convention))] = reason


def rules() -> tuple[Rule, ...]:
    """Every registered rule, for listing and for tests that must cover all of them.

    Example:
        >>> any(r.kind is Kind.CONV2D and r.convention is Convention.THEANO for r in rules())
        True
    """
    return tuple(_RULES.values())


def find_rule(kind: Kind | str, role: Role | str, convention: Convention | str,
              purpose: str = "") -> Rule:
    """The rule for one (kind, role, convention), or ``LayoutError`` naming all three.

    Example:
        >>> find_rule("dense", "kernel", "torch").layout
        '(out, in)'
    """
    key = (_kind(kind), _role(role), _convention(convention))
    rule = _RULES.get(key)
    if rule is not None:
        return rule
    k, r, c = key
    if key in _LAYER_ONLY:
        raise LayoutError(f"{purpose}{k} {r} in the {c} convention has no one-to-one "
                          f"counterpart: "
                          f"{_LAYER_ONLY[key]}",
                          fix=f"convert the whole layer with convert_layer({k.value!r}, ...)")
    known = sorted({x.convention.value for x in _RULES.values() if x.kind is k and x.role is r})
    roles = sorted({x.role.value for x in _RULES.values() if x.kind is k})
    expected = (f"one of the conventions {known} for {k} {r}" if known else
                f"one of the roles {roles} for {k}" if roles else "a registered layer kind")
    raise LayoutError(f"{purpose}no layout rule for kind {k}, role {r}, convention {c}",
                      expected=expected,
                      fix="describe the tensor with a supported kind/role/convention, or "
                          "register a rule with weightgraft.layouts.register")


@dataclass(frozen=True)
class Transform:
    """A layout conversion for one tensor: a sequence of invertible operations.

    Example:
        >>> import numpy as np
        >>> t = tensor_transform("conv2d", "kernel", "torch", "keras")
        >>> w = np.random.default_rng(0).normal(size=(4, 3, 2, 5))
        >>> t.apply(w).shape, bool((t.inverse().apply(t.apply(w)) == w).all())
        ((2, 5, 3, 4), True)
        >>> Transform.from_dict(t.to_dict()) == t
        True
    """

    kind: Kind
    role: Role
    src: Convention
    dst: Convention
    ops: tuple[Op, ...] = ()

    @property
    def steps(self) -> tuple[str, ...]:
        """The operations in words, in the order they are applied."""
        return tuple(op.describe() for op in self.ops)

    @property
    def is_identity(self) -> bool:
        return not self.ops

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Convert one array (its dtype is kept; every step is a pure re-indexing)."""
        out = np.asarray(array)
        for op in self.ops:
            out = op.apply(out)
        return out

    def inverse(self) -> Transform:
        """The transform back (``dst -> src``)."""
        return Transform(self.kind, self.role, self.dst, self.src,
                         tuple(op.inverse() for op in reversed(self.ops)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (provenance records keep it)."""
        return {"kind": self.kind.value, "role": self.role.value, "src": self.src.value,
                "dst": self.dst.value, "steps": list(self.steps),
                "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transform:
        """Rebuild from ``to_dict()`` output (``steps`` is derived, so it is ignored)."""
        return cls(Kind(data["kind"]), Role(data["role"]), Convention(data["src"]),
                   Convention(data["dst"]), tuple(op_from_dict(o) for o in data["ops"]))


def tensor_transform(kind: Kind | str, role: Role | str, src: Convention | str,
                     dst: Convention | str, context: Context | None = None) -> Transform:
    """The transform that takes one tensor from ``src`` layout to ``dst`` layout.

    Composed as ``src -> keras -> dst``; context rules (``context["flatten"]`` for the
    Dense after a Flatten) act in the canonical layout between the two halves. Keys under
    ``context["src_context"]`` / ``["dst_context"]`` apply to one side only. Raises
    ``LayoutError`` naming kind, role and conventions when a rule is missing.

    Example:
        >>> tensor_transform("conv2d", "kernel", "theano", "keras",
        ...                  {"dim_ordering": "th"}).steps[0]
        'flip axes (2, 3): undo the true-convolution flip'
    """
    k, r, s, d = _kind(kind), _role(role), _convention(src), _convention(dst)
    ctx: Context = context or {}
    flatten_ops = _flatten_ops(k, r, s, d, ctx)
    if s is d and not flatten_ops and side_context(ctx, "src") == side_context(ctx, "dst"):
        return Transform(k, r, s, d)
    purpose = f"converting {k} {r} from {s} to {d}: "
    ops = (find_rule(k, r, s, purpose).to_canonical(side_context(ctx, "src")) + flatten_ops
           + find_rule(k, r, d, purpose).from_canonical(side_context(ctx, "dst")))
    return Transform(k, r, s, d, simplify(ops))


# Facts about a file, not a layer: at the top level of a context they describe the source
# (the file being read); a target that needs them takes them from context["dst_context"].
SOURCE_FACTS = frozenset({"keras_version", "dim_ordering", "data_format"})


def side_context(context: Context, side: str) -> Context:
    """The context one side of a conversion sees.

    Layer facts (``num_heads``, ``depth_multiplier``, ...) apply to both sides; file facts
    (``SOURCE_FACTS``: ``keras_version``, ``dim_ordering``, ``data_format``) at the top
    level apply to the source only. ``context["src_context"]`` / ``["dst_context"]``
    override either side.

    Example:
        >>> ctx = {"num_heads": 2, "keras_version": "1"}
        >>> side_context(ctx, "src"), side_context(ctx, "dst")
        ({'num_heads': 2, 'keras_version': '1'}, {'num_heads': 2})
    """
    skip = {"src_context", "dst_context"} | (SOURCE_FACTS if side == "dst" else set())
    shared = {k: v for k, v in context.items() if k not in skip}
    return {**shared, **dict(context.get(f"{side}_context") or {})}


def dim_ordering(context: Context) -> str:
    """Keras 1 ``dim_ordering`` ('th' or 'tf') from the context: ``dim_ordering``, or a Keras 2
    ``data_format`` (channels_first -> 'th', channels_last -> 'tf'); 'th' when neither.

    Example:
        >>> dim_ordering({"data_format": "channels_last"})
        'tf'
    """
    if context.get("dim_ordering"):
        return str(context["dim_ordering"])
    by_format = {"channels_first": "th", "channels_last": "tf"}
    return by_format.get(str(context.get("data_format")), "th")


def convert_tensor(array: np.ndarray, kind: Kind | str, role: Role | str,
                   src: Convention | str, dst: Convention | str,
                   context: Context | None = None) -> np.ndarray:
    """Convert one array's layout from ``src`` to ``dst`` convention.

    Example:
        >>> import numpy as np
        >>> w = np.arange(270, dtype="float32").reshape(3, 3, 5, 6)   # Keras HWIO
        >>> convert_tensor(w, "conv2d", "kernel", "keras", "torch").shape
        (6, 5, 3, 3)
    """
    return tensor_transform(kind, role, src, dst, context).apply(array)


# -- Flatten: the Dense after a flattened feature map -----------------------------------

def default_flatten_order(feature_shape: Mapping[str, int], convention: Convention | str,
                          dim_ordering: str | None = None) -> str:
    """How a framework flattens a feature map by default: channels last for Keras (and
    Theano-backend files with ``dim_ordering='tf'``), channels first for PyTorch and
    Keras 1 ``'th'``; spatial axes in d, h, w order.

    Example:
        >>> default_flatten_order({"c": 8, "h": 3, "w": 4}, "theano")
        'chw'
    """
    convention = _convention(convention)
    spatial = "".join(a for a in feature_shape if a != "c")
    spatial = "".join(sorted(spatial, key=lambda a: "dhw".find(a) if a in "dhw" else 3))
    has_c = "c" in feature_shape
    if convention is Convention.KERAS or (convention is Convention.THEANO
                                          and dim_ordering == "tf"):
        return spatial + ("c" if has_c else "")
    return ("c" if has_c else "") + spatial


def _flatten_ops(kind: Kind, role: Role, src: Convention, dst: Convention,
                 ctx: Context) -> tuple[Op, ...]:
    spec = ctx.get("flatten")
    if not spec or kind is not Kind.DENSE or role is not Role.KERNEL:
        return ()
    shape = dict(spec.get("feature_shape") or {})
    if not shape:
        raise LayoutError("context['flatten'] has no feature_shape",
                          expected="{'feature_shape': {'c': C, 'h': H, 'w': W}, "
                                   "'src_order': 'chw', 'dst_order': 'hwc'}",
                          fix="take the pre-Flatten shape from the traced model")
    src_order = spec.get("src_order") or default_flatten_order(
        shape, src, dim_ordering(side_context(ctx, "src")))
    dst_order = spec.get("dst_order") or default_flatten_order(
        shape, dst, dim_ordering(side_context(ctx, "dst")))
    for name, order in (("src_order", src_order), ("dst_order", dst_order)):
        if sorted(order) != sorted(shape):
            raise LayoutError(f"context['flatten'][{name!r}] is {order!r}, which does not "
                              f"name each axis of feature_shape {shape} once",
                              expected=f"a permutation of {''.join(shape)!r}",
                              fix="use one letter per feature-map axis")
    if src_order == dst_order:
        return ()
    perm = tuple(src_order.index(a) for a in dst_order) + (len(shape),)
    note = f"Dense rows in Flatten order: {src_order} -> {dst_order}"
    return (SplitAxis(0, tuple(int(shape[a]) for a in src_order), note),
            Transpose(perm, note),
            MergeAxes(0, tuple(int(shape[a]) for a in dst_order), note))


# -- argument coercion with helpful errors ------------------------------------------------

def _coerce(enum_cls: Any, value: Any, what: str) -> Any:
    try:
        return value if isinstance(value, enum_cls) else enum_cls(str(value))
    except ValueError:
        choices = ", ".join(m.value for m in enum_cls)
        raise LayoutError(f"unknown {what} {value!r}", expected=f"one of: {choices}") from None


def _kind(value: Any) -> Kind:
    return _coerce(Kind, value, "layer kind")


def _role(value: Any) -> Role:
    return _coerce(Role, value, "role")


def _convention(value: Any) -> Convention:
    return _coerce(Convention, value, "convention")
