"""The ``tierwise`` command, one module per command group."""

from tierwise.cli.app import app, main

__all__ = ["app", "main"]
