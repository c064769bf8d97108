"""User rules (rename, skip) and how one matched layer pair becomes an ``Assignment``.

Rename rules are whole-name rules, tried in the order given; the first rule whose pattern
matches the whole name produces the new name and no other rule runs (no chains of substring
replacements whose result depends on their order).

Example:
    >>> RenameRules.parse(["backbone.*=features.*"]).apply("backbone.0.weight")
    'features.0.weight'
    >>> RenameRules.parse({"re:^enc\\\\.(\\\\d+)$": "encoder.layer\\\\1"}).apply("enc.3")
    'encoder.layer3'
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..checkpoint import Convention, Kind, Role
from ..errors import LayoutError, PlanError, ShapeMismatchError
from .groups import (
    LAYER_KINDS,
    LayerGroup,
    base_role,
    cached_transform,
    depth_multiplier,
    layer_context,
)
from .plan import Assignment

if TYPE_CHECKING:
    from . import SourceInfo


def _glob_regex(pattern: str) -> re.Pattern[str]:
    # Each "*" captures, so the replacement's "*"s can take the pieces back in order.
    return re.compile("(.*)".join(re.escape(p) for p in pattern.split("*")))


@dataclass(frozen=True)
class RenameRules:
    """Ordered (pattern, replacement) rules; glob by default, regex with a ``re:`` prefix."""

    rules: tuple[tuple[re.Pattern[str], str, bool], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @classmethod
    def parse(cls, spec: Mapping[str, str] | Iterable[str] | None) -> RenameRules:
        if not spec:
            return cls()
        pairs: list[tuple[str, str]] = []
        if isinstance(spec, Mapping):
            pairs = list(spec.items())
        else:
            for item in ([spec] if isinstance(spec, str) else spec):
                if "=" not in item:
                    raise PlanError(f"rename rule {item!r} has no '='",
                                    expected="OLD=NEW, e.g. 'backbone.*=features.*'",
                                    fix="write the rule as pattern=replacement")
                old, new = item.split("=", 1)
                pairs.append((old, new))
        rules = []
        for old, new in pairs:
            if old.startswith("re:"):
                try:
                    rules.append((re.compile(old[3:]), new, True))
                except re.error as exc:
                    raise PlanError(f"rename pattern {old!r} is not a valid regular expression: "
                                    f"{exc}", fix="fix the pattern after 're:'") from None
            else:
                if old.count("*") != new.count("*") and new.count("*"):
                    raise PlanError(f"rename rule {old}={new} has {old.count('*')} '*' on the "
                                    f"left but {new.count('*')} on the right",
                                    expected="as many '*' in the replacement as in the pattern, "
                                             "or none", fix="balance the wildcards")
                rules.append((_glob_regex(old), new, False))
        return cls(tuple(rules))

    def apply(self, name: str) -> str:
        """The name after the first matching rule, or unchanged."""
        for pattern, new, is_regex in self.rules:
            m = pattern.fullmatch(name)
            if m is None:
                continue
            if is_regex:
                return m.expand(new)
            pieces = iter(m.groups())
            return "".join(p + (next(pieces, "") if i < new.count("*") else "")
                           for i, p in enumerate(new.split("*")))
        return name


@dataclass(frozen=True)
class SkipRules:
    """Glob patterns over tensor keys (and layer names) to leave alone on purpose."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: Iterable[str] | str | None) -> SkipRules:
        if not spec:
            return cls()
        return cls(tuple([spec] if isinstance(spec, str) else spec))

    def matches(self, key: str, layer: str = "") -> bool:
        return any(fnmatch.fnmatchcase(key, p) or (layer and fnmatch.fnmatchcase(layer, p))
                   for p in self.patterns)

    def apply_to(self, groups: list[LayerGroup], *, side: str) -> list[str]:
        """Remove skipped keys from ``groups`` (in place); return the keys removed."""
        removed: list[str] = []
        if not self.patterns:
            return removed
        for g in groups:
            keep = [i for i, k in enumerate(g.keys) if not self.matches(k, g.name)]
            if len(keep) == len(g.keys):
                continue
            removed += [k for i, k in enumerate(g.keys) if i not in keep]
            for name in ("keys", "roles", "shapes", "dtypes", "conventions"):
                setattr(g, name, [getattr(g, name)[i] for i in keep])
            g._signature = None
        return removed


