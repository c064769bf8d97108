"""``graft track show RUN`` and ``graft track plot RUN -o report.png``."""

from __future__ import annotations

import click

from .common import console, handle_errors, json_option, print_json


@click.group("track")
def track() -> None:
    """Read run files written by weightgraft.keras/torch.WeightTracker."""


@track.command("show")
@click.argument("run")
@click.option("--flagged", is_flag=True, help="Only tensors with a flag.")
@json_option
@handle_errors
def show(run: str, flagged: bool, as_json: bool) -> None:
    """Per tensor: total relative change, latest relative update, flags.

    \b
    Example:
      graft track show runs/mlp.wgt
    """
    from ..report.track_view import render_run
    from ..track import read_run, summarise

    data = read_run(run)
    summary = summarise(data)
    if flagged:
        summary = [s for s in summary if s.flags]
    if as_json:
        print_json({"path": data.path, "framework": data.framework, "every": data.every,
                    "records": len(data.records), "dropped_lines": data.dropped_lines,
                    "tensors": summary})
    else:
        console().print(render_run(data, summary))


@track.command("plot")
@click.argument("run")
@click.option("-o", "--output", required=True, help="PNG file to write.")
@json_option
@handle_errors
def plot(run: str, output: str, as_json: bool) -> None:
    """Heatmap of relative update per layer over time, and norm curves, as a PNG.

    \b
    Example:
      graft track plot runs/mlp.wgt -o report.png
    """
    from ..report.track_plot import plot_run
    from ..track import read_run

    path = plot_run(read_run(run), output)
    if as_json:
        print_json({"output": path})
    else:
        console().print(f"wrote {path}")
