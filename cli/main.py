"""The `owl` command group.

Subcommands live one per module in this folder and are imported only when invoked, so `owl --help`
never imports JAX. The table below is the single place a command is registered.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

# command name -> (module inside owl.cli, attribute). A command whose module is not present in
# this build is simply not listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("owl.cli.models", "models"),
    "convert": ("owl.cli.convert", "convert"),
    "detect": ("owl.cli.detect", "detect"),
    "embed-query": ("owl.cli.embed_query", "embed_query"),
    "eval": ("owl.cli.eval", "eval_cmd"),
    "train": ("owl.cli.train", "train"),
    "pretrain": ("owl.cli.pretrain", "pretrain"),
    "shapes": ("owl.cli.shapes", "shapes"),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (mod, _) in COMMANDS.items() if _module_exists(mod))

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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
