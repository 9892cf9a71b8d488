"""The `ferkit` command line: one module per group of commands, each a thin shell over the package."""

from ferkit.cli import adapt, data, evaluate, predict, release, serve, train  # noqa: F401  (registers them)
from ferkit.cli.base import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    app()
