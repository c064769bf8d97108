"""``graft inspect``: what is in a checkpoint file or a model, without loading tensor data."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import console, handle_errors, json_option, shape_option

if TYPE_CHECKING:
    from ..inspection import Inspection


def no_match_line(ins: Inspection) -> str | None:
    """The line to show when ``--filter`` kept nothing; ``None`` when it kept something.

    Example:
        >>> no_match_line(weightgraft.inspect("tiny.pth", filter="dense*"))   # doctest: +SKIP
        "no layer or tensor matches 'dense*'; 44 tensors in the file (...)"
    """
    if ins.filter is None or ins.layers or ins.other_tensors or ins.optimizer is not None:
        return None
    where = "the model" if ins.model is not None else "the file"
    return (f"no layer or tensor matches {ins.filter!r}; {ins.tensors_in_source:,} tensors in "
            f"{where} (the glob is matched, case-sensitively, against layer names and tensor "
            "keys: try '*name*', or see them all with --tensors)")


def _looks_like_spec(target: str) -> bool:
    """``pkg.module:factory`` or ``path/file.py:factory`` (a colon not part of a drive letter)."""
    head, sep, tail = target.rpartition(":")
    return bool(sep and head and tail and not (len(head) == 1 and tail.startswith(("\\", "/"))))


def _inspect_model(target: str, args: tuple[str, ...], weights: str | None,
                   pattern: str | None, input_shape: tuple[int, ...] | None = None
                   ) -> Inspection:
    from .. import inspection
    from ..modelspec import load_model, parse_args
    from ..modelview import view

    model = load_model(target, parse_args(list(args)) if args else None)
    if input_shape is not None:
        model = view(model, input_shape=input_shape)
    if weights is None:
        return inspection.inspect(model, filter=pattern)
    from ..transplant import transplant

    # Strict: every slot filled and every tensor used, or a PlanError says what does not fit.
    report = transplant(weights, model)
    ins = inspection.inspect(model, filter=pattern)
    t = report.totals
    return _with_note(ins, f"weights loaded from {weights}: {t.get('copied', 0)} tensors copied, "
                           f"{t.get('converted', 0)} converted to this model's layout")


def _with_note(ins: Inspection, note: str) -> Inspection:
    header = dataclasses.replace(ins.header, notes=(note, *ins.header.notes))
    return dataclasses.replace(ins, header=header)


def run_inspect(target: str, *, pattern: str | None = None, args: tuple[str, ...] = (),
                weights: str | None = None, as_file: bool = False,
                input_shape: tuple[int, ...] | None = None) -> Inspection:
    """Inspect a file (read lazily) or a model spec (built, then viewed): the command's core."""
    from .. import inspection
    from ..errors import ModelSpecError

    path = Path(target)
    if path.is_file() and (as_file or path.suffix != ".keras"):
        if args or weights or input_shape:
            raise ModelSpecError(
                f"--arg, --weights and --input-shape apply to models, and {target} is a "
                "checkpoint file",
                fix="drop them, or name a model spec such as pkg.module:factory",
            )
        return inspection.inspect(path, filter=pattern)
    if path.is_file():  # a .keras file: a live model shows output shapes and depth too
        try:
            return _inspect_model(target, args, weights, pattern, input_shape)
        except (ModelSpecError, ImportError) as exc:
            if args or weights or input_shape:
                raise
            ins = inspection.inspect(path, filter=pattern)
            reason = " ".join(str(getattr(exc, "problem", None) or exc).split())
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            return _with_note(ins, f"could not build the model ({reason}); "
                                   "showing the file's stored weights instead")
    if _looks_like_spec(target):
        return _inspect_model(target, args, weights, pattern, input_shape)
    if args or weights or input_shape:
        raise ModelSpecError(f"{target!r} is neither a file nor a model spec",
                             expected="a .keras file, pkg.module:factory or path/file.py:factory")
    return inspection.inspect(path, filter=pattern)  # the reader says what is wrong with it


@click.command("inspect")
@click.argument("target", metavar="PATH|MODEL_SPEC")
@click.option("--tensors", is_flag=True, help="List every tensor instead of grouping by layer.")
@click.option("--filter", "pattern", metavar="GLOB",
              help="Only layers or tensor keys matching this glob, e.g. 'features.*' or '*bias'.")
@click.option("--arg", "args", multiple=True, metavar="NAME=VALUE",
              help="Keyword argument for a model factory (repeatable), e.g. --arg weights=None.")
@click.option("--weights", type=click.Path(dir_okay=False), metavar="FILE",
              help="Weights to load into the model before inspecting it.")
@click.option("--as-file", is_flag=True,
              help="Read a .keras file as stored weights instead of building the model.")
@shape_option("--input-shape", "The model's input shape without the batch, in its own layout "
              "(e.g. 3,224,224), for a model whose first layer does not tell it.")
@json_option
@handle_errors
def inspect(target: str, tensors: bool, pattern: str | None, args: tuple[str, ...],
            weights: str | None, as_file: bool, input_shape: tuple[int, ...] | None,
            as_json: bool) -> None:
    """Show what is in a checkpoint file or a model, without loading tensor data.

    PATH is any supported checkpoint (.h5, .keras, .weights.h5, .pt/.pth/.bin,
    .safetensors, .npz, .onnx). MODEL_SPEC builds a model: a .keras file,
    pkg.module:factory or path/file.py:factory. The exit status is 1 when --filter
    matches nothing (like grep), 2 on an error.

    \b
    Examples:
      graft inspect mnist_cnn_th_keras_1_weights.h5
      graft inspect tiny.pth --tensors --filter 'conv1*'
      graft inspect keras.applications:ResNet50 --arg weights=None --json
      graft inspect nets.py:build --input-shape 3,32,32
    """
    from ..report.inspect_view import render, to_json

    ins = run_inspect(target, pattern=pattern, args=args, weights=weights, as_file=as_file,
                      input_shape=input_shape)
    missed = no_match_line(ins)
    if as_json:  # still one valid JSON document on stdout when nothing matched
        # to_json already gives plain types; skip the generic converter. Indented JSON goes
        # through Python's slow encoder: big checkpoints get compact JSON (same content).
        indent = 2 if ins.tensors_in_source <= 2000 else None
        click.echo(json.dumps(to_json(ins), indent=indent))
    elif missed is None:  # an empty table would only puzzle: the line below says why
        render(ins, console(), tensors=tensors)
    if missed is not None:
        console(stderr=True).print(missed, markup=False, highlight=False)
        sys.exit(1)  # like grep: nothing matched
