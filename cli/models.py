"""`owl models`: list the registered models, their sizes and whether they are already cached."""

from __future__ import annotations

import json
from typing import Any

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
@click.option(
    "--info",
    "info_of",
    metavar="NAME",
    default=None,
    help="Print what model NAME is worth (official LVIS AP/APr, or shapes-tiny's measured "
    "ShapesWorld AP, with the source), its input size, parameters, download size and file.",
)
def models(as_json: bool, verify: bool, path_of: str | None, info_of: str | None) -> None:
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
      owl models --info owlv2-b16-ensemble
    """
    from owl.checkpoints import registry
    from owl.models.configs import VARIANTS

    if as_json and path_of is not None:
        raise click.UsageError("use either --json or --path, not both")
    if info_of is not None:
        try:
            entry = registry.get_entry(info_of)
        except KeyError as e:
            raise click.UsageError(f"--info: {e}") from None
        _print_info(entry, registry, as_json=as_json)
        return
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
            "input_size": VARIANTS[e.variant].image_size,
            "params": e.params,
            "scores": dict(e.scores),
            "scores_source": e.scores_source,
            "forward_s": e.forward_s,
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

    header = (
        "NAME",
        "VARIANT",
        "INPUT",
        "PARAMS",
        "AP/APr*",
        "FWD**",
        "SIZE",
        "CACHED",
        "DESCRIPTION",
    )
    table = [
        (
            r["name"],
            r["variant"],
            f"{r['input_size']} px",
            _params(r["params"]),
            _headline(r["scores"]),
            "-" if r["forward_s"] is None else f"{r['forward_s']:.2f}s",
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
    click.echo(f"\n{footnotes()}")
    click.echo(f"cache: {registry.checkpoint_dir()}")
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


def footnotes() -> str:
    """The table's footnotes; the forward times name the machine they were measured on."""
    from owl.checkpoints import registry

    return (
        "* official LVIS val AP / APr (scenic owl_vit README); shapes-tiny: measured ShapesWorld "
        "base AP / novel AP (docs/shapes.md). `owl models --info NAME` gives every figure and its "
        "source.\n"
        f"** seconds per image forward (f32, batch 1) on {registry.FORWARD_MACHINE}, from "
        f"`{registry.FORWARD_COMMAND}` (owl/assets/forward_times.json); '-' where not measured."
    )


def _params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _headline(scores: dict[str, float]) -> str:
    """The table's AP/APr cell: LVIS AP/APr, or ShapesWorld base/novel AP."""
    pairs = (("LVIS AP", "LVIS APr"), ("ShapesWorld base AP", "ShapesWorld novel AP"))
    for first, second in pairs:
        if first in scores and second in scores:
            return f"{scores[first]:.1f}/{scores[second]:.1f}"
    return "-"


def _print_info(entry: Any, registry: Any, *, as_json: bool) -> None:
    """--info NAME: one model's figures, with their source, and the backend it would run on."""
    from owl.export.auto import describe_default
    from owl.models.configs import VARIANTS

    info = {
        "name": entry.name,
        "variant": entry.variant,
        "description": entry.description,
        "input_size": VARIANTS[entry.variant].image_size,
        "params": entry.params,
        "download_size_mib": entry.size_mib,
        "scores": dict(entry.scores),
        "scores_source": entry.scores_source,
        "forward_s": entry.forward_s,
        "url": registry.entry_url(entry),
        "path": str(registry.cached_path(entry.name)),
        "cached": registry.is_cached(entry.name),
        "backend": describe_default(entry.name),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    size = "?" if entry.size_mib is None else f"{entry.size_mib} MiB"
    lines = [
        f"{entry.name}: {entry.description}",
        f"  variant       {entry.variant}",
        f"  input size    {info['input_size']} x {info['input_size']} px",
        f"  parameters    {'?' if entry.params is None else f'{entry.params:,}'}",
        f"  download      {size}" + ("" if entry.url else " (ships inside the package)"),
        "  forward       "
        + (
            "- (not measured: benchmarks/forward.py)"
            if entry.forward_s is None
            else f"{entry.forward_s:.2f} s per image on {registry.FORWARD_MACHINE} "
            "(owl/assets/forward_times.json, benchmarks/forward.py)"
        ),
    ]
    lines.append(f"  backend       {info['backend']}")
    for metric, value in entry.scores:
        lines.append(f"  {metric:<32}  {value:.1f}")
    if entry.scores_source:
        lines.append(f"  source: {entry.scores_source}")
    lines.append(f"  file: {info['path']}" + (" (cached)" if info["cached"] else " (not cached)"))
    click.echo("\n".join(lines))
