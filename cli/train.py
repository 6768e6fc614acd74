"""`owl train`: train or fine-tune a detector from a Python config file.

Argument handling only: the config file is loaded by path (`load_config`), locked, overridden
with ``--set key=value`` (`apply_override`: values are converted to the type of the key's current
value; an unknown key fails with the closest known keys), and handed to
`owl.train.trainer.train_and_evaluate`.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class ConfigError(ValueError):
    """A config file or an override is wrong; the message names it and says what to do."""


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Loads ``get_config()`` from a Python file, locks it and applies ``key=value`` overrides.

    The file's folder is importable while it loads, so a config can ``import`` a sibling
    config (``import finetune_owlvit_b32 as base``), as a script can.

    Raises:
      ConfigError: missing file, no ``get_config``, an error inside the file, or a bad override.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    name = f"owl_config_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent.absolute())
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"{path}: defines no get_config() function")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any error raised by user code in the config file
        raise ConfigError(f"{path}: loading the config failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
    config.lock()
    for item in overrides:
        apply_override(config, item)
    return config


def _flat_keys(config: Any, prefix: str = "") -> list[str]:
    import ml_collections

    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_flat_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _unknown_key(config: Any, key: str) -> ConfigError:
    known = _flat_keys(config)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = (
        f"; did you mean {' or '.join(close)}?"
        if close
        else "; run with --print-config to list keys"
    )
    return ConfigError(f"unknown config key {key!r}{hint}")


def convert_value(text: str, current: Any, key: str) -> Any:
    """Converts ``text`` to the type of ``current`` (bool, int, float, str, tuple, list)."""
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"{key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        if current:
            value = tuple(convert_value(str(v), current[0], key) for v in value)
        return type(current)(value)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: Any, item: str) -> None:
    """Applies one ``dotted.key=value`` to a locked ConfigDict, converting the value.

    Raises:
      ConfigError: no "=", an unknown key (with close matches), a group key, or a bad value.
    """
    import ml_collections

    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            raise _unknown_key(config, key)
        node = child
    leaf = parts[-1]
    if leaf not in node:
        raise _unknown_key(config, key)
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise ConfigError(
            f"{key} is a group; set one of its keys: " + ", ".join(f"{key}.{k}" for k in current)
        )
    value = convert_value(text, current, key)
    try:
        setattr(node, leaf, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}={text!r}: {e}") from None


@click.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Training config: a Python file with get_config() (see configs/).",
)
@click.option(
    "--workdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: checkpoints, metrics.jsonl, tensorboard/, model.safetensors.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (repeatable), e.g. --set optim.lr=1e-4.",
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --workdir.")
@click.option(
    "--coordinator",
    default=None,
    metavar="HOST:PORT",
    help="Multi-process: address of process 0 (default $OWL_COORDINATOR).",
)
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    default=None,
    help="Multi-process: number of processes (default $OWL_NUM_PROCESSES).",
)
@click.option(
    "--process-id",
    type=click.IntRange(min=0),
    default=None,
    help="Multi-process: this process's index (default $OWL_PROCESS_ID).",
)
@click.option("--print-config", is_flag=True, help="Print the final config and exit.")
def train(
    config_path: Path,
    workdir: Path,
    overrides: tuple[str, ...],
    resume: bool,
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    print_config: bool,
) -> None:
    """Train or fine-tune a detector as a config file describes.

    Checkpoints are written every train.checkpoint_every steps (the last few kept); a run
    stopped for any reason continues exactly where it stopped with --resume. The final model
    is WORKDIR/model.safetensors, usable with `owl detect --model` and `owl.load`.

    \b
    Examples:
      owl train --config configs/train_tiny.py --workdir runs/tiny
      owl train --config configs/finetune_owlvit_b32.py --workdir runs/b32 \\
          --set data.train_annotations=ann.json --set data.train_images=images/
      owl train --config configs/finetune_owlvit_b32.py --workdir runs/b32 --resume
      owl train --config configs/train_tiny.py --workdir runs/t --set optim.lr=1e-3 --print-config
    """
    try:
        config = load_config(config_path, overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if print_config:
        click.echo(config)
        return

    from owl.checkpoints.formats import CheckpointError
    from owl.data.coco import DatasetError
    from owl.eval.results import EvalDataError
    from owl.train.checkpointing import CheckpointRestoreError, CheckpointWriteError
    from owl.train.trainer import MODEL_FILE, TrainingError, initialize_distributed

    try:
        initialize_distributed(coordinator, num_processes, process_id)
        from owl.train.trainer import train_and_evaluate

        state = train_and_evaluate(config, workdir, resume=resume)
    except (
        TrainingError,
        CheckpointWriteError,
        CheckpointRestoreError,
        CheckpointError,
        DatasetError,
        EvalDataError,
    ) as e:
        raise click.ClickException(str(e)) from None
    import jax

    if jax.process_index() == 0:
        step = int(state.step.addressable_data(0))
        click.echo(f"trained to step {step}; wrote {workdir / MODEL_FILE}", err=True)
