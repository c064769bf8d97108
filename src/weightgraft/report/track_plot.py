"""PNG report of a run: relative update per layer over time (heatmap) and norm curves.

The heatmap's colour scale is fixed, log10 relative update from 1e-10 to 1, the same for
every run, so a colour means the same number in every report: a layer at 1e-3 is green
here and in any other run, and everything below the 1e-8 "dead" threshold is drawn in
reds, apart from the viridis range a training layer lives in. Cells that carry no number
get their own look: white before the first update, grey for an update of exactly zero,
and a blue hatch over the rows of frozen (not trainable) layers.

Example:
    >>> plot_run(read_run("runs/mlp.wgt"), "report.png")       # doctest: +SKIP
    'report.png'
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import require
from ..track import DEAD_REL_UPDATE, Run, summarise

LOG_MIN, LOG_MAX = -10.0, 0.0  # fixed colour range: log10 relative update 1e-10 .. 1
DEAD_LOG = math.log10(DEAD_REL_UPDATE)
NOT_YET = "#ffffff"  # first record: no update measured yet
ZERO = "#9a9a9a"  # update exactly zero (no gradient, detached, frozen)
FROZEN_FACE, FROZEN_HATCH = "#dce6f2", "#1f77b4"
# Layer flags that hold only when every tensor of the layer has them; others show if any does.
_ALL_FLAGS = ("frozen", "never-changed", "dead")


def _layer_series(run: Run) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, tuple[str, ...]]]:
    """Per layer: relative update (||updates|| / ||weights||) and norm, per record, and flags.

    The relative update is NaN where no update was measured (first record), 0 where it was
    exactly zero.
    """
    layers: dict[str, list[str]] = {}
    for name in run.tensors:
        layers.setdefault(run.layers.get(name, name), []).append(name)
    names = list(layers)
    rel = np.full((len(names), len(run.records)), np.nan)
    norm = np.full_like(rel, np.nan)
    for j, rec in enumerate(run.records):
        for i, layer in enumerate(names):
            ts = [rec.stats[t] for t in layers[layer]]
            n = math.sqrt(sum(s.norm ** 2 for s in ts))
            norm[i, j] = n
            ups = [s.update_norm for s in ts]
            if all(u is not None for u in ups):
                u = math.sqrt(sum(x ** 2 for x in ups))  # type: ignore[operator]
                rel[i, j] = u / n if n > 0 else (0.0 if u == 0 else math.inf)
    per_tensor = {s.name: set(s.flags) for s in summarise(run)}
    flags: dict[str, tuple[str, ...]] = {}
    for layer, tensors in layers.items():
        sets = [per_tensor.get(t, set()) for t in tensors]
        keep = {f for f in _ALL_FLAGS if sets and all(f in s for s in sets)}
        keep |= {f for s in sets for f in s if f not in _ALL_FLAGS}
        order = ("frozen", "never-changed", "dead", "stalled", "exploding")
        flags[layer] = tuple(f for f in order if f in keep)
    return names, rel, norm, flags


def _colormap() -> Any:
    """Viridis over 1e-8..1, reds below the dead threshold (1e-10..1e-8)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = 500
    n_dead = round(n * (DEAD_LOG - LOG_MIN) / (LOG_MAX - LOG_MIN))
    dead = plt.get_cmap("Reds_r")(np.linspace(0.05, 0.45, n_dead))
    live = plt.get_cmap("viridis")(np.linspace(0.0, 1.0, n - n_dead))
    return ListedColormap(np.vstack([dead, live]), name="weightgraft-update").with_extremes(
        under=dead[0], over=live[-1])


def frozen_spans(run: Run, names: list[str]) -> list[tuple[int, int, int]]:
    """``(row, first record, end record)`` where a layer was frozen (all its tensors not
    trainable): the whole run, or, for a resumed run, the phases in which it was."""
    layers: dict[str, list[str]] = {}
    for t in run.tensors:
        layers.setdefault(run.layers.get(t, t), []).append(t)
    starts = [(0, run.trainable_at_start or run.trainable)]
    starts += [(p.records_before, p.trainable) for p in run.phases]
    spans = []
    for k, (start, flags) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(run.records)
        for i, name in enumerate(names):
            tensors = layers.get(name, [])
            if end > start and tensors and not any(flags.get(t, True) for t in tensors):
                spans.append((i, start, end))
    return spans


def _cells(rel: np.ndarray, cmap: Any, norm: Any,
           frozen: list[tuple[int, int, int]]) -> np.ndarray:
    """RGBA image: the fixed colour scale where there is a positive number, the special
    colours where there is none (``frozen`` from ``frozen_spans``)."""
    from matplotlib.colors import to_rgba

    with np.errstate(divide="ignore", invalid="ignore"):
        logrel = np.log10(rel)
    rgba = cmap(norm(np.nan_to_num(logrel, nan=LOG_MIN, neginf=LOG_MIN, posinf=LOG_MAX + 1)))
    rgba[np.isnan(rel)] = to_rgba(NOT_YET)
    rgba[rel == 0] = to_rgba(ZERO)
    for i, start, end in frozen:
        row = rgba[i, start:end]
        row[rel[i, start:end] == 0] = to_rgba(FROZEN_FACE)
    return rgba


