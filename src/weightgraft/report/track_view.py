"""Rendering of a tracked run: a per-tensor table with flags."""

from __future__ import annotations

from typing import Any

from ..diff import format_rel
from ..track import STALLED_RECORDS, Run, TensorSummary

_FLAG_STYLE = {"frozen": "blue", "never-changed": "magenta", "dead": "red",
               "stalled": "yellow", "exploding": "bold red"}


def _total(s: TensorSummary) -> str:
    """Net relative change; a tensor that started at zero (a bias) has none, so its
    absolute change is shown instead."""
    if s.total_rel_change is None and s.total_change_norm is not None:
        return f"from 0: ||d|| {s.total_change_norm:.3g}"
    return format_rel(s.total_rel_change)


def render_run(run: Run, summary: list[TensorSummary]) -> Any:
    """A rich renderable: header line, then one row per tensor."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    steps = [r.step for r in run.records]
    head = Text.assemble(
        ("run ", "bold"), run.path, f"  ({run.framework}, every {run.every}, "
        f"{len(run.records)} records, steps {steps[0] if steps else '-'}..{steps[-1] if steps else '-'})")
    if run.phases:
        head.append(f"\nresumed {len(run.phases)} time(s) (a later fit() with the same "
                    f"callback) at step(s) {', '.join(str(p.step) for p in run.phases)}; "
                    "trainable is as of the last")
    if run.dropped_lines:
        head.append(f"\n{run.dropped_lines} incomplete line(s) at the end were dropped "
                    "(the run was interrupted)", style="yellow")
    table = Table(title_justify="left")
    for col in ("tensor", "shape", "trainable", "total rel change", "latest rel update",
                "grad norm", "flags"):
        table.add_column(col, justify="left" if col in ("tensor", "shape", "flags") else "right",
                         no_wrap=col == "tensor")
    for s in summary:
        flags = Text()
        for f in s.flags:
            flags.append(f + " ", style=_FLAG_STYLE.get(f, ""))
        table.add_row(s.name, "x".join(map(str, run.shapes.get(s.name, ()))) or "scalar",
                      "yes" if s.trainable else "no", _total(s),
                      format_rel(s.latest_rel_update),
                      "-" if s.last_grad_norm is None else f"{s.last_grad_norm:.3g}", flags)
    counts: dict[str, int] = {}
    for s in summary:
        for f in s.flags:
            counts[f] = counts.get(f, 0) + 1
    foot = Text("flags: " + (", ".join(f"{n} {f}" for f, n in counts.items()) or "none"))
    foot.append("\ntotal rel change: ||w_last - w_first|| / ||w_first||; never-changed: no "
                "update at all (frozen, detached, or no gradient reaches it); dead: updates "
                "below 1e-8 relative; "
                f"stalled: moved, then the last {STALLED_RECORDS} updates below 1e-8 relative; "
                "exploding: norm grew over 10x or became inf/nan", style="dim")
    return Group(head, table, foot)