def assignment_context(s: LayerGroup, t: LayerGroup, info: SourceInfo) -> tuple[dict[str, Any], str]:
    """The layout-rule context for one layer pair, and a note when a choice was made."""
    ctx = layer_context(s.config)
    for key in ("reset_after", "num_heads", "depth_multiplier", "use_bias"):
        if key in t.config and key not in ctx:
            ctx[key] = t.config[key]
    if t.kind in (Kind.DEPTHWISE_CONV2D, Kind.SEPARABLE_CONV2D) and "depth_multiplier" not in ctx:
        mult = depth_multiplier(s, t)
        if mult is not None:
            ctx["depth_multiplier"] = mult
    note = ""
    flat = t.config.get("flatten_input")
    if t.kind is Kind.DENSE and isinstance(flat, Mapping) and flat.get("feature_shape"):
        from ..layouts import default_flatten_order

        shape = {str(a): int(n) for a, n in dict(flat["feature_shape"]).items()}
        dst_order = str(flat.get("order") or default_flatten_order(shape, t.convention))
        src_flat = s.config.get("flatten_input") if isinstance(s.config, Mapping) else None
        if flat.get("explicit") or (isinstance(src_flat, Mapping) and src_flat.get("explicit")):
            src_order = dst_order
            note = ("the model reorders its feature map on purpose before the Flatten; Dense rows "
                    "copied unpermuted, assuming the source was written to match")
        elif isinstance(src_flat, Mapping) and src_flat.get("order"):
            src_order = str(src_flat["order"])
        else:
            conv = s.convention
            first = (ctx.get("dim_ordering") == "th"
                     or info.checkpoint.data_format == "channels_first")
            if conv is Convention.KERAS and first:
                conv = Convention.THEANO
            src_order = default_flatten_order(shape, conv)
            if src_order != dst_order:
                note = (f"Dense after Flatten: rows reordered from the source's {src_order} "
                        f"flatten order ({conv.value} default) to the target's {dst_order}")
        ctx["flatten"] = {"feature_shape": shape, "src_order": src_order, "dst_order": dst_order}
    if (t.kind is Kind.GRU and "reset_after" not in layer_context(s.config)
            and (s.convention is Convention.TORCH) != (t.convention is Convention.TORCH)
            and not any(base_role(r) in (Role.BIAS, Role.RECURRENT_BIAS)
                        for r in (*s.roles, *t.roles))):
        # Without a bias, reset_after=True and =False store the same shapes; a weights-only
        # file does not say which the Keras side was built with.
        note = ("GRU without bias and no recorded reset_after: assumed reset_after=True "
                "(Keras 3's default); a Keras GRU(reset_after=False) has no PyTorch "
                "equivalent, so check with graft verify against the Keras model")
    return ctx, note


def build_assignment(s: LayerGroup, t: LayerGroup, tier: str, confidence: float,
                     info: SourceInfo, roles: dict[str, str] | None = None) -> Assignment | None:
    """The assignment filling target layer ``t`` from source layer ``s``; None if no layout
    rule can convert it (the pair then stays open for later tiers)."""
    ctx, note = assignment_context(s, t, info)
    src_conv, dst_conv = s.convention, t.convention
    if src_conv is Convention.UNKNOWN:
        src_conv = dst_conv
    s_keys, s_roles = list(s.keys), list(s.roles)
    t_keys, t_roles = list(t.keys), list(t.roles)
    if roles is not None:
        s_roles = [roles.get(k, r) for k, r in zip(s_keys, s_roles)]
    # Optional state (num_batches_tracked) travels along when both sides hold it.
    s_opt, t_opt = list(s.optional), list(t.optional)
    if s_opt and t_opt:
        s_keys += s_opt[:1]
        t_keys += t_opt[:1]
        s_roles.append(Role.NUM_BATCHES_TRACKED.value)
        t_roles.append(Role.NUM_BATCHES_TRACKED.value)
    try:
        steps = describe_steps(s.kind, s_roles, s.shapes, t_roles, src_conv, dst_conv, ctx)
    except (LayoutError, ShapeMismatchError, ValueError):
        return None
    return Assignment(target_layer=t.name, source_layer=s.name, kind=t.kind.value, tier=tier,
                      confidence=confidence, source_keys=tuple(s_keys), source_roles=tuple(s_roles),
                      target_keys=tuple(t_keys), target_roles=tuple(t_roles),
                      src_convention=src_conv.value, dst_convention=dst_conv.value,
                      context=ctx, steps=tuple(steps), note=note)


def pairing_problem(s: LayerGroup, t: LayerGroup, info: SourceInfo) -> str:
    """Why source layer ``s`` cannot fill target layer ``t``, in words (for layers of one
    kind that every tier left open: the user then knows whether a rename would help)."""
    ctx, _ = assignment_context(s, t, info)
    src_conv = t.convention if s.convention is Convention.UNKNOWN else s.convention
    try:
        describe_steps(s.kind, list(s.roles), s.shapes, list(t.roles), src_conv, t.convention,
                       ctx)
    except (LayoutError, ShapeMismatchError, ValueError) as exc:
        return " ".join(str(getattr(exc, "problem", None) or exc).split())

    def shapes(g: LayerGroup) -> str:
        return ", ".join(f"{r} {'x'.join(map(str, sh)) or 'scalar'}"
                         for r, sh in zip(g.roles, g.shapes))
    return (f"shapes differ: source {shapes(s)} ({s.convention.value}) versus target "
            f"{shapes(t)} ({t.convention.value})")


def per_tensor(kind: Kind, s_roles: list[str], t_roles: list[str]) -> bool:
    """Whether a layer converts tensor by tensor (same roles on both sides, no parts)."""
    return (kind not in LAYER_KINDS and sorted(s_roles) == sorted(t_roles)
            and not any(":" in r for r in s_roles))


def describe_steps(kind: Kind, s_roles: list[str], s_shapes: list[tuple[int, ...]],
                   t_roles: list[str], src: Convention, dst: Convention,
                   ctx: Mapping[str, Any]) -> list[str]:
    """The conversion in words; raises ``LayoutError`` where no rule covers it."""
    from .. import layouts

    if per_tensor(kind, s_roles, t_roles):
        out = []
        for role in t_roles:
            if role == Role.NUM_BATCHES_TRACKED.value:
                continue
            tr = cached_transform(kind, role, src, dst, ctx)
            out += [f"{role}: {step}" for step in tr.steps]
        return out
    if sum(int(np.prod(s)) for s in s_shapes) > 4_000_000:
        return [f"convert {kind.value} layer {src.value} -> {dst.value}"]
    zeros = {r: np.zeros(shape, dtype=np.float32) for r, shape in zip(s_roles, s_shapes)}
    conv = layouts.convert_layer(kind, src, dst, zeros, ctx)
    missing = [r for r in t_roles if r not in conv.arrays]
    if missing:
        raise LayoutError(f"converting {kind.value} gives no {missing}")
    return list(conv.steps)
