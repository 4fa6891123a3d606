"""``python -m api.cli``: the same as the ``corral`` console script."""

from api.cli.main import cli

cli()
