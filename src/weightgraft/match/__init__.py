"""``match(source, target) -> Plan``: which source weights fill which target slots, and how.

Tiers run in order, each only over what the earlier ones left open:

1. ``rename`` — the user's rules (glob or regex -> replacement) and skip patterns;
2. ``exact`` — the target layer's keys exist as they are in one source layer;
3. ``normalised`` — layer names equal after removing decoration (``module.``, ``:0``,
   ``conv1_3`` -> ``conv1``, ``/`` versus ``.``), roles pairing ``kernel`` with ``weight``;
4. ``structure`` — both sides' weighted layers in execution order, aligned by kind and
   canonical (keras-convention) shape as a sequence alignment, so an inserted or removed
   layer does not shift everything after it;
5. ``shape`` — a leftover layer whose signature occurs exactly once on each side.

Whenever two candidates are equally good, nothing is picked: the case goes to
``Plan.ambiguous``.

Example:
    >>> import torch, weightgraft as wg                                  # doctest: +SKIP
    >>> plan = wg.match("mnist_cnn_th_keras_1_weights.h5", torch_model)  # doctest: +SKIP
    >>> [(a.source_layer, a.target_layer, a.tier) for a in plan.assignments][:1]  # doctest: +SKIP
    [('convolution2d_1', 'conv1', 'structure')]
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ..checkpoint import Checkpoint, Convention, Kind
from ..modelview import ModelView, view
from .align import align
from .groups import LayerGroup, merge_separable, normalise_name, source_groups, target_groups
from .plan import Ambiguity, Assignment, Plan
from .rules import RenameRules, SkipRules, build_assignment, pairing_problem

__all__ = ["Ambiguity", "Assignment", "Plan", "match", "resolve_source", "SourceInfo"]


class SourceInfo:
    """The source side resolved: its checkpoint, path, and (for live models) the view."""

    def __init__(self, checkpoint: Checkpoint, path: str | None, model_view: ModelView | None,
                 owned: bool) -> None:
        self.checkpoint = checkpoint
        self.path = path
        self.view = model_view
        self.owned = owned  # opened here, so closed here

    @property
    def layer_order(self) -> list[str] | None:
        return [lv.path for lv in self.view.layers] if self.view is not None else None

    @property
    def configs(self) -> dict[str, dict[str, Any]] | None:
        return ({lv.path: dict(lv.config) for lv in self.view.layers}
                if self.view is not None else None)

    def close(self) -> None:
        if self.owned:
            self.checkpoint.close()


def resolve_source(source: Any) -> SourceInfo:
    """A path, ``Checkpoint``, ``ModelView`` or live model as a ``SourceInfo``."""
    if isinstance(source, str | os.PathLike):
        from ..formats import open_checkpoint

        return SourceInfo(open_checkpoint(source), os.fspath(source), None, owned=True)
    if isinstance(source, Checkpoint):
        return SourceInfo(source, source.path, None, owned=False)
    mv = view(source)
    return SourceInfo(mv.as_checkpoint(), None, mv, owned=False)


def match(source: Any, target: Any, *, rename: Mapping[str, str] | Iterable[str] | None = None,
          skip: Iterable[str] | str | None = None,
          source_convention: Convention | str | None = None) -> Plan:
    """Plan how ``source`` (checkpoint, path or live model) fills live model ``target``.

    ``rename`` maps source-name patterns to target names (``{"backbone.*": "features.*"}``,
    or ``"re:^enc\\.(.*)$": "encoder.\\1"``, or a list of ``"OLD=NEW"``); it applies to source
    tensor keys and to source layer names, first matching rule wins. ``skip`` globs leave
    source tensors unused and target slots at their initial value, on purpose.
    ``source_convention`` overrides the layout detected from the file.

    Example:
        >>> plan = match("vgg_keras.weights.h5", torch_vgg)       # doctest: +SKIP
        >>> plan.tier_counts()["structure"] > 0                    # doctest: +SKIP
        True
    """
    info = resolve_source(source)
    try:
        return _match(info, view(target), RenameRules.parse(rename), SkipRules.parse(skip),
                      Convention(str(source_convention)) if source_convention else None)
    finally:
        info.close()


def _match(info: SourceInfo, tview: ModelView, rename: RenameRules, skip: SkipRules,
           override: Convention | None) -> Plan:
    ckpt = info.checkpoint
    src, ignored = source_groups(ckpt, info.layer_order, info.configs, override)
    tgt = target_groups(tview)
    notes: list[str] = list(ckpt.notes)
    initial: list[str] = []
    if override is not None:
        notes.append(f"source convention forced to {override.value} "
                     f"(detected: {ckpt.convention.value}"
                     + (f", {ckpt.convention_reason}" if ckpt.convention_reason else "") + ")")
    elif ckpt.convention_reason:
        notes.append(f"source convention {ckpt.convention.value}: {ckpt.convention_reason}")
    ignored += skip.apply_to(src, side="source")
    initial += skip.apply_to(tgt, side="target")
    src = [g for g in src if g.keys]
    tgt = [g for g in tgt if g.keys or g.optional]
    for g in tgt:
        if not g.keys:
            initial.extend(g.optional)
    tgt = [g for g in tgt if g.keys]

    open_src = {g.name: g for g in src}
    open_tgt = {g.name: g for g in tgt}
    assignments: list[Assignment] = []
    ambiguous: list[Ambiguity] = []
    merged: dict[str, list[str]] = {}  # a separable pseudo-layer -> the layers it stands for

    def take(s: LayerGroup, t: LayerGroup, tier: str, confidence: float,
             roles: dict[str, str] | None = None) -> bool:
        a = build_assignment(s, t, tier, confidence, info, roles=roles)
        if a is None:
            return False
        assignments.append(a)
        for name in merged.get(s.name, [s.name]):
            open_src.pop(name, None)
        for name in merged.get(t.name, [t.name]):
            open_tgt.pop(name, None)
        if a.note:
            notes.append(f"{t.name}: {a.note}")
        return True

    # 1. user rename rules: tensor keys first, then layer names
    if rename:
        renamed = {k: rename.apply(k) for g in open_src.values() for k in g.keys}
        key_owner = {k: g for g in open_src.values() for k in g.keys}
        by_new: dict[str, str] = {new: k for k, new in renamed.items() if new != k}
        for t in list(open_tgt.values()):
            hits = [by_new[k] for k in t.keys if k in by_new]
            owners = {key_owner[k].name for k in hits}
            if len(owners) == 1 and len(hits) == len(t.keys) and owners <= set(open_src):
                roles = {k: t.roles[t.keys.index(renamed[k])] for k in hits}
                take(key_owner[hits[0]], t, "rename", 1.0, roles)
        for s in list(open_src.values()):
            new = rename.apply(s.name)
            if new != s.name and new in open_tgt:
                take(s, open_tgt[new], "rename", 1.0)

    # 2. exact keys
    src_key_owner = {k: g for g in open_src.values() for k in g.keys}
    for t in list(open_tgt.values()):
        owners = {src_key_owner[k].name for k in t.keys if k in src_key_owner}
        if len(owners) == 1 and all(k in src_key_owner for k in t.keys):
            s = open_src.get(owners.pop())
            if s is not None and _compatible(s, t):
                take(s, t, "exact", 1.0)

    # 3. normalised layer names
    def by_norm(groups: Iterable[LayerGroup]) -> dict[str, list[LayerGroup]]:
        out: dict[str, list[LayerGroup]] = {}
        for g in groups:
            out.setdefault(normalise_name(g.name), []).append(g)
        return out

    src_norm, tgt_norm = by_norm(open_src.values()), by_norm(open_tgt.values())
    for name, ts in tgt_norm.items():
        ss = src_norm.get(name, [])
        if len(ts) == 1 and len(ss) == 1 and _compatible(ss[0], ts[0]):
            take(ss[0], ts[0], "normalised", 0.95)

    # 4. structure: sequence alignment over what is still open, in execution order
    s_list = sorted(open_src.values(), key=lambda g: g.order)
    t_list = sorted(open_tgt.values(), key=lambda g: g.order)
    if any(g.kind is Kind.SEPARABLE_CONV2D for g in s_list):
        t_list, more = merge_separable(t_list)
        merged.update(more)
    if any(g.kind is Kind.SEPARABLE_CONV2D for g in t_list):
        s_list, more = merge_separable(s_list)
        merged.update(more)
    certain, unsure = align([g.signature() for g in s_list], [g.signature() for g in t_list])
    for i, j in certain:
        take(s_list[i], t_list[j], "structure", 0.9)
    for j, cands in unsure.items():
        ambiguous.append(Ambiguity("target", t_list[j].name,
                                   tuple(s_list[i].name for i in cands), "structure",
                                   "several source layers of the same kind and shape fit this "
                                   "position equally well"))
    unsure_targets = {n for j in unsure for n in merged.get(t_list[j].name, [t_list[j].name])}

    # 5. shape-unique leftovers
    src_by_sig: dict[Any, list[LayerGroup]] = {}
    for g in open_src.values():
        src_by_sig.setdefault(g.signature(), []).append(g)
    t_sig = Counter(g.signature() for g in open_tgt.values())
    for t in list(open_tgt.values()):
        sig = t.signature()
        cands = src_by_sig.get(sig, [])
        if not cands or t.name in unsure_targets:
            continue
        if len(cands) == 1 and t_sig[sig] == 1:
            take(cands[0], t, "shape", 0.6)
        else:
            ambiguous.append(Ambiguity("target", t.name, tuple(c.name for c in cands), "shape",
                                       f"{len(cands)} source and {t_sig[sig]} target layers "
                                       "share this kind and shape"))

    # Layers of one kind left open on both sides: say why they did not pair, in order.
    unpaired: list[str] = []
    left_src: dict[Kind, list[LayerGroup]] = {}
    for g in sorted(open_src.values(), key=lambda g: g.order):
        left_src.setdefault(g.kind, []).append(g)
    for t in sorted(open_tgt.values(), key=lambda g: g.order):
        same = left_src.get(t.kind)
        if same and t.name not in unsure_targets and len(unpaired) < 20:
            s = same.pop(0)
            unpaired.append(f"{t.name} <- {s.name}: {pairing_problem(s, t, info)}")

    used_src = {k for a in assignments for k in a.source_keys}
    unused = [k for g in src for k in g.keys if k not in used_src]
    ignored += [k for g in src for k in g.optional if k not in used_src]
    used_tgt = {k for a in assignments for k in a.target_keys}
    unmatched = [k for g in open_tgt.values() for k in g.keys]
    initial += [k for g in tgt for k in g.optional if k not in used_tgt]
    conv = override or ckpt.convention
    rank = {g.name: g.order for g in tgt}
    return Plan(assignments=tuple(sorted(assignments, key=lambda a: rank.get(a.target_layer, 0))),
                unmatched_targets=tuple(unmatched), unused_sources=tuple(unused),
                ambiguous=tuple(ambiguous), notes=tuple(dict.fromkeys(notes)),
                initial_targets=tuple(initial), ignored_sources=tuple(ignored),
                unpaired=tuple(unpaired), source=info.path, source_convention=conv.value,
                target_framework=tview.framework)


def _compatible(s: LayerGroup, t: LayerGroup) -> bool:
    return s.signature() == t.signature()
