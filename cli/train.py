"""`owl train`: train or fine-tune a detector from a recipe name or a Python config file.

Argument handling only: the config (a recipe shipped in owl/configs/, or a file) is loaded and
overridden with ``--set key=value`` (`owl.train.config`), and handed to
`owl.train.trainer.train_and_evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import EXIT_CODES_HELP, UsageFailure, check_train_extra, config_option
from owl.train.config import ConfigError, load_config, resolve_config


@click.command("train", epilog=EXIT_CODES_HELP)
@config_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder: checkpoints, metrics.jsonl, tensorboard/, model.safetensors (required "
    "except with --print-config).",
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
    config_spec: str,
    workdir: Path | None,
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
    is WORKDIR/model.safetensors, usable with `owl detect --model` and `owl.load`. Training
    needs the [train] extra: pip install "owl[train]".

    \b
    Examples:
      owl train --config train_tiny --workdir runs/tiny
      owl train --config finetune_owlvit_b32 --workdir runs/b32 \\
          --set data.train_annotations=ann.json --set data.train_images=images/
      owl train --config finetune_owlvit_b32 --workdir runs/b32 --resume
      owl train --config my_recipe.py --workdir runs/mine
      owl train --config train_tiny --set optim.lr=1e-3 --print-config
    """
    try:
        config = load_config(resolve_config(config_spec), overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if print_config:
        click.echo(config)
        return
    if workdir is None:
        raise click.UsageError("missing option '--workdir' (the run folder)")
    check_train_extra("train")

    from owl.checkpoints.tree import CheckpointError
    from owl.data.annotations import EvalDataError
    from owl.data.coco import DatasetError
    from owl.train.checkpointing import CheckpointRestoreError, CheckpointWriteError
    from owl.train.trainer import (
        MODEL_FILE,
        NonFiniteLossError,
        TrainingError,
        initialize_distributed,
    )

    try:
        initialize_distributed(coordinator, num_processes, process_id)
        from owl.train.trainer import train_and_evaluate

        state = train_and_evaluate(config, workdir, resume=resume)
    except (CheckpointWriteError, NonFiniteLossError) as e:  # the work failed: exit 1
        raise click.ClickException(str(e)) from None
    except (
        TrainingError,
        CheckpointRestoreError,
        CheckpointError,
        DatasetError,
        EvalDataError,
    ) as e:  # the run cannot start or continue as asked: exit 2
        raise UsageFailure(str(e)) from None
    import jax

    if jax.process_index() == 0:
        step = int(state.step.addressable_data(0))
        click.echo(f"trained to step {step}; wrote {workdir / MODEL_FILE}", err=True)
