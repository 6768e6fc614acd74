"""`owl pretrain`: contrastive image-text pretraining of a tiny CLIP on ShapesWorld.

Argument handling and printing only: load the Python config with its `--set` overrides
(`owl.train.config`), call `owl.train.pretrain.pretrain`, print the summary.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import EXIT_CODES_HELP, UsageFailure, check_train_extra, config_option


@click.command("pretrain", epilog=EXIT_CODES_HELP)
@config_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder: metrics.jsonl, tensorboard/, checkpoints/, backbone.safetensors, "
    "retrieval.json (required except with --print-config).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value (repeatable), e.g. --set num_steps=100 "
    "--set model.vision_layers=6.",
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --workdir.")
@click.option("--print-config", is_flag=True, help="Print the final config and exit.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def pretrain(
    config_spec: str,
    workdir: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    print_config: bool,
    progress: bool,
) -> None:
    """Pretrain a tiny CLIP contrastively on ShapesWorld image-caption pairs.

    Writes WORKDIR/backbone.safetensors (the CLIP towers under clip/, ready for `owl train`)
    and reports zero-shot retrieval accuracy on held-out scenes. Checkpoints are written every
    checkpoint_every steps, as `owl train` writes them: a run stopped for any reason continues
    exactly where it stopped with --resume.

    \b
    Examples:
      owl pretrain --config shapes_clip --workdir runs/shapes_clip
      owl pretrain --config shapes_clip --workdir /tmp/clip --set num_steps=50
      owl pretrain --config shapes_clip --workdir runs/shapes_clip --resume
      owl pretrain --config shapes_clip --print-config
    """
    from owl.train.config import ConfigError, load_config, resolve_config

    try:
        config_path = resolve_config(config_spec)
        config = load_config(config_path, overrides)
    except ConfigError as err:
        raise click.UsageError(str(err)) from None
    if print_config:
        click.echo(config)
        return
    if workdir is None:
        raise click.UsageError("missing option '--workdir' (the output directory)")
    check_train_extra("pretrain")

    from owl.train.checkpointing import CheckpointRestoreError, CheckpointWriteError
    from owl.train.pretrain import PretrainingError
    from owl.train.pretrain import pretrain as run_pretraining

    try:
        summary = run_pretraining(config, workdir, resume=resume, progress=progress)
    except CheckpointWriteError as err:  # the work failed: exit 1
        raise click.ClickException(str(err)) from None
    except (PretrainingError, CheckpointRestoreError) as err:  # cannot start as asked: exit 2
        raise UsageFailure(str(err)) from None
    except ValueError as err:  # bad architecture values, e.g. width not divisible by heads
        raise UsageFailure(f"--config {config_path}: {err}") from None
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
