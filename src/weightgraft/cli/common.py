"""What every command shares: JSON output, the error boundary, the console."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys
from collections.abc import Callable
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
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = 120 if piped and "COLUMNS" not in os.environ else None
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


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
                console(stderr=True).print(f"[bold red]error:[/] {exc}", markup=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
