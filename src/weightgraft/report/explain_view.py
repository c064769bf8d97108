"""Rendering of ``explain`` results: a rich table and a JSON-ready dict.

Example:
    >>> from weightgraft.provenance import Explanation
    >>> explain_table(Explanation("x.pt", (), False)).row_count
    0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from ..provenance import Explanation

_STYLE = {"recorded": "green", "matched": "cyan", "initial": "yellow", "modified": "magenta",
          "unknown": "red"}


def explain_table(ex: Explanation) -> Table:
    """One row per tensor: status, source file and key, transforms, detail."""
    from rich.table import Table

    import os

    paths = sorted({o.source_path for o in ex.origins if o.source_path})
    title = f"where the weights of {ex.subject} came from"
    if paths:  # full paths once, in the title; the table names each file by its base name
        title += "\n" + "\n".join(f"source: {p}" for p in paths)
    table = Table(title=title)
    for col in ("tensor", "status", "source", "source key", "transforms", "detail"):
        table.add_column(col, overflow="fold")
    for o in ex.origins:
        style = _STYLE.get(o.status, "")
        table.add_row(o.key, f"[{style}]{o.status}[/]",
                      os.path.basename(o.source_path) if o.source_path else "-",
                      "\n".join(o.source_keys) or "-", "\n".join(o.transforms) or "-",
                      o.detail)
    return table


def explain_json(ex: Explanation) -> dict[str, Any]:
    """The explanation as plain JSON types."""
    return {"subject": ex.subject, "record_found": ex.record_found,
            "candidates": list(ex.candidates), "counts": ex.counts(),
            "tensors": [{"key": o.key, "status": o.status, "source_path": o.source_path,
                         "source_sha256": o.source_sha256, "source_keys": list(o.source_keys),
                         "transforms": list(o.transforms), "detail": o.detail}
                        for o in ex.origins]}
