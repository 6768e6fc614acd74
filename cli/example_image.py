"""`owl example-image`: print the path of the example image that ships inside owl.

For the quick start from a wheel install, where the source tree's `examples/` is absent:
`owl detect "$(owl example-image)" --model shapes-tiny --query "red circle"`.
"""

from __future__ import annotations

import click

from owl.cli.options import EXIT_CODES_HELP


@click.command("example-image", epilog=EXIT_CODES_HELP)
def example_image() -> None:
    """Print the path of the ShapesWorld example image shipped in the package.

    \b
    Example:
      owl detect "$(owl example-image)" --model shapes-tiny --query "red circle" -o out/ex.json
    """
    from owl.examples import example_image as path

    try:
        click.echo(str(path()))
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
