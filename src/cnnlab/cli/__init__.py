"""The `cnnlab` command."""

from cnnlab.cli.commands import main

__all__ = ["main"]
