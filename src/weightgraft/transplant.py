"""``transplant(source, target) -> Report``: apply a Plan, tensor by tensor, with provenance.

Everything is checked before anything changes: every planned tensor's converted shape and
dtype against its slot, every target slot filled or allowed to stay at its initial value,
every source tensor used or allowed to be left over. Only then are tensors loaded one at a
time (or one layer at a time, for layers that convert as a whole), converted, assigned,
fingerprinted and recorded. Files are written to a temporary name and renamed.

Example:
    >>> import weightgraft as wg                                           # doctest: +SKIP
    >>> report = wg.transplant("resnet_imagenet.pt", my_model, allow_missing="head*")  # doctest: +SKIP
    >>> report.totals["initial"], report.totals["unmatched"]                # doctest: +SKIP
    (2, 0)
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checkpoint import Convention, Role
from .errors import PlanError
from .match import Plan, SourceInfo, match, resolve_source
from .modelview import ModelView, view
from .provenance import ProvenanceRecord, TensorRecord, file_sha256, fingerprint
from .transplant_loading import check_plan_keys, check_shapes, listing
from .transplant_output import write_output

MIN_FILL = 0.5  # a transplant filling less than this share of target parameters is refused


@dataclass(frozen=True)
class SlotResult:
    """What happened to one target slot."""

    key: str
    status: str  # "copied" | "converted" | "initial" | "unmatched"
    shape: tuple[int, ...]
    source_keys: tuple[str, ...] = ()
    transforms: tuple[str, ...] = ()
    tier: str | None = None
    confidence: float | None = None
    reason: str = ""
    fingerprint: str | None = None


@dataclass(frozen=True)
class Report:
    """Every target slot's fate, every source tensor left unused, totals, where it went."""

    slots: tuple[SlotResult, ...]
    unused_sources: tuple[str, ...]
    ignored_sources: tuple[str, ...]
    plan: Plan
    totals: Mapping[str, int]
    source: str | None = None
    source_sha256: str | None = None
    output: str | None = None
    provenance_path: str | None = None
    dry_run: bool = False
    verification: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()
    provenance: ProvenanceRecord | None = field(default=None, repr=False, compare=False)

    def slot(self, key: str) -> SlotResult:
        """The result for one target slot key."""
        for s in self.slots:
            if s.key == key:
                return s
        raise KeyError(key)


def _patterns(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _allowed(key: str, layer: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(key, p)
                 or fnmatch.fnmatchcase(layer, p)), None)


def _suggest(keys: list[str]) -> list[str]:
    """Globs covering exactly the layers of ``keys`` (``head*``), one per layer, or one
    broader glob when they span many layers."""
    layers = list(dict.fromkeys(re.split(r"[./](?=[^./]*$)", k)[0] for k in keys))
    if len(layers) <= 4:
        return [layer + "*" for layer in layers]
    heads = {k.replace("/", ".").split(".")[0] for k in keys}
    if len(heads) == 1:
        return [heads.pop() + "*"]
    prefix = os.path.commonprefix(keys)
    return [(prefix + "*") if prefix else "*"]


def _allow_hint(option: str, keys: list[str]) -> str:
    """``allow_missing='head*' (CLI: --allow-missing 'head*')``, for one glob or several."""
    globs = _suggest(keys)
    python = repr(globs[0]) if len(globs) == 1 else repr(globs)
    cli = " ".join(f"--{option.replace('_', '-')} '{g}'" for g in globs)
    return f"{option}={python} (CLI: {cli})"


def _floor(share: float) -> float:
    """A min_fill just below ``share`` (two decimals), to suggest in an error."""
    return max(int(share * 100) / 100, 0.0)


