"""The ``Plan``: which source tensors fill which target slots, how, and how sure we are.

A plan is data. It prints as a table (``weightgraft.report.transplant_view``), serialises to
JSON, can be edited by hand (change an assignment's ``source_keys``, delete one, move a key
from ``unused_sources`` into a new assignment) and applied later with
``transplant(source, target, plan=Plan.load("plan.json"))``.

Example:
    >>> a = Assignment(target_layer="fc", source_layer="dense_1", kind="dense", tier="exact",
    ...                confidence=1.0, source_keys=("dense_1/kernel",), source_roles=("kernel",),
    ...                target_keys=("fc.weight",), target_roles=("kernel",),
    ...                src_convention="keras", dst_convention="torch")
    >>> p = Plan(assignments=(a,))
    >>> Plan.from_json(p.to_json()) == p
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..atomic import atomic_output
from ..errors import PlanError

PLAN_FORMAT = "weightgraft.plan"
PLAN_VERSION = 1

# Tiers in the order they run; a later tier only sees what the earlier ones left open.
TIERS = ("rename", "exact", "normalised", "structure", "shape")


@dataclass(frozen=True)
class Assignment:
    """One target layer (or part of one) filled from one source layer.

    ``source_keys``/``source_roles`` and ``target_keys``/``target_roles`` are parallel
    tuples; a role may carry a part (``"kernel:i"`` for a Keras 1 gate array).
    ``context`` is what the layout rules need (``flatten``, ``dim_ordering``, ...);
    ``steps`` describes the conversion in words (filled by ``match`` for display; the
    transplant recomputes the real operations from kind, roles, conventions and context).
    """

    target_layer: str
    source_layer: str
    kind: str
    tier: str
    confidence: float
    source_keys: tuple[str, ...]
    source_roles: tuple[str, ...]
    target_keys: tuple[str, ...]
    target_roles: tuple[str, ...]
    src_convention: str
    dst_convention: str
    context: Mapping[str, Any] = field(default_factory=dict, compare=True, hash=False)
    steps: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        for name in ("source_keys", "source_roles", "target_keys", "target_roles", "steps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.source_keys) != len(self.source_roles):
            raise PlanError(f"assignment {self.target_layer!r}: {len(self.source_keys)} source "
                            f"keys but {len(self.source_roles)} source roles",
                            expected="one role per source key", fix="edit the plan so they pair up")
        if len(self.target_keys) != len(self.target_roles):
            raise PlanError(f"assignment {self.target_layer!r}: {len(self.target_keys)} target "
                            f"keys but {len(self.target_roles)} target roles",
                            expected="one role per target key", fix="edit the plan so they pair up")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("source_keys", "source_roles", "target_keys", "target_roles", "steps"):
            data[name] = list(data[name])
        data["context"] = dict(self.context)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Assignment:
        known = {f for f in cls.__dataclass_fields__}
        extra = set(data) - known
        if extra:
            raise PlanError(f"assignment has unknown fields {sorted(extra)}",
                            expected=f"only {sorted(known)}", fix="remove or rename them")
        try:
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})
        except TypeError as exc:
            raise PlanError(f"assignment is incomplete: {exc}",
                            expected=f"the fields {sorted(known)}") from None


@dataclass(frozen=True)
class Ambiguity:
    """Two or more equally good candidates; nothing was picked for ``subject``."""

    side: str  # "target" or "source": which side's layer had several candidates
    subject: str
    candidates: tuple[str, ...]
    tier: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "subject": self.subject, "candidates": list(self.candidates),
                "tier": self.tier, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """The full answer of ``match``: assignments, what is left open, what was ambiguous.

    ``unmatched_targets`` and ``unused_sources`` are tensor keys. ``initial_targets`` are
    target slots that are legitimately left at their initial value (``num_batches_tracked``
    counters, slots the user skipped); ``ignored_sources`` are source tensors that are not
    model weights (optimizer state) or that the user skipped. ``unpaired`` says, for layers
    of one kind left open on both sides, why they could not be paired (shapes that differ,
    a layout with no exact conversion).
    """

    assignments: tuple[Assignment, ...] = ()
    unmatched_targets: tuple[str, ...] = ()
    unused_sources: tuple[str, ...] = ()
    ambiguous: tuple[Ambiguity, ...] = ()
    notes: tuple[str, ...] = ()
    initial_targets: tuple[str, ...] = ()
    ignored_sources: tuple[str, ...] = ()
    unpaired: tuple[str, ...] = ()
    source: str | None = None
    source_convention: str = "unknown"
    target_framework: str = ""

    def __post_init__(self) -> None:
        for name in ("assignments", "unmatched_targets", "unused_sources", "ambiguous", "notes",
                     "initial_targets", "ignored_sources", "unpaired"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    # -- queries ---------------------------------------------------------------------
    def by_target_key(self) -> dict[str, Assignment]:
        """Each assigned target slot key with the assignment that fills it."""
        return {k: a for a in self.assignments for k in a.target_keys}

    def tier_counts(self) -> dict[str, int]:
        """How many target slots each tier filled."""
        counts = dict.fromkeys(TIERS, 0)
        for a in self.assignments:
            counts[a.tier] = counts.get(a.tier, 0) + len(a.target_keys)
        return counts

    def __str__(self) -> str:
        """The plan as a table, with what it leaves open: ``print(plan)``."""
        from ..report.transplant_view import plan_text

        return plan_text(self)

    def with_(self, **changes: Any) -> Plan:
        """A copy with some fields changed (plans are frozen)."""
        return replace(self, **changes)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT, "version": PLAN_VERSION,
            "source": self.source, "source_convention": self.source_convention,
            "target_framework": self.target_framework,
            "assignments": [a.to_dict() for a in self.assignments],
            "unmatched_targets": list(self.unmatched_targets),
            "unused_sources": list(self.unused_sources),
            "initial_targets": list(self.initial_targets),
            "ignored_sources": list(self.ignored_sources),
            "ambiguous": [a.to_dict() for a in self.ambiguous],
            "unpaired": list(self.unpaired),
            "notes": list(self.notes),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The plan as JSON text (stable field order, editable by hand)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | None = None) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise PlanError(f"not a weightgraft plan (format is {data.get('format')!r})",
                            path=path, expected=f"format {PLAN_FORMAT!r}",
                            fix="save plans with Plan.save or graft transplant --save-plan")
        if int(data.get("version", 0)) > PLAN_VERSION:
            raise PlanError(f"plan version {data.get('version')} is newer than this weightgraft",
                            path=path, expected=f"version <= {PLAN_VERSION}",
                            fix="upgrade weightgraft")
        try:
            return cls(
                assignments=tuple(Assignment.from_dict(a) for a in data.get("assignments", [])),
                unmatched_targets=tuple(data.get("unmatched_targets", [])),
                unused_sources=tuple(data.get("unused_sources", [])),
                initial_targets=tuple(data.get("initial_targets", [])),
                ignored_sources=tuple(data.get("ignored_sources", [])),
                ambiguous=tuple(Ambiguity(**{**a, "candidates": tuple(a["candidates"])})
                                for a in data.get("ambiguous", [])),
                notes=tuple(data.get("notes", [])),
                unpaired=tuple(data.get("unpaired", [])),
                source=data.get("source"),
                source_convention=data.get("source_convention", "unknown"),
                target_framework=data.get("target_framework", ""),
            )
        except PlanError as exc:
            if path and not exc.path:
                raise PlanError(exc.problem, path=path, expected=exc.expected, fix=exc.fix) from None
            raise
        except (TypeError, KeyError) as exc:
            raise PlanError(f"malformed plan: {exc}", path=path,
                            expected="the structure written by Plan.to_json") from None

    @classmethod
    def from_json(cls, text: str, *, path: str | None = None) -> Plan:
        """Parse ``to_json()`` output (possibly edited by hand)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}", path=path,
                            fix="fix the JSON syntax at the position shown") from None
        if not isinstance(data, dict):
            raise PlanError("plan JSON is not an object", path=path, expected="a JSON object")
        return cls.from_dict(data, path=path)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON, atomically.

        Example:
            >>> Plan().save("/tmp/plan.json"); Plan.load("/tmp/plan.json") == Plan()
            True
        """
        with atomic_output(path) as tmp:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Read a plan written by ``save`` (or edited by hand)."""
        p = os.fspath(path)
        try:
            with open(p, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise PlanError(f"cannot read plan: {exc.strerror}", path=p,
                            fix="check the path") from None
        return cls.from_json(text, path=p)
