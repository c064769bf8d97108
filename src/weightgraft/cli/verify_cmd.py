"""``graft verify A B``: run two models on the same inputs and find the first diverging layer."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import console, handle_errors, json_option, print_json, shape_option


def _model(spec: str, args: tuple[str, ...]) -> Any:
    from ..modelspec import load_model, parse_args

    return load_model(spec, parse_args(list(args)))


def _load_weights(target: Any, weights: str) -> None:
    """Fill a model (through its view, which knows the input shape) from a weights file,
    in any layout, strictly: any unfilled slot or unused tensor is an error."""
    from ..transplant import transplant

    transplant(weights, target)


@click.command("verify")
@click.argument("a")
@click.argument("b")
@click.option("--weights-a", default=None, help="Weights file to load into model A first.")
@click.option("--weights-b", "--weights", "weights_b", default=None,
              help="Weights file to load into model B first (--weights for short: B is "
                   "usually the converted model under test).")
@click.option("--arg-a", multiple=True, metavar="NAME=VALUE",
              help="Argument for A's factory, e.g. --arg-a weights=None (repeatable).")
@click.option("--arg-b", multiple=True, metavar="NAME=VALUE",
              help="Argument for B's factory (repeatable).")
@click.option("--inputs", "inputs", default=None, type=click.Path(exists=True, dir_okay=False),
              help="A .npy/.npz of inputs in A's layout (default: seeded random normal).")
@click.option("--atol", type=float, default=1e-5, show_default=True,
              help="Absolute tolerance: a layer passes when max|b - a| <= atol + rtol*max|a|.")
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="Relative tolerance.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--batch", type=int, default=2, show_default=True, help="Random inputs per run.")
@shape_option("--input-shape", "A's input shape without the batch, in A's layout (e.g. "
              "3,224,224); needed when neither model declares one, as with two PyTorch modules. "
              "B gets it in its own layout.")
@json_option
@handle_errors
def verify(a: str, b: str, weights_a: str | None, weights_b: str | None,
           arg_a: tuple[str, ...], arg_b: tuple[str, ...], inputs: str | None, atol: float,
           rtol: float, seed: int, batch: int, input_shape: tuple[int, ...] | None,
           as_json: bool) -> None:
    """Run A and B on the same inputs, compare every matched layer, and name the first one
    that diverges and why (flipped kernel, Flatten order, BatchNorm epsilon, padding,
    activation variant, GRU reset_after, architecture).

    A and B are .keras files or factory specs (keras.applications:VGG16,
    pkg.module:build, path/file.py:build). Exit status: 0 agree, 1 differ, 2 error.

    \b
    Example:
      graft verify twin.keras models.py:build_torch --weights-b twin.pt
      graft verify keras.applications:MobileNet models.py:mobilenet --arg-a weights=None --json
    """
    from ..report.verify_view import render_verify
    from ..modelview import view
    from ..verify import paired_views
    from ..verify import verify as run_verify
    from ..verify.alignment import load_inputs

    model_a = _model(a, arg_a)
    if input_shape is not None:
        model_a = view(model_a, input_shape=input_shape)
    elif inputs is not None:  # the probe pass runs on the user's inputs
        model_a = view(model_a, inputs=load_inputs(inputs))
    view_a, view_b = paired_views(model_a, _model(b, arg_b))
    for target, weights in ((view_a, weights_a), (view_b, weights_b)):
        if weights:
            _load_weights(target, weights)
    result = run_verify(view_a, view_b, inputs=inputs, seed=seed, batch=batch, atol=atol,
                        rtol=rtol)
    if as_json:
        print_json(result.to_dict())
    else:
        console().print(render_verify(result))
    sys.exit(0 if result.passed else 1)