def transplant(source: Any, target: Any, *, plan: Plan | None = None,
               rename: Mapping[str, str] | Iterable[str] | None = None,
               skip: Iterable[str] | str | None = None,
               allow_missing: Iterable[str] | str | None = None,
               allow_unused: Iterable[str] | str | None = None,
               source_convention: Convention | str | None = None, dry_run: bool = False,
               verify: bool = False, output: str | os.PathLike[str] | None = None,
               progress: Callable[[int, int], None] | None = None,
               min_fill: float = MIN_FILL, source_file: str | os.PathLike[str] | None = None
               ) -> Report:
    """Fill live model ``target`` from ``source`` (a checkpoint path, ``Checkpoint`` or live
    model), strictly: raises ``PlanError`` listing anything unfilled or unused, naming the
    ``allow_missing``/``allow_unused`` pattern that would accept it.

    ``output`` also writes the result: ``.weights.h5`` (Keras 3 ``load_weights``), ``.pt`` /
    ``.pth`` (``load_state_dict(strict=True)``), or ``.safetensors`` (provenance in its
    metadata); other outputs get ``<output>.provenance.json`` beside them.
    ``progress(done, total)`` is called in bytes of target tensors as they are assigned.
    ``min_fill`` (default 0.5): a plan filling less than this share of the target's
    parameters is refused even when the allow patterns accept the rest, since it usually
    means source and target are different networks; lower it on purpose for a transfer
    whose new part holds most of the parameters (``min_fill=0`` turns the check off).
    ``source_file``: the file a live source model was built from (a ``.keras`` file), so
    that provenance records its path and sha256.

    Example:
        >>> report = transplant("crepe/model-tiny.h5", torch_crepe, output="crepe.pt")  # doctest: +SKIP
        >>> report.totals["converted"]                                    # doctest: +SKIP
        7
    """
    info = resolve_source(source)
    if source_file is not None and info.path is None:
        info.path = os.fspath(source_file)
    tview = view(target)
    try:
        if plan is None:
            plan = match(info.checkpoint if info.view is None else info.view, tview,
                         rename=rename, skip=skip, source_convention=source_convention)
            if info.path and not plan.source:
                plan = plan.with_(source=info.path)
        return _run(info, tview, plan, _patterns(allow_missing), _patterns(allow_unused),
                    dry_run, verify, output, progress, min_fill)
    finally:
        info.close()


