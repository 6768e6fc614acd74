"""`owl ensemble`: average two detectors in weight space (OWLv2's ``*-ensemble`` checkpoints).

Argument handling only; the arithmetic is `owl.train.ensemble`.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import EXIT_CODES_HELP, UsageFailure


@click.command("ensemble", epilog=EXIT_CODES_HELP)
@click.argument("model_a", metavar="A")
@click.argument("model_b", metavar="B")
@click.option(
    "--weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
    help="B's share: the result is (1 - W) * A + W * B; 0 gives A, 1 gives B.",
)  # fmt: skip
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
    metavar="C.safetensors",
    help="The averaged model (owl format; name it *.safetensors.gz to compress).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def ensemble(model_a: str, model_b: str, weight: float, out: Path, overwrite: bool) -> None:
    """Average the weights of two detectors of one architecture into one.

    A and B are checkpoint paths (any format `owl convert` reads) or registry names. Typical
    use: A self-trained on pseudo-labels, B the same model fine-tuned on human boxes; the
    average keeps most of A's open vocabulary and B's accuracy on the fine-tuning classes.

    \b
    Examples:
      owl ensemble runs/st/model.safetensors runs/st_ft/model.safetensors --out st_ens.safetensors
      owl ensemble a.safetensors b.safetensors --weight 0.3 --out mix.safetensors.gz
    """
    from owl.checkpoints.tree import CheckpointError
    from owl.cli.convert import _source
    from owl.train.ensemble import ensemble_checkpoints

    if out.exists() and not overwrite:
        raise UsageFailure(f"{out} exists; pass --overwrite to replace it")
    path_a, _ = _source(model_a, None)
    path_b, _ = _source(model_b, None)
    try:
        ensemble_checkpoints(path_a, path_b, weight, out)
    except CheckpointError as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{out}: cannot write the averaged model ({e})") from None
    click.echo(f"wrote {out} = {1 - weight:g} x {model_a} + {weight:g} x {model_b}")
