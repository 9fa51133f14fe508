"""The `keyplane` command line (Typer + Rich). Thin: parse, call the service, print."""

from keyplane.cli.main import app, main

__all__ = ["app", "main"]