def _run(info: SourceInfo, tview: ModelView, plan: Plan, allow_missing: tuple[str, ...],
         allow_unused: tuple[str, ...], dry_run: bool, verify: bool,
         output: str | os.PathLike[str] | None,
         progress: Callable[[int, int], None] | None = None,
         min_fill: float = MIN_FILL) -> Report:
    ckpt, slots = info.checkpoint, tview.slots
    where = info.path or "<source>"
    check_plan_keys(plan, ckpt, slots, where)
    planned = {a.target_layer: check_shapes(a, ckpt, slots, where) for a in plan.assignments}
    filled = plan.by_target_key()

    # Strictness: unfilled targets and unused sources need an explicit allowance.
    unfilled = [k for k in slots if k not in filled and k not in plan.initial_targets]
    missing = [k for k in unfilled if not _allowed(k, slots[k].layer, allow_missing)]
    # Recomputed rather than read from the plan: a hand-edited plan may drop assignments.
    used = {k for a in plan.assignments for k in a.source_keys}
    unused_all = [e.key for e in ckpt.model_entries() if e.key not in used
                  and e.key not in plan.ignored_sources and e.role is not Role.NUM_BATCHES_TRACKED]
    unused = [k for k in unused_all if not _allowed(k, ckpt[k].layer, allow_unused)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} target slot(s) have no source: {listing(missing)}; "
                        f"to leave them at their initial value pass "
                        f"{_allow_hint('allow_missing', missing)}")
    if unused:
        problems.append(f"{len(unused)} source tensor(s) would be left unused: "
                        f"{listing(unused)}; to accept that pass "
                        f"{_allow_hint('allow_unused', unused)}")
    if problems:
        amb = ""
        if plan.ambiguous:
            amb = "; ambiguous: " + "; ".join(f"{a.subject} <- one of {list(a.candidates)}"
                                              for a in plan.ambiguous[:5])
        why = ""
        if plan.unpaired:
            why = "; not paired: " + "; ".join(plan.unpaired[:3]) + (
                f" (+{len(plan.unpaired) - 3} more)" if len(plan.unpaired) > 3 else "")
        raise PlanError("transplant is incomplete: " + "; ".join(problems) + amb + why,
                        path=info.path,
                        fix="add --rename rules or edit a saved plan (--save-plan) for wrongly "
                            "unmatched tensors, or allow them with the options named")
    total = sum(int(np.prod(s.shape)) for k, s in slots.items() if s.role is not Role.NUM_BATCHES_TRACKED)
    got = sum(int(np.prod(slots[k].shape)) for k in filled if k in slots
              and slots[k].role is not Role.NUM_BATCHES_TRACKED)
    if total and got / total < min_fill:
        share = got / total
        raise PlanError(f"the plan fills only {got:,} of {total:,} target parameters "
                        f"({100 * share:.1f}%), below the {100 * min_fill:.0f}% minimum "
                        "even with allow patterns",
                        path=info.path, expected="a source that holds most of the target's weights",
                        fix="check that source and target are the same architecture, or give "
                            "--rename rules or a hand-edited plan; if the new part really holds "
                            f"most of the parameters, pass min_fill={_floor(share)} "
                            f"(CLI: --min-fill {_floor(share)})")

    sha = file_sha256(info.path) if info.path and os.path.isfile(info.path) else None
    results: dict[str, SlotResult] = {}
    records: list[TensorRecord] = []
    todo = sum(_nbytes(slots[k]) for a in plan.assignments for k in planned[a.target_layer])
    done = 0
    if progress is not None and not dry_run:
        progress(0, todo)
    for a in plan.assignments:
        for key, (arr_fn, steps, src_keys) in planned[a.target_layer].items():
            status = "converted" if steps else "copied"
            fp = None
            if not dry_run:
                array = arr_fn()
                tview.assign(key, array)
                fp = fingerprint(array)
                records.append(TensorRecord(key, status, fp, array.dtype.name, array.shape,
                                            "s0", src_keys, tuple(steps), a.tier,
                                            a.confidence))
                del array
                if progress is not None:
                    done += _nbytes(slots[key])
                    progress(done, todo)
            results[key] = SlotResult(key, status, tuple(slots[key].shape), src_keys,
                                      tuple(steps), a.tier, a.confidence, "", fp)
    for key in slots:
        if key in results:
            continue
        if key in plan.initial_targets:
            reason = ("state counter, not a learned weight" if slots[key].role is
                      Role.NUM_BATCHES_TRACKED else "skipped on request")
        else:
            pattern = _allowed(key, slots[key].layer, allow_missing)
            reason = f"no source; allowed by {pattern!r}"
        results[key] = SlotResult(key, "initial", tuple(slots[key].shape), reason=reason)
        if not dry_run and slots[key].role is not Role.NUM_BATCHES_TRACKED:
            # Recorded too: explain can then tell "still as initialised" from "trained since".
            value = tview.read(key)
            records.append(TensorRecord(key, "initial", fingerprint(value), value.dtype.name,
                                        tuple(value.shape)))

    verification = None
    notes = list(plan.notes)
    if verify and not dry_run:
        if info.view is None:
            notes.append("verify skipped: it runs two live models, and the source is a file")
        else:
            from .verify import verify as run_verify

            verification = _verification_summary(run_verify(info.view, tview, layer_pairs=plan))
    record = ProvenanceRecord(
        tensors=tuple(records),
        sources=({"id": "s0", "path": info.path, "sha256": sha, "format": ckpt.format,
                  "convention": plan.source_convention},),
        target={"framework": tview.framework, "output": os.fspath(output) if output else None},
        verification=verification)
    prov_path = None
    if output is not None and not dry_run:
        prov_path = write_output(tview, output, record)
    ordered = tuple(results[k] for k in slots)
    totals = {s: sum(1 for r in ordered if r.status == s)
              for s in ("copied", "converted", "initial", "unmatched")}
    totals.update(slots=len(ordered), params_total=total, params_filled=got,
                  unused_sources=len(unused_all))
    return Report(slots=ordered, unused_sources=tuple(unused_all),
                  ignored_sources=plan.ignored_sources, plan=plan, totals=totals,
                  source=info.path, source_sha256=sha,
                  output=os.fspath(output) if output is not None else None,
                  provenance_path=prov_path, dry_run=dry_run, verification=verification,
                  notes=tuple(notes), provenance=record)


def _nbytes(slot: Any) -> int:
    """Bytes of a target slot (bfloat16 and float16 count 2 per element)."""
    size = 2 if slot.dtype in ("bfloat16", "float16") else np.dtype(slot.dtype).itemsize
    return int(np.prod(slot.shape)) * size


def _verification_summary(result: Any) -> dict[str, Any]:
    """The verify result's headline numbers, for the report and the provenance record."""
    out: dict[str, Any] = {}
    for name in ("passed", "outputs_max_abs", "outputs_max_rel", "atol", "rtol", "seed"):
        value = getattr(result, name, None)
        if isinstance(value, bool | int | float | str):
            out[name] = value
    first = getattr(result, "first_divergence", None)
    out["first_divergence"] = None if first is None else str(
        getattr(first, "layer_b", None) or getattr(first, "layer", None) or first)
    diagnosis = getattr(result, "diagnosis", None)
    out["diagnosis"] = None if diagnosis is None else str(
        getattr(diagnosis, "cause", None) or diagnosis)
    return out
