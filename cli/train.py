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
@config_option(required=False)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Front door: a COCO, YOLO or VOC data set to adapt --model to (owl/configs/adapt.py).",
)
@click.option("--model", "model_name", default=None, help="Front door: the starting model.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Front door: where to write the adapted model (.safetensors; CDC's pick).",
)
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
    data: Path | None,
    model_name: str | None,
    out: Path | None,
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
      owl train --data mydata/ --model owlv2-b16 --out mine.safetensors
    """
    if data is not None:
        config, workdir = _front_door(data, model_name, out, workdir, config_spec, overrides)
    elif config_spec is None:
        raise UsageFailure("give --config NAME|FILE, or --data PATH --model NAME --out FILE")
    else:
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
        if out is not None:
            import shutil

            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workdir / MODEL_FILE, out)
            click.echo(f"wrote {out} (the model of CDC's step; see {workdir})", err=True)


def _front_door(data, model_name, out, workdir, config_spec, overrides):
    """`--data/--model/--out`: the adapt recipe's config, every default printed; the run folder."""
    if not model_name or out is None:
        raise UsageFailure("--data needs --model NAME and --out FILE.safetensors")
    from owl.train.adapt import AdaptError, front_door

    try:
        config, defaults = front_door(
            str(data), model_name, config_spec=config_spec, overrides=overrides
        )
    except AdaptError as e:
        raise UsageFailure(str(e)) from None
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a dataset reader's error: one line, exit 2
        raise UsageFailure(f"--data {data}: {e}") from None
    for key, value, why in defaults:
        click.echo(f"default {key} = {value}  ({why})", err=True)
    if overrides:
        click.echo(f"overridden by --set: {', '.join(overrides)}", err=True)
    return config, workdir or out.with_name(out.stem + ".run")
