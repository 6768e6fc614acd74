"""`owl shapes`: the ShapesWorld synthetic dataset (generate it as COCO; more subcommands later).

Argument handling and printing only; the world itself lives in `owl.data.shapes`.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def shapes() -> None:
    """ShapesWorld: coloured shapes on grey, 64 categories (48 base, 16 novel).

    \b
    Examples:
      owl shapes generate --out data/shapes-train --num-images 10000 --seed 0
      owl shapes generate --out data/shapes-val --num-images 1000 --seed 1
    """


@shapes.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Output directory; gets images/*.png and annotations.json (COCO).",
)
@click.option(
    "--num-images",
    required=True,
    type=click.IntRange(min=1),
    help="Number of images to generate.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="World seed; image i is the same for a given seed on every run and machine.",
)
@click.option(
    "--image-size",
    default=128,
    show_default=True,
    type=click.IntRange(min=1),
    help="Image side in pixels (box sizes scale with it).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def generate(out_dir: Path, num_images: int, seed: int, image_size: int, progress: bool) -> None:
    """Write a ShapesWorld dataset in COCO format (PNG images + annotations.json).

    Existing files with the same names in DIR are overwritten.

    \b
    Examples:
      owl shapes generate --out data/shapes-train --num-images 10000 --seed 0
      owl shapes generate --out /tmp/shapes --num-images 8 --image-size 256
    """
    import json

    from owl.data import shapes as world

    try:
        annotations_path = world.write_coco_dataset(
            out_dir, num_images, seed, image_size=image_size, progress=progress
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    except OSError as err:
        raise click.ClickException(f"Could not write to {out_dir}: {err}") from err

    dataset = json.loads(annotations_path.read_text())
    novel_ids = set(world.NOVEL_CATEGORY_IDS)
    num_novel = sum(a["category_id"] in novel_ids for a in dataset["annotations"])
    num_objects = len(dataset["annotations"])
    click.echo(f"Wrote {len(dataset['images'])} images to {out_dir / 'images'}")
    click.echo(f"Wrote annotations to {annotations_path}")
    click.echo(
        f"Objects: {num_objects} ({num_objects - num_novel} base, {num_novel} novel) "
        f"in {len(world.CATEGORIES)} categories ({len(world.BASE_CATEGORY_IDS)} base, "
        f"{len(world.NOVEL_CATEGORY_IDS)} novel); seed {seed}, {image_size}x{image_size} px"
    )
