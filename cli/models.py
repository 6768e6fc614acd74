"""`owl models`: list the registered models, their sizes and whether they are already cached."""

from __future__ import annotations

import json

import click

from owl.cli.options import EXIT_CODES_HELP


@click.command("models", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--verify",
    is_flag=True,
    help="Hash every cached download and compare it with what was downloaded (and with the "
    "registry's checksum where one is known); exit 1 if any is corrupt.",
)
@click.option(
    "--path",
    "path_of",
    metavar="NAME",
    default=None,
    help="Print only the local path where model NAME is (or would be) cached.",
)
def models(as_json: bool, verify: bool, path_of: str | None) -> None:
    """List the models owl knows, their size and whether they are cached locally.

    Checkpoints are downloaded on first use into $OWL_CACHE_DIR/checkpoints (default
    $XDG_CACHE_HOME/owl or ~/.cache/owl); $OWL_MODEL_BASE_URL points downloads at a mirror.
    Each download's size and SHA-256 are recorded beside it: CACHED says "corrupt" when the
    size no longer matches, and --verify compares the whole hash.

    \b
    Examples:
      owl models
      owl models --json
      owl models --verify
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

    problems = {
        e.name: registry.verify_cached(e.name, full=verify) for e in registry.list_entries()
    }
    rows = [
        {
            "name": e.name,
            "variant": e.variant,
            "size_mib": e.size_mib,
            "cached": registry.is_cached(e.name),
            "corrupt": problems[e.name],
            "description": e.description,
            "url": registry.entry_url(e),
            "sha256": e.sha256,
            "path": str(registry.cached_path(e.name)),
        }
        for e in registry.list_entries()
    ]
    corrupt = [r for r in rows if r["corrupt"] is not None]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        if verify and corrupt:
            click.get_current_context().exit(1)
        return

    header = ("NAME", "VARIANT", "SIZE", "CACHED", "DESCRIPTION")
    table = [
        (
            r["name"],
            r["variant"],
            "?" if r["size_mib"] is None else f"{r['size_mib']} MiB",
            "corrupt" if r["corrupt"] is not None else "yes" if r["cached"] else "no",
            r["description"],
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *table, strict=True)]
    for line in (header, *table):
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths[:-1], strict=True)]
        click.echo("  ".join([*cells, str(line[-1])]))
    click.echo(f"\ncache: {registry.checkpoint_dir()}")
    if verify:
        checked = [r for r in rows if r["cached"] and r["url"] is not None]
        unrecorded = [r["name"] for r in checked if not registry.is_recorded(r["name"])]
        click.echo(
            f"verified {len(checked)} cached download(s): {len(checked) - len(corrupt)} ok, "
            f"{len(corrupt)} corrupt"
        )
        if unrecorded:
            click.echo(
                f"note: no download record for {', '.join(unrecorded)} (placed by hand or by an "
                "older owl); their hash is not known, so they count as ok"
            )
    for r in corrupt:
        click.echo(
            f"corrupt: {r['path']}: {r['corrupt']}; {registry.redownload_hint(r['name'])}",
            err=True,
        )
    if verify and corrupt:
        click.get_current_context().exit(1)
