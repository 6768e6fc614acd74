"""`owl shapes`: the ShapesWorld synthetic world: generate it as COCO, run the whole recipe.

Argument handling and printing only; the world lives in `owl.data.shapes`, the recipe in
`owl.recipes.shapes`.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import EXIT_CODES_HELP


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
def shapes() -> None:
    """ShapesWorld: coloured shapes on grey, 64 categories (48 base, 16 novel).

    \b
    Examples:
      owl shapes generate --out data/shapes-train --num-images 10000 --seed 0
      owl shapes generate --out data/shapes-val --num-images 1000 --seed 1
      owl shapes reproduce --workdir runs/shapes
    """


@shapes.command(epilog=EXIT_CODES_HELP)
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


@shapes.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--workdir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Run folder: data/, pretrain/, detector/, eval/ and results.json.",
)
@click.option(
    "--fast",
    is_flag=True,
    help="Test-sized run (tiny data, a few steps; about 75 s on a 2-core CPU): checks that "
    "every stage works, its numbers mean nothing.",
)
@click.option(
    "--backbone",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Skip stage 1 and fine-tune this backbone.safetensors (from `owl pretrain`).",
)
@click.option(
    "--configs-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder holding shapes_clip.py and shapes_detect.py [default: the recipes shipped "
    "in owl/configs/].",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True,
    help="Progress bars of the training stages (steps, loss, rate, ETA).",
)  # fmt: skip
def reproduce(
    workdir: Path, fast: bool, backbone: Path | None, configs_dir: Path | None, progress: bool
) -> None:
    """Run the whole ShapesWorld recipe and print the results table.

    Generates the data, pretrains a tiny CLIP on captions (stage 1), fine-tunes it into a
    detector on the 48 base categories (stage 2), and evaluates base, novel (zero-shot text)
    and one-shot novel AP on a held-out set with all 64 categories annotated. About 37 minutes
    on a 2-core CPU; the detector lands in DIR/shapes-tiny.safetensors.gz (the form owl ships).

    \b
    Examples:
      owl shapes reproduce --workdir runs/shapes
      owl shapes reproduce --workdir /tmp/shapes-smoke --fast
      owl detect examples/shapes/images/000000.png \\
          --model runs/shapes/shapes-tiny.safetensors.gz \\
          --query "red circle"
    """
    from owl.cli.options import UsageFailure, check_train_extra

    check_train_extra("shapes reproduce")
    from owl.recipes import shapes as recipe
    from owl.train.config import ConfigError

    settings = recipe.FAST if fast else recipe.FULL
    try:
        results = recipe.reproduce(
            workdir,
            settings,
            configs_dir=configs_dir,
            backbone=backbone,
            log=click.echo,
            progress=progress,
        )
    except (recipe.RecipeError, ConfigError) as err:  # cannot run as asked: exit 2
        raise UsageFailure(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"Could not write to {workdir}: {err}") from err
    click.echo("")
    click.echo(recipe.format_table(results))
    click.echo(f"Results: {Path(workdir) / recipe.RESULTS_FILE}")


@shapes.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR", help="Output directory; gets video.mp4 and video.gt.txt (MOT ground truth).",
)  # fmt: skip
@click.option("--frames", "num_frames", default=600, show_default=True, type=click.IntRange(min=1))
@click.option("--objects", "num_objects", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--fps", default=25.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--width", default=128, show_default=True, type=click.IntRange(min=64))
@click.option("--height", default=128, show_default=True, type=click.IntRange(min=64))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
def video(
    out_dir: Path, num_frames: int, num_objects: int, fps: float, width: int, height: int, seed: int
) -> None:
    """Write a ShapesWorld video: objects moving, bouncing, crossing, entering and leaving.

    The ground truth is MOT Challenge gt text (frame,id,x,y,w,h,conf,class,visibility; frames
    and ids from 1; class = COCO category id). Needs the video extra.

    \b
    Examples:
      owl shapes video --out data/shapes-video
      owl detect data/shapes-video/video.mp4 --model shapes-tiny --track -q "red star" ...
    """
    from owl.cli.options import check_extra
    from owl.data import shapes_video

    check_extra("shapes video", "video", ("av",), "video")
    spec = shapes_video.sample_video(
        seed, width=width, height=height, fps=fps, num_frames=num_frames, num_objects=num_objects
    )
    try:
        path, gt = shapes_video.write_video(spec, out_dir)
    except OSError as err:
        raise click.ClickException(f"Could not write to {out_dir}: {err}") from err
    click.echo(f"Wrote {path} ({num_frames} frames, {width}x{height}, {fps:g} fps)")
    click.echo(f"Wrote {gt} (MOT ground truth)")
    names = [f'"{o.name}"' for o in spec.objects]
    click.echo(f"Objects ({len(names)}): {', '.join(names)}")
