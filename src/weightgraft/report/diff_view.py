"""Rendering of a ``DiffResult``: a layer table (most-changed first), optional tensor table."""

from __future__ import annotations

from typing import Any

from ..diff import ADDED, CHANGED, REMOVED, RESHAPED, UNCHANGED, DiffResult, format_rel

_STYLE = {CHANGED: "yellow", UNCHANGED: "green", ADDED: "cyan", REMOVED: "magenta",
          RESHAPED: "red"}


def _num(value: float | None) -> str:
    return "-" if value is None else format_rel(value)


def render_diff(result: DiffResult, *, tensors: bool = False, limit: int | None = 40) -> Any:
    """A rich renderable for a diff; ``tensors=True`` adds the per-tensor table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    head = Text.assemble(("A ", "bold"), result.a, ("  B ", "bold"), result.b, "\n",
                         f"{len(result.tensors)} tensors: {counts}")
    if result.atol or result.rtol:
        head.append(f"\nchanges within atol={result.atol:g} + rtol={result.rtol:g}*|A| "
                    "count as unchanged")
    table = Table(title="Layers, most changed first", title_justify="left")
    for col in ("layer", "status", "changed", "rel change ||d||/||A||", "max |d|"):
        table.add_column(col, justify="right" if col != "layer" else "left", no_wrap=True)
    rows = result.layers if limit is None else result.layers[:limit]
    for d in rows:
        table.add_row(d.layer, Text(d.status, style=_STYLE.get(d.status, "")),
                      f"{d.changed}/{d.tensors}", _num(d.rel_change), _num(d.max_abs))
    parts: list[Any] = [head, table]
    if limit is not None and len(result.layers) > limit:
        parts.append(Text(f"... {len(result.layers) - limit} more layers (use --all)"))
    if tensors:
        tt = Table(title="Tensors", title_justify="left")
        for col in ("key", "status", "shape", "max |d|", "mean |d|", "rel change", "frac changed"):
            tt.add_column(col, justify="left" if col in ("key", "shape") else "right")
        for t in result.tensors:
            shape = str(t.shape_a if t.shape_a is not None else t.shape_b)
            if t.shape_a and t.shape_b and t.shape_a != t.shape_b:
                shape = f"{t.shape_a} -> {t.shape_b}"
            if t.dtype_a and t.dtype_b and t.dtype_a != t.dtype_b:
                shape += f" {t.dtype_a}->{t.dtype_b}"
            tt.add_row(t.key, Text(t.status, style=_STYLE.get(t.status, "")), shape,
                       _num(t.max_abs), _num(t.mean_abs), _num(t.rel_change),
                       "-" if t.frac_changed is None else f"{t.frac_changed:.1%}")
        parts.append(tt)
    for note in result.notes:
        parts.append(Text("note: " + note, style="dim"))
    return Group(*parts)
