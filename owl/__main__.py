"""`python -m owl` runs the command-line interface."""

from owl.cli.main import cli

if __name__ == "__main__":
    cli()
