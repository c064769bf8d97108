"""``graft diff A B``: what changed between two checkpoints or models."""

from __future__ import annotations

from typing import Any

import click

from .common import console, handle_errors, json_option, print_json


def _load(spec: str, args: tuple[str, ...], weights: str | None) -> Any:
    """A checkpoint path stays a path; a model spec becomes a live model."""
    from pathlib import Path

    if Path(spec).exists() and not spec.endswith(".keras") and not args and not weights:
        return spec
    from ..modelspec import load_model, parse_args

    model = load_model(spec, parse_args(list(args)))
    if weights:
        from ..transplant import transplant

        transplant(weights, model)
    return model


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="Element changes up to atol + rtol*|A| count as unchanged.")
@click.option("--rtol", type=float, default=0.0, show_default=True)
@click.option("--tensors", is_flag=True, help="Also list every tensor.")
@click.option("--filter", "pattern", default=None, help="Only keys matching this glob.")
@click.option("--all", "show_all", is_flag=True, help="Show every layer, not the top 40.")
@click.option("--arg-a", multiple=True, help="name=value for A's factory (model specs).")
@click.option("--arg-b", multiple=True, help="name=value for B's factory (model specs).")
@click.option("--weights-a", default=None, help="Weights file to load into model A.")
@click.option("--weights-b", default=None, help="Weights file to load into model B.")
@json_option
@handle_errors
def diff(a: str, b: str, atol: float, rtol: float, tensors: bool, pattern: str | None,
         show_all: bool, arg_a: tuple[str, ...], arg_b: tuple[str, ...], weights_a: str | None,
         weights_b: str | None, as_json: bool) -> None:
    """Compare every tensor of A and B: added, removed, unchanged or changed, by how much.

    A and B are checkpoint files (any format graft reads) or models (.keras files,
    factory specs such as keras.applications:VGG16 --arg-a weights=None).

    \b
    Example:
      graft diff before.weights.h5 after.weights.h5
      graft diff run/epoch1.pt run/epoch9.pt --tensors --json
    """
    from ..diff import diff as run_diff
    from ..report.diff_view import render_diff

    result = run_diff(_load(a, arg_a, weights_a), _load(b, arg_b, weights_b),
                      atol=atol, rtol=rtol, filter=pattern)
    if as_json:
        print_json(result)
    else:
        console().print(render_diff(result, tensors=tensors, limit=None if show_all else 40))