def plot_run(run: Run, output: str | os.PathLike[str]) -> str:
    """Write the PNG report to ``output`` (atomically) and return its path."""
    require("matplotlib", "plot", "graft track plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.patches import Patch, Rectangle

    from ..atomic import atomic_output

    names, rel, norm, flags = _layer_series(run)
    steps = [r.step for r in run.records]
    frozen = frozen_spans(run, names)
    height = max(4.5, 0.38 * len(names) + 3.2)
    fig, (ax_h, ax_n) = plt.subplots(1, 2, figsize=(15, height),
                                     gridspec_kw={"width_ratios": [3, 2]})
    cmap, cnorm = _colormap(), Normalize(LOG_MIN, LOG_MAX)
    ax_h.imshow(_cells(rel, cmap, cnorm, frozen), aspect="auto", interpolation="nearest")
    for i, start, end in frozen:
        ax_h.add_patch(Rectangle((start - 0.5, i - 0.5), end - start, 1, facecolor="none",
                                 edgecolor=FROZEN_HATCH, hatch="//", linewidth=0))
        if (end - start) * 6 >= len(steps):  # room for the words
            ax_h.text((start + end - 1) / 2, i, "frozen (not trainable)", ha="center",
                      va="center", fontsize=8, color=FROZEN_HATCH,
                      bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    for phase in run.phases:
        ax_h.axvline(phase.records_before - 0.5, color="black", linestyle="--", linewidth=1)
    labels = []
    for name in names:
        tag = ", ".join(flags.get(name, ()))
        labels.append(f"{name}  [{tag}]" if tag else name)
    ax_h.set_yticks(range(len(names)), labels=labels, fontsize=8)
    for tick, name in zip(ax_h.get_yticklabels(), names, strict=True):
        f = flags.get(name, ())
        if "exploding" in f or "dead" in f or ("never-changed" in f and "frozen" not in f):
            tick.set_color("tab:red")
        elif "stalled" in f:
            tick.set_color("tab:orange")
        elif "frozen" in f:
            tick.set_color("tab:blue")
    step_ticks = np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).astype(int) \
        if steps else []
    ax_h.set_xticks(step_ticks, labels=[str(steps[i]) for i in step_ticks])
    ax_h.set_xlabel(f"record (step; every {run.every})"
                    + ("; dashed line: a later fit() resumed the run" if run.phases else ""))
    ax_h.set_title("relative update per layer, ||update|| / ||w||  (fixed scale 1e-10 .. 1)")
    cbar = fig.colorbar(ScalarMappable(cnorm, cmap), ax=ax_h, fraction=0.03, pad=0.02,
                        extend="both", ticks=range(int(LOG_MIN), int(LOG_MAX) + 1, 2))
    ticks = list(range(int(LOG_MIN), int(LOG_MAX) + 1, 2))
    cbar.ax.set_yticklabels([("1e-8 (dead below)" if t == DEAD_LOG else f"1e{t}") if t else "1"
                             for t in ticks])
    for t, label in zip(ticks, cbar.ax.get_yticklabels(), strict=True):
        if t == DEAD_LOG:
            label.set_color("tab:red")
    cbar.ax.axhline(DEAD_LOG, color="black", linewidth=2)
    cbar.set_label("||update|| / ||w||")
    legend = [Patch(facecolor=FROZEN_FACE, edgecolor=FROZEN_HATCH, hatch="//",
                    label="frozen (not trainable)"),
              Patch(facecolor=ZERO, edgecolor="0.5", label="no update (exactly 0)"),
              Patch(facecolor=cmap(cnorm(-9)), edgecolor="0.5", label="dead (< 1e-8)"),
              Patch(facecolor=NOT_YET, edgecolor="0.5", label="no update yet (first record)")]
    ax_h.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4,
                fontsize=8, frameon=False)
    palette = ListedColormap(plt.get_cmap("tab10").colors)
    for i, name in enumerate(names):
        f = flags.get(name, ())
        style = "--" if "frozen" in f else (":" if ("never-changed" in f or "dead" in f) else "-")
        ax_n.plot(steps, norm[i], style, color=palette(i % 10), label=name, linewidth=1.4)
    ax_n.set_title("weight norm per layer (-- frozen, : never changed/dead)")
    ax_n.set_xlabel("step")
    ax_n.set_ylabel("||w||")
    if len(names) <= 20:
        ax_n.legend(fontsize=7, loc="best")
    fig.suptitle(f"{os.path.basename(run.path)} — {run.framework}, {len(run.records)} records")
    fig.tight_layout()
    out: Any = output
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return os.fspath(output)
