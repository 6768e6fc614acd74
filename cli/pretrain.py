"""`owl pretrain`: contrastive image-text pretraining of a tiny CLIP on ShapesWorld.

Argument handling and printing only: load the Python config, apply `--set` overrides, call
`owl.train.pretrain.pretrain`, print the summary.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import click


def load_config(path: Path) -> Any:
    """Runs `get_config()` of a Python config file."""
    spec = importlib.util.spec_from_file_location(f"owl_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise click.UsageError(f"--config {path}: not a Python file; pass a configs/*.py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise click.ClickException(f"--config {path}: failed to load: {err}") from err
    if not callable(getattr(module, "get_config", None)):
        raise click.UsageError(f"--config {path}: has no get_config() function")
    return module.get_config()


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as family=owlv2


def apply_overrides(config: Any, overrides: tuple[str, ...]) -> None:
    """Applies "a.b=value" assignments to a (locked) ConfigDict in place.

    Values are Python literals (ints, floats, bools, strings, tuples); anything else is taken
    as a string. An unknown key or a value of the wrong type raises `click.UsageError`.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set {item!r}: expected key=value, e.g. --set num_steps=100")
        *parents, leaf = key.split(".")
        node = config
        try:
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = _parse_value(text)
        except (KeyError, AttributeError):
            raise click.UsageError(
                f"--set {item!r}: unknown config key {key!r}; see the config file for the keys"
            ) from None
        except (TypeError, ValueError) as err:
            raise click.UsageError(f"--set {item!r}: {err}") from None


@click.command("pretrain")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Python config file with get_config(), e.g. configs/shapes_clip.py.",
)
@click.option(
    "--workdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory: log.jsonl, checkpoint.safetensors, backbone.safetensors, "
    "retrieval.json.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (repeatable), e.g. --set num_steps=100 --set model.vision_layers=6.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def pretrain(config_path: Path, workdir: Path, overrides: tuple[str, ...], progress: bool) -> None:
    """Pretrain a tiny CLIP contrastively on ShapesWorld image-caption pairs.

    Writes WORKDIR/backbone.safetensors (the CLIP towers under clip/, ready for `owl train`)
    and reports zero-shot retrieval accuracy on held-out scenes.

    \b
    Examples:
      owl pretrain --config configs/shapes_clip.py --workdir runs/shapes_clip
      owl pretrain --config configs/shapes_clip.py --workdir /tmp/clip --set num_steps=50
    """
    config = load_config(config_path)
    apply_overrides(config, overrides)

    from owl.train.pretrain import pretrain as run_pretraining

    try:
        summary = run_pretraining(config, workdir, progress=progress)
    except ValueError as err:  # bad architecture values, e.g. width not divisible by heads
        raise click.ClickException(f"--config {config_path}: {err}") from err
    except OSError as err:
        raise click.ClickException(f"Could not write to {workdir}: {err}") from err

    r = summary["retrieval"]
    click.echo(
        f"{summary['steps']} steps in {summary['wall_s']:.0f} s, final loss "
        f"{summary['final_loss']:.3f}"
    )
    click.echo(
        f"zero-shot category top-1: base {r['category_top1_base']:.3f}, "
        f"novel {r['category_top1_novel']:.3f} (chance {r['chance_category']:.3f})"
    )
    click.echo(
        f"caption retrieval top-1: image->text {r['caption_i2t_top1']:.3f}, "
        f"text->image {r['caption_t2i_top1']:.3f} (chance {r['chance_caption']:.3f})"
    )
    click.echo(f"Wrote {summary['backbone']}")
