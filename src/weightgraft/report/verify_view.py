"""Rendering of a ``VerifyResult``: verdict, a layer table marking the first divergence, and
the diagnosis with its evidence.

Example:
    >>> from rich.console import Console                          # doctest: +SKIP
    >>> Console().print(render_verify(weightgraft.verify(a, b)))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

from ..verify.result import LayerComparison, VerifyResult


def _num(value: float) -> str:
    return f"{value:.2e}" if math.isfinite(value) else str(value)


def _row_cells(row: LayerComparison) -> tuple[str, str]:
    if row.shape_a != row.shape_b:
        return "shape", "shape"
    return _num(row.max_abs), _num(row.max_rel)


def render_verify(result: VerifyResult, *, limit: int | None = None) -> Any:
    """A rich renderable: one row per compared layer pair, then the final outputs."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    verdict = Text("PASS", style="bold green") if result.passed else Text("FAIL", style="bold red")
    head = Text.assemble(
        verdict, f"  {result.framework_a} (a) vs {result.framework_b} (b), seed {result.seed}, "
        f"inputs {list(result.input_shapes_a)} / {list(result.input_shapes_b)}, "
        f"tolerance max|b-a| <= {result.atol:g} + {result.rtol:g}*max|a| per layer")
    table = Table(title="Layers in a's execution order (outputs compared channels-last)",
                  title_justify="left")
    for col in ("", "layer in a", "layer in b", "kind", "max |b-a|", "max rel", "result", "note"):
        table.add_column(col, justify="right" if col.startswith("max") else "left")
    rows = [*result.layers, *result.outputs]
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        first = row is result.first_divergence
        mark = Text("▶", style="bold red") if first else Text("")
        status = (Text("first divergence", style="bold red") if first else
                  Text("ok", style="green") if row.passed else Text("differs", style="red"))
        abs_cell, rel_cell = _row_cells(row)
        if row.shape_a != row.shape_b:
            abs_cell = f"{row.shape_a} vs {row.shape_b}"
        table.add_row(mark, row.layer_a, row.layer_b, row.kind, abs_cell, rel_cell, status,
                      Text(row.note, style="dim"), style="bold" if first else None)
    parts: list[Any] = [head, table]
    if limit is not None and len(rows) > limit:
        parts.append(Text(f"... {len(rows) - limit} more rows"))
    if result.diagnosis is not None:
        d = result.diagnosis
        text = Text.assemble(("diagnosis: ", "bold"), (d.cause, "bold yellow"), "\n", d.explanation)
        for name, value in d.evidence.items():
            shown_value = _num(value) if isinstance(value, float) else value
            text.append(f"\n  {name}: {shown_value}", style="dim")
        parts.append(text)
    for side, names in (("a", result.unpaired_a), ("b", result.unpaired_b)):
        if names:
            parts.append(Text(f"not compared (no partner in the other model), {side}: "
                              + ", ".join(names), style="dim"))
    for note in result.notes:
        parts.append(Text("note: " + note, style="dim"))
    return Group(*parts)


def verify_json(result: VerifyResult) -> dict[str, Any]:
    """The result as JSON-ready data (``graft verify --json``)."""
    return result.to_dict()
