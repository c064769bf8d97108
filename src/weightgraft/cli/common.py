"""What every command shares: JSON output, the error boundary, the console."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from ..errors import WeightgraftError

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def console(stderr: bool = False) -> Any:
    """A rich console; 120 columns when writing to a pipe or file (rich's 80 folds the
    tables' key columns), the terminal's width otherwise, ``COLUMNS`` always winning."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = 120 if piped and "COLUMNS" not in os.environ else None
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


# Below this many bytes a job is over before a progress bar would be worth drawing.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


@contextmanager
def progress_bar(description: str, enabled: bool = True,
                 min_bytes: int = PROGRESS_MIN_BYTES) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback (in bytes) drawing a transient bar on stderr.

    Yields ``None`` (no bar) when disabled, when stderr is not a terminal or ``TERM=dumb``;
    the bar stays hidden for jobs under ``min_bytes``.
    """
    if not enabled or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True),
                   transient=True)
    task = bar.add_task(description, total=None, visible=False)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, visible=total >= min_bytes)

    with bar:
        yield update


def shape_option(name: str, help_text: str) -> Callable[[F], F]:
    """A ``--NAME C,H,W`` option parsed into a tuple of positive ints (batch excluded)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None
              ) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            dims = tuple(int(d) for d in value.strip("()[] ").split(",") if d.strip())
        except ValueError:
            dims = ()
        if not dims or any(d <= 0 for d in dims):
            raise click.BadParameter(f"{value!r} is not a shape; write positive sizes "
                                     "separated by commas, without the batch, e.g. 3,224,224")
        return dims

    return click.option(name, metavar="C,H,W", default=None, callback=parse, help=help_text)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, numpy values and paths as plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_") and f.repr}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2))


def handle_errors(func: F) -> F:
    """Turn weightgraft errors into one clear line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WeightgraftError as exc:
            if kwargs.get("as_json"):
                print_json(exc.to_dict())
            else:
                from rich.text import Text

                # The message is data (file names, keys like ``inputs=[array]``), not markup.
                console(stderr=True).print(Text("error: ", style="bold red") + Text(str(exc)))
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
