"""Entry point of the ``graft`` command. Commands are imported only when run."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from .. import __version__

# command name -> (module, attribute, one-line help shown in `graft --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("weightgraft.cli.inspect_cmd", "inspect", "Show what is in a checkpoint or model."),
    "convert": ("weightgraft.cli.convert_cmd", "convert", "Change a checkpoint's file format, bit-exact."),
    "transplant": ("weightgraft.cli.transplant_cmd", "transplant",
                   "Move weights from a checkpoint or model into a model."),
    "verify": ("weightgraft.cli.verify_cmd", "verify", "Run two models and find the first diverging layer."),
    "diff": ("weightgraft.cli.diff_cmd", "diff", "What changed between two checkpoints or models."),
    "explain": ("weightgraft.cli.explain_cmd", "explain", "Where did these weights come from?"),
    "track": ("weightgraft.cli.track_cmd", "track", "Show or plot a training run's weight statistics."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(COMMANDS[name][0]) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graft")
def cli() -> None:
    """graft: see, move, convert and trust neural-network weights (Keras 1/2/3, PyTorch)."""


def main(argv: Any = None) -> None:
    cli.main(args=argv, prog_name="graft")


if __name__ == "__main__":
    main()
