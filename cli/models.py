"""`owl models`: list the registered models, their sizes and whether they are already cached."""

from __future__ import annotations

import json

import click

from owl.cli.options import EXIT_CODES_HELP


@click.command("models", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--path",
    "path_of",
    metavar="NAME",
    default=None,
    help="Print only the local path where model NAME is (or would be) cached.",
)
def models(as_json: bool, path_of: str | None) -> None:
    """List the models owl knows, their size and whether they are cached locally.

    Checkpoints are downloaded on first use into $OWL_CACHE_DIR/checkpoints (default
    $XDG_CACHE_HOME/owl or ~/.cache/owl); $OWL_MODEL_BASE_URL points downloads at a mirror.

    \b
    Examples:
      owl models
      owl models --json
      owl models --path owlv2-b16-ensemble
    """
    from owl.checkpoints import registry

    if as_json and path_of is not None:
        raise click.UsageError("use either --json or --path, not both")
    if path_of is not None:
        try:
            click.echo(str(registry.cached_path(path_of)))
        except KeyError as e:
            raise click.UsageError(f"--path: {e}") from None
        return

    rows = [
        {
            "name": e.name,
            "variant": e.variant,
            "size_mib": e.size_mib,
            "cached": registry.is_cached(e.name),
            "description": e.description,
            "url": registry.entry_url(e),
            "sha256": e.sha256,
            "path": str(registry.cached_path(e.name)),
        }
        for e in registry.list_entries()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return

    header = ("NAME", "VARIANT", "SIZE", "CACHED", "DESCRIPTION")
    table = [
        (
            r["name"],
            r["variant"],
            "?" if r["size_mib"] is None else f"{r['size_mib']} MiB",
            "yes" if r["cached"] else "no",
            r["description"],
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *table, strict=True)]
    for line in (header, *table):
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths[:-1], strict=True)]
        click.echo("  ".join([*cells, str(line[-1])]))
    click.echo(f"\ncache: {registry.checkpoint_dir()}")
