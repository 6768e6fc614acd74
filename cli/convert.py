"""`owl convert`: turn any supported checkpoint into owl's single-file safetensors format."""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import EXIT_CODES_HELP, UsageFailure


@click.command("convert", epilog=EXIT_CODES_HELP)
@click.argument("src", metavar="SRC")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--variant",
    default=None,
    help="Use this named architecture (see `owl models`) instead of inferring it from shapes.",
)
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
def convert(src: str, dest: Path, variant: str | None, overwrite: bool) -> None:
    """Convert a checkpoint (official Flax, transformers or owl) to owl's safetensors format.

    SRC is an official scenic msgpack checkpoint (any naming era), a transformers model
    directory (config.json + model.safetensors), an owl file, or a registry name (see
    `owl models`; downloaded once into the cache, as `owl.load` does). DEST gets the extension
    .safetensors when it has none. Pickled PyTorch files are refused.

    \b
    Examples:
      owl convert ./owlv2-base-patch16-ensemble owlv2-b16.safetensors
      owl convert clip_vit_b32_b0203fc owlvit-b32
      owl convert shapes-tiny shapes-tiny.safetensors
    """
    from owl.checkpoints.load import read_checkpoint, sniff_format
    from owl.checkpoints.owl_format import save_owl
    from owl.checkpoints.tree import CheckpointError, count_params

    if not dest.suffix:
        dest = dest.with_suffix(".safetensors")
    if dest.exists() and not overwrite:
        raise UsageFailure(f"{dest} exists; pass --overwrite to replace it")
    config = None
    if variant is not None:
        from owl.models.configs import get_variant

        try:
            config = get_variant(variant)
        except KeyError as e:
            raise click.UsageError(str(e.args[0])) from None
    path, config = _source(src, config)
    try:
        fmt = sniff_format(path)
        config, params = read_checkpoint(path, config=config)
        _check_against_model(config, params)
    except CheckpointError as e:  # a source that cannot be read or does not fit: exit 2
        raise UsageFailure(str(e)) from None
    try:
        save_owl(dest, config, params)
    except OSError as e:
        raise click.ClickException(f"{dest}: cannot write the converted file ({e})") from None
    c = config
    click.echo(f"read {fmt} checkpoint {path}")
    click.echo(
        f"  {c.family}: image {c.image_size} px, patch {c.patch_size} "
        f"({c.grid_size}x{c.grid_size} grid), vision {c.vision_width}x{c.vision_layers} "
        f"({c.vision_heads} heads), text {c.text_width}x{c.text_layers} ({c.text_heads} heads), "
        f"embed {c.embed_dim}, objectness {'yes' if c.objectness else 'no'}, "
        f"pad {c.pad_value}"
    )
    click.echo(f"  {count_params(params):,} parameters")
    click.echo(f"wrote {dest}")


def _source(src: str, config):  # noqa: ANN001, ANN202 (ModelConfig is imported lazily)
    """SRC -> (local path, config): an existing path as given, else a registry name.

    A registry name is resolved as `owl.load` resolves it: downloaded into the cache when
    missing, and read with its variant's architecture unless --variant gave one.
    """
    if Path(src).exists():
        return Path(src), config
    from owl.checkpoints import registry
    from owl.checkpoints.download import DownloadError
    from owl.models.configs import get_variant

    try:
        entry = registry.get_entry(src)
    except registry.UnknownModelError as e:
        raise click.UsageError(
            f"SRC {src!r} is neither an existing path nor a model name: {e}"
        ) from None
    try:
        path = registry.resolve(entry.name)
    except (DownloadError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    return path, config if config is not None else get_variant(entry.variant)


def _check_against_model(config, params) -> None:  # noqa: ANN001 (types imported lazily)
    """Raises CheckpointError unless the params fit owl's model for `config` exactly."""
    from owl.checkpoints.tree import check_params
    from owl.models.owl_vit import param_shapes

    check_params(params, param_shapes(config))
