"""The `ferkit` command line: one module per group of commands, each a thin shell over the package."""

from ferkit.cli import data, evaluate, predict, release, serve, train  # noqa: F401  (registers the commands)
from ferkit.cli.base import app, user_errors
from ferkit.cli_adapt import adapt_command

app.command("adapt")(user_errors(adapt_command))

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()
