"""``graft convert``: change a checkpoint's file format, bit-exact, without changing layouts."""

from __future__ import annotations

import dataclasses
import math

import click

from .common import console, handle_errors, json_option, print_json, progress_bar
from ..report.inspect_view import human_size


def _seconds(seconds: float) -> str:
    """``0.004 s`` stays readable: milliseconds below a tenth of a second."""
    return f"{seconds * 1000:.0f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


@click.command("convert")
@click.argument("src", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False),
              help="Output file; its ending picks the format unless --format is given.")
@click.option("--format", "fmt", metavar="NAME",
              help="Output format: safetensors, npz, torch, keras3-h5 (see docs/convert.md).")
@click.option("--check", is_flag=True, help="Read the output back and compare every tensor's bytes.")
@json_option
@handle_errors
def convert(src: str, dst: str, fmt: str | None, check: bool, as_json: bool) -> None:
    """Write SRC's tensors to another file format, bit-exact (layouts are not changed).

    Tensors are streamed one at a time and the output appears only when complete.

    \b
    Examples:
      graft convert tiny.pth -o tiny.safetensors
      graft convert model.safetensors -o model.pt --check --json
    """
    from ..convert import convert as run_convert

    with progress_bar("converting", enabled=not as_json) as progress:
        result = run_convert(src, dst, format=fmt, check=check, progress=progress)
    if as_json:
        print_json({**dataclasses.asdict(result), "bytes_per_second": result.bytes_per_second})
        return
    out = console()
    rate = result.bytes_per_second
    speed = f"{human_size(rate)}/s" if math.isfinite(rate) else "too fast to time"
    out.print(f"[bold green]wrote[/] {result.output} ({result.output_format}): "
              f"{result.tensors:,} tensors, {result.params:,} params, "
              f"{human_size(result.nbytes)} in {_seconds(result.seconds)} ({speed})")
    out.print(f"from {result.source} ({result.source_format}), bit-exact"
              + (", checked byte for byte" if result.checked else ""))
    if result.metadata:
        shown = ", ".join(f"{k}={v!r}" if len(v) <= 40 else f"{k}=({len(v):,} characters)"
                          for k, v in result.metadata.items())
        out.print(f"metadata: {shown}", markup=False, highlight=False)
    if result.left_out:
        shown = ", ".join(result.left_out[:5]) + (" ..." if len(result.left_out) > 5 else "")
        out.print(f"[yellow]left out[/] {len(result.left_out)} non-model tensors "
                  f"(optimizer state or other): {shown}")
    if result.metadata_left_out:
        out.print(f"[yellow]left out[/] metadata (a {result.output_format} file could hold it "
                  "only as one more array): "
                  f"{', '.join(result.metadata_left_out)}")
    if result.extras_left_out:
        out.print(f"[yellow]left out[/] non-tensor values: {', '.join(result.extras_left_out)}")

