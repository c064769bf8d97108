"""PNG report of a run: relative update per layer over time (heatmap) and norm curves."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import require
from ..track import Run, summarise


def _layer_series(run: Run) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, tuple[str, ...]]]:
    """Per layer: relative update (||updates|| / ||weights||) and norm, per record."""
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
                rel[i, j] = u / n if n > 0 else 0.0
    flags: dict[str, set[str]] = {}
    for s in summarise(run):
        flags.setdefault(run.layers.get(s.name, s.name), set()).update(s.flags)
    return names, rel, norm, {k: tuple(sorted(v)) for k, v in flags.items()}


def plot_run(run: Run, output: str | os.PathLike[str]) -> str:
    """Write the PNG report to ``output`` (atomically) and return its path."""
    require("matplotlib", "plot", "graft track plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from ..atomic import atomic_output

    names, rel, norm, flags = _layer_series(run)
    steps = [r.step for r in run.records]
    height = max(4.0, 0.35 * len(names) + 2.5)
    fig, (ax_h, ax_n) = plt.subplots(1, 2, figsize=(15, height),
                                     gridspec_kw={"width_ratios": [3, 2]})
    with np.errstate(divide="ignore"):
        logrel = np.log10(rel)
    finite = logrel[np.isfinite(logrel)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-8.0, 0.0)
    shown = np.where(np.isfinite(logrel), logrel, np.nan)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#d9d9d9")  # zero update (log10 0 = -inf) or first record: grey
    im = ax_h.imshow(shown, aspect="auto", cmap=cmap, vmin=vmin, vmax=max(vmax, vmin + 1e-9),
                     interpolation="nearest")
    labels = []
    for name in names:
        tag = ", ".join(f for f in flags.get(name, ()) if f)
        labels.append(f"{name}  [{tag}]" if tag else name)
    ax_h.set_yticks(range(len(names)), labels=labels, fontsize=8)
    for tick, name in zip(ax_h.get_yticklabels(), names, strict=True):
        f = flags.get(name, ())
        if "frozen" in f:
            tick.set_color("tab:blue")
        elif "never-changed" in f or "dead" in f:
            tick.set_color("tab:red")
    step_ticks = np.linspace(0, len(steps) - 1, num=min(len(steps), 8)).astype(int) \
        if steps else []
    ax_h.set_xticks(step_ticks, labels=[str(steps[i]) for i in step_ticks])
    ax_h.set_xlabel(f"record (step; every {run.every})")
    ax_h.set_title("log10 relative update per layer  (grey = no update)")
    fig.colorbar(im, ax=ax_h, fraction=0.03, pad=0.02, label="log10(||update|| / ||w||)")
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
