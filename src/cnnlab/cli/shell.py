"""`cnnlab --version` and `cnnlab completion SHELL`, which prints a completion script written by shtab.

Install the completion once, for example:
    bash:  cnnlab completion bash > ~/.local/share/bash-completion/completions/cnnlab
    zsh:   cnnlab completion zsh > ~/.zfunc/_cnnlab   (with `fpath+=~/.zfunc; autoload -U compinit; compinit`)
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator
from typing import Any

from cnnlab.util.errors import UserError

SHELLS = ("bash", "zsh", "tcsh")
# Arguments that name files or folders, by their `dest` in any command: the shell completes paths for them.
FILE_ARGUMENTS = {"params", "model", "images", "path", "cfg", "weights", "names", "chart", "summary",
                  "admin_password_file"}  # fmt: skip
FOLDER_ARGUMENTS = {"out", "metrics", "folder"}


class CompletionError(UserError):
    """Shell completion without shtab installed."""


def version() -> str:
    """The installed `cnnlab` distribution's version."""
    try:
        return importlib.metadata.version("cnnlab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (cnnlab is not installed: pip install -e .)"


class ShowVersion(argparse.Action):
    """`--version`: read from the installed distribution only when asked (argparse's own reads it at every start)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, help="print cnnlab's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


def add_version_and_completion(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction) -> None:
    """`--version` on `parser`, and the `completion` command among `commands`."""
    parser.add_argument("--version", action=ShowVersion)
    completion = commands.add_parser("completion", help="print a shell completion script", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(run=lambda args: print_completion(parser, args.shell))


def print_completion(parser: argparse.ArgumentParser, shell: str) -> int:
    try:
        import shtab
    except ImportError:
        raise CompletionError("shell completion needs shtab: pip install shtab") from None
    for action in actions(parser):
        if action.dest in FILE_ARGUMENTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.dest in FOLDER_ARGUMENTS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    print(shtab.complete(parser, shell=shell), end="")
    return 0


def actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every argument of `parser` and of its commands."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # an alias maps to its command's parser again
                yield from actions(command)
