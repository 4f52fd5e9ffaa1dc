"""Which project modules a piece of code runs, read from the source's import statements (nothing is imported),
and a digest of their files.

A study keys its finished trainings, and a search its trials, by the digest of the code that decides a score:
editing a plot, a report or the command line restarts neither. The pipeline's code dependencies in `dvc.yaml`
are each stage script's import closure (`cnnlab.lineage.code_deps`).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from cnnlab.util.files import combined_hash, sha256_file

PACKAGE = "cnnlab"
SOURCE = Path(__file__).resolve().parents[1]  # src/cnnlab


def module_file(module: str, source: Path = SOURCE) -> Path:
    """The source file of project module or package `module` ("cnnlab", "cnnlab.<package>[.<module>]")."""
    relative = Path(*module.split(".")[1:])
    folder = source / relative
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def is_module(module: str, source: Path = SOURCE) -> bool:
    return module_file(module, source).is_file()


def with_packages(module: str) -> set[str]:
    """`module` and the packages above it, whose `__init__` files (where they have one) run when it is imported."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run: those inside functions included, `if TYPE_CHECKING:` blocks not."""
    found: list[ast.Import | ast.ImportFrom] = []
    waiting = [tree]
    while waiting:
        node = waiting.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        waiting.extend(child for child in ast.iter_child_nodes(node) if not _type_checking_only(child))
    return found


def file_imports(path: Path, source: Path = SOURCE) -> frozenset[str]:
    """The project modules the Python file at `path` imports itself, with the packages whose `__init__` runs on
    the way."""
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.level == 0 and node.module is not None:
            # `from cnnlab.pkg import name`: the module `name` if there is one, else a name in the package
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [node.module, *(name for name in submodules if is_module(name, source))]
        else:
            names = []
        for name in names:
            if name == PACKAGE or name.startswith(f"{PACKAGE}."):
                found |= {module for module in with_packages(name) if is_module(module, source)}
    return frozenset(found)


@cache
def imported_modules(module: str, source: Path = SOURCE) -> frozenset[str]:
    """The project modules `module` imports itself (see `file_imports`)."""
    return file_imports(module_file(module, source), source) - {module}


def import_closure(*modules: str, source: Path = SOURCE) -> set[str]:
    """`modules` and every project module they import, directly or through others."""
    seen: set[str] = set()
    waiting = [package for module in modules for package in with_packages(module) if is_module(package, source)]
    while waiting:
        module = waiting.pop()
        if module not in seen:
            seen.add(module)
            waiting.extend(imported_modules(module, source))
    return seen


def code_digest(*modules: str, source: Path = SOURCE) -> str:
    """One digest of the source files of `modules`' import closure."""
    files = sorted(module_file(module, source) for module in import_closure(*modules, source=source))
    return combined_hash(sha256_file(path) for path in files)
