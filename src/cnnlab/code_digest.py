"""Which project modules a piece of code runs, read from the source's import statements (nothing is imported),
and a digest of their files.

A study keys its finished trainings, and a search its trials, by the digest of the code that decides a score:
editing a plot, a report or the command line restarts neither.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from cnnlab.files import combined_hash, sha256_file

PACKAGE = "cnnlab"
SOURCE = Path(__file__).parent


def module_file(module: str) -> Path:
    """The source file of project module `module` ("cnnlab" or "cnnlab.<name>")."""
    if module == PACKAGE:
        return SOURCE / "__init__.py"
    return SOURCE / (module.removeprefix(f"{PACKAGE}.").replace(".", "/") + ".py")


@cache
def imported_modules(module: str) -> frozenset[str]:
    """The project modules `module` imports itself, those inside functions included (they run when called),
    and the package, whose `__init__` runs before any of its modules."""
    found, path = {PACKAGE}, module_file(module)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(f"{PACKAGE}.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == PACKAGE:
            found |= {f"{PACKAGE}.{a.name}" for a in node.names if module_file(f"{PACKAGE}.{a.name}").is_file()}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(f"{PACKAGE}."):
            found.add(node.module)
    return frozenset(found - {module})


def import_closure(*modules: str) -> set[str]:
    """`modules` and every project module they import, directly or through others."""
    seen: set[str] = set()
    waiting = list(modules)
    while waiting:
        module = waiting.pop()
        if module not in seen:
            seen.add(module)
            waiting.extend(imported_modules(module))
    return seen


def code_digest(*modules: str) -> str:
    """One digest of the source files of `modules`' import closure."""
    files = sorted(module_file(module) for module in import_closure(*modules))
    return combined_hash(sha256_file(path) for path in files)
