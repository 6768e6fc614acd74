"""The `owl` command group.

Subcommands live one per module in this folder and are imported only when invoked, so `owl --help`
never imports JAX. The table below is the single place a command is registered.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from owl.cli.options import EXIT_CODES_HELP, EXIT_INTERRUPTED

# command name -> (module inside owl.cli, attribute). A command whose module is not present in
# this build is simply not listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("owl.cli.models", "models"),
    "convert": ("owl.cli.convert", "convert"),
    "detect": ("owl.cli.detect", "detect"),
    "calibrate": ("owl.cli.calibrate", "calibrate"),
    "embed-query": ("owl.cli.embed_query", "embed_query"),
    "eval": ("owl.cli.eval", "eval_cmd"),
    "export": ("owl.cli.export", "export"),
    "train": ("owl.cli.train", "train"),
    "ensemble": ("owl.cli.ensemble", "ensemble"),
    "label": ("owl.cli.label", "label"),
    "pretrain": ("owl.cli.pretrain", "pretrain"),
    "shapes": ("owl.cli.shapes", "shapes"),
    "index": ("owl.cli.index", "index"),
    "search": ("owl.cli.search", "search"),
    "serve": ("owl.cli.serve", "serve"),
    "example-image": ("owl.cli.example_image", "example_image"),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (mod, _) in COMMANDS.items() if _module_exists(mod))

    def invoke(self, ctx: click.Context) -> Any:
        """Runs the subcommand; Ctrl-C exits with 130 (the shell's 128 + SIGINT), not click's 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _module_exists(COMMANDS[cmd_name][0]):
            return None
        module_name, attr = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module_name), attr)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
@click.version_option(package_name="owl")
def cli() -> None:
    """owl: open-vocabulary object detection with OWL-ViT and OWLv2 (JAX/Flax).

    \b
    Examples:
      owl models                                  list models and whether they are cached
      owl detect --model owlvit-b32 --query "red car" photo.jpg
      owl convert ./owlv2-base-patch16-ensemble  owlv2.safetensors
    """


if __name__ == "__main__":
    cli()
