"""``graft transplant SOURCE --into TARGET -o OUT``: move weights with no hand-written mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import console, handle_errors, json_option, print_json, progress_bar, shape_option


def load_source(spec: str, args: tuple[str, ...] = (), weights: str | None = None) -> Any:
    """A checkpoint path stays a path; a ``.keras`` file or factory spec becomes a live model."""
    if Path(spec).is_file() and not spec.endswith(".keras") and not args and not weights:
        return spec
    return load_target(spec, args, weights)


def load_target(spec: str, args: tuple[str, ...], weights: str | None) -> Any:
    """Build the live model named by ``spec`` (and load ``weights`` into it, strictly)."""
    from ..modelspec import load_model, parse_args

    model = load_model(spec, parse_args(list(args)))
    if weights:
        from ..transplant import transplant as run

        run(weights, model)
    return model


@click.command("transplant")
@click.argument("source")
@click.option("--into", "target", required=True,
              help="Target model: a .keras file or a factory spec (pkg.module:build, "
                   "path/file.py:build, keras.applications:VGG16).")
@click.option("-o", "--output", default=None,
              help="Write the result: .weights.h5 (Keras), .pt/.pth (PyTorch), .safetensors.")
@click.option("--rename", multiple=True, metavar="OLD=NEW",
              help="Rename source names (glob with *, or re:REGEX=REPLACEMENT). Repeatable.")
@click.option("--skip", multiple=True, metavar="GLOB", help="Leave these tensors alone. Repeatable.")
@click.option("--allow-missing", multiple=True, metavar="GLOB",
              help="Target slots that may stay at their initial value (e.g. 'head*').")
@click.option("--allow-unused", multiple=True, metavar="GLOB",
              help="Source tensors that may be left unused.")
@click.option("--source-convention", type=click.Choice(["keras", "torch", "theano"]), default=None,
              help="Override the layout detected from the source file.")
@click.option("--min-fill", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Refuse a plan filling less than this share of the target's parameters "
                   "(a sign of mismatched networks); lower it for a transfer whose new "
                   "part holds most of the parameters.")
@click.option("--dry-run", is_flag=True, help="Check everything, change and write nothing.")
@click.option("--plan", "plan_path", default=None, help="Apply this saved (possibly edited) plan.")
@click.option("--save-plan", default=None, help="Save the match plan as JSON.")
@click.option("--verify", is_flag=True, help="Run both models and compare (live source only).")
@click.option("--arg", "args", multiple=True, metavar="NAME=VALUE",
              help="Argument for the target factory. Repeatable.")
@click.option("--weights", default=None, help="Weights file to load into the target first.")
@click.option("--source-arg", multiple=True, metavar="NAME=VALUE",
              help="Argument for the source factory, when the source is a model spec.")
@shape_option("--input-shape", "The target's input shape without the batch, in its own layout "
              "(e.g. 3,224,224), for a PyTorch target whose first layer does not tell it.")
@json_option
@handle_errors
def transplant(source: str, target: str, output: str | None, rename: tuple[str, ...],
               skip: tuple[str, ...], allow_missing: tuple[str, ...],
               allow_unused: tuple[str, ...], source_convention: str | None,
               min_fill: float, dry_run: bool,
               plan_path: str | None, save_plan: str | None, verify: bool,
               args: tuple[str, ...], weights: str | None, source_arg: tuple[str, ...],
               input_shape: tuple[int, ...] | None, as_json: bool) -> None:
    """Fill TARGET's weights from SOURCE (a checkpoint file or a model), matching layers by
    name, then by structure, converting layouts (Keras <-> PyTorch, Theano-era kernels,
    Flatten order). Strict by default: anything unfilled or unused is an error that names
    the option accepting it.

    \b
    Example:
      graft transplant mnist_cnn_th_keras_1_weights.h5 \\
          --into examples/mnist_models.py:torch_mnist -o mnist.pt
      graft transplant mnist_cnn_th_keras_1_weights.h5 \\
          --into examples/mnist_models.py:keras_mnist --arg classes=5 \\
          --allow-missing 'dense_1*' --allow-unused 'dense_2*' -o finetune.weights.h5
    """
    from ..match import Plan, match
    from ..modelview import view
    from ..report.transplant_view import (
        plan_problems,
        plan_table,
        report_json,
        report_summary,
        report_table,
    )
    from ..transplant import transplant as run

    src = load_source(source, source_arg)
    model = load_target(target, args, weights)
    if input_shape is not None:
        model = view(model, input_shape=input_shape)
    plan = Plan.load(plan_path) if plan_path else None
    if plan is None and save_plan:
        plan = match(src, model, rename=list(rename) or None, skip=list(skip) or None,
                     source_convention=source_convention)
        plan.save(save_plan)
    try:
        with progress_bar("transplanting", enabled=not as_json) as progress:
            report = run(src, model, plan=plan, rename=list(rename) or None,
                         skip=list(skip) or None, allow_missing=list(allow_missing) or None,
                         allow_unused=list(allow_unused) or None,
                         source_convention=source_convention, dry_run=dry_run, verify=verify,
                         output=output, progress=progress, min_fill=min_fill,
                         source_file=source if Path(source).is_file() else None)
    except Exception:
        if plan is not None and not as_json:
            err = console(stderr=True)
            err.print(plan_table(plan))
            for line in plan_problems(plan):
                err.print(line, markup=False)
        raise
    if as_json:
        print_json(report_json(report))
        return
    out = console()
    out.print(report_table(report))
    for line in report_summary(report):
        out.print(line, markup=False)
    for amb in report.plan.ambiguous:
        out.print(f"ambiguous: {amb.subject} <- one of {', '.join(amb.candidates)}", markup=False)
