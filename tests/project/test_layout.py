"""The package layout docs/architecture.md draws: small modules, and dependencies that point one way, down the layers;
and the tests' layout that mirrors it: one folder per package, shared helpers in tests/helpers only."""

from __future__ import annotations

import ast
import contextlib
import textwrap
from collections import Counter
from pathlib import Path

from cnnlab.lineage.code_digest import PACKAGE, SOURCE, imported_modules
from helpers.project import ROOT

TESTS = ROOT / "tests"

# Top to bottom: a package imports only packages of the layers below its own.
LAYERS = [
    {"cli"},
    {"workflows"},
    {"pipeline"},
    {"explain", "detect", "report"},
    {"tracking"},
    {"training"},
    {"data", "nets"},
    {"params"},
    {"catalog", "plots", "lineage"},
    {"util"},
]
LONGEST_MODULE = 400


def subpackages() -> set[str]:
    """The folders of src/cnnlab that hold modules (namespace packages, most of them)."""
    return {path.name for path in SOURCE.iterdir() if path.is_dir() and list(path.glob("*.py"))}


def project_modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        found[".".join([PACKAGE, *parts])] = path
    return found


def test_every_subpackage_has_a_layer_and_no_module_is_long() -> None:
    assert subpackages() == set().union(*LAYERS)
    lengths = {name: len(path.read_text().splitlines()) for name, path in project_modules().items()}
    long = {name: length for name, length in lengths.items() if length > LONGEST_MODULE}
    assert not long, f"modules over {LONGEST_MODULE} lines: {long}"


def test_dependencies_point_down_the_layers() -> None:
    layer = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}
    upward = []
    for module in project_modules():
        parts = module.split(".")
        if len(parts) < 2:
            continue
        for imported in imported_modules(module):
            target = imported.split(".")
            if len(target) > 1 and target[1] != parts[1] and layer[target[1]] <= layer[parts[1]]:
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(upward)


def imports_in(source: str) -> list[str]:
    """The modules a source imports from, at any depth, and in the scripts it hands to subprocesses (string
    constants that parse as Python with an import)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            with contextlib.suppress(SyntaxError):  # prose, not a script
                found += imports_in(textwrap.dedent(node.value))
    return found


def test_no_test_file_imports_another_or_conftest() -> None:
    """Shared code lives in tests/helpers: a test file that imported another (or conftest.py) would depend on
    where pytest put which folder on sys.path, and run that file's module-level code."""
    offending = []
    for path in sorted(TESTS.rglob("*.py")):
        for module in imports_in(path.read_text()):
            top = module.split(".")[0]
            if top == "conftest" or top.startswith("test_"):
                offending.append(f"{path.relative_to(TESTS)} imports {module}")
    assert not offending, "\n".join(offending)


def test_the_tests_mirror_the_packages() -> None:
    """tests/<package>/test_*.py for the package it tests (tests/project for the project as a whole), no
    __init__.py in those folders, and each test file's name unique: pytest imports them by their base name."""
    packages = subpackages()
    folders = {path.name for path in TESTS.iterdir() if path.is_dir() and not path.name.startswith((".", "__"))}
    assert folders - {"helpers", "project"} <= packages, folders - packages
    assert not list(TESTS.glob("test_*.py")), "a test file directly under tests/"
    tests = [path for path in TESTS.rglob("test_*.py") if "helpers" not in path.relative_to(TESTS).parts]
    assert not [path for path in tests if (path.parent / "__init__.py").exists()]
    twice = [name for name, count in Counter(path.name for path in tests).items() if count > 1]
    assert not twice, twice
    assert not [path for path in TESTS.joinpath("helpers").rglob("test_*.py")]  # helpers hold no tests
