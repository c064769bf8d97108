"""Rendering of match plans and transplant reports: rich tables and JSON-ready dicts.

Example:
    >>> from weightgraft.match.plan import Plan
    >>> plan_table(Plan()).row_count
    0
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from ..match.plan import Plan
    from ..transplant import Report

_STATUS_STYLE = {"copied": "green", "converted": "cyan", "initial": "yellow", "unmatched": "red"}


def _steps(steps: tuple[str, ...] | list[str], limit: int = 3) -> str:
    if not steps:
        return "-"
    shown = list(steps[:limit])
    if len(steps) > limit:
        shown.append(f"(+{len(steps) - limit} more)")
    return "\n".join(shown)


def plan_table(plan: Plan) -> Table:
    """One row per assignment: target layer, source layer, tier, confidence, transforms."""
    from rich.table import Table

    table = Table(title="match plan", show_lines=False)
    for col in ("target layer", "source layer", "kind", "tier", "conf.", "transforms"):
        table.add_column(col, overflow="fold")
    for a in plan.assignments:
        table.add_row(a.target_layer, a.source_layer, a.kind, a.tier, f"{a.confidence:.2f}",
                      _steps(a.steps))
    return table


def plan_text(plan: Plan, width: int = 100) -> str:
    """The plan table and its open items as plain text (what ``str(plan)`` shows)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(plan_table(plan))
    for line in plan_problems(plan):
        console.print(line, markup=False)
    return console.export_text().rstrip() + "\n"


def plan_problems(plan: Plan) -> list[str]:
    """Lines for what the plan leaves open: unmatched, unused, ambiguous, notes."""
    lines = []
    if plan.unmatched_targets:
        lines.append(f"unmatched target slots ({len(plan.unmatched_targets)}): "
                     + ", ".join(plan.unmatched_targets[:10]))
    if plan.unused_sources:
        lines.append(f"unused source tensors ({len(plan.unused_sources)}): "
                     + ", ".join(plan.unused_sources[:10]))
    for amb in plan.ambiguous:
        lines.append(f"ambiguous ({amb.tier}): {amb.subject} <- one of "
                     f"{', '.join(amb.candidates)}: {amb.reason}")
    lines += [f"not paired: {u}" for u in plan.unpaired]
    lines += [f"note: {n}" for n in plan.notes]
    return lines


def report_table(report: Report) -> Table:
    """One row per target slot: status, source keys, transforms."""
    from rich.table import Table

    title = "transplant (dry run)" if report.dry_run else "transplant"
    table = Table(title=title)
    for col in ("target slot", "shape", "status", "source", "tier", "transforms / reason"):
        table.add_column(col, overflow="fold")
    for s in report.slots:
        style = _STATUS_STYLE.get(s.status, "")
        table.add_row(s.key, "x".join(map(str, s.shape)) or "scalar",
                      f"[{style}]{s.status}[/]" if style else s.status,
                      "\n".join(s.source_keys) or "-", s.tier or "-",
                      _steps(s.transforms) if s.transforms else (s.reason or "-"))
    return table


def report_summary(report: Report) -> list[str]:
    """Totals, unused sources, output paths and notes as plain lines."""
    t = report.totals
    lines = [f"{t['copied']} copied, {t['converted']} converted, {t['initial']} left at initial "
             f"value, {t['unmatched']} unmatched; {t['params_filled']:,} of "
             f"{t['params_total']:,} parameters filled; {t['unused_sources']} source tensors "
             "unused"]
    if report.unused_sources:
        lines.append("unused source tensors: " + ", ".join(report.unused_sources[:10]))
    if report.output:
        lines.append(f"wrote {report.output}"
                     + (f" (provenance: {report.provenance_path})" if report.provenance_path
                        else " (provenance in its metadata)"))
    if report.verification:
        lines.append("verify: " + ", ".join(f"{k}={v}" for k, v in report.verification.items()))
    lines += [f"note: {n}" for n in report.notes]
    return lines


def report_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON types (plan included)."""
    return {
        "source": report.source, "source_sha256": report.source_sha256,
        "output": report.output, "provenance_path": report.provenance_path,
        "dry_run": report.dry_run, "totals": dict(report.totals),
        "slots": [{"key": s.key, "status": s.status, "shape": list(s.shape),
                   "source_keys": list(s.source_keys), "transforms": list(s.transforms),
                   "tier": s.tier, "confidence": s.confidence, "reason": s.reason,
                   "fingerprint": s.fingerprint} for s in report.slots],
        "unused_sources": list(report.unused_sources),
        "ignored_sources": list(report.ignored_sources),
        "verification": dict(report.verification) if report.verification else None,
        "notes": list(report.notes), "plan": report.plan.to_dict(),
    }
