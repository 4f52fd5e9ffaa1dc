"""Each stage script's code manifest: the sha256 of every file of the project code it runs (the script and the
project modules it imports, directly or through others, read from the source, see `cnnlab.lineage.code_digest`).

The pipeline's `code` stage writes one manifest per stage script, `lineage/<script>.txt`, in `sha256sum` format,
and every other stage depends on its script's manifest instead of on the source files themselves. An edit
re-runs exactly the stages whose manifest it changes, and `dvc.lock` records one code dependency per stage
instead of dozens, which keeps DVC's own work per stage small.

`python -m cnnlab.lineage.code_deps` rewrites the manifests that differ; `--check` only reports them, and exits 1
if any does.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

from cnnlab.lineage.code_digest import PACKAGE, file_imports, import_closure, module_file
from cnnlab.util.files import sha256_file, write_text

SOURCE_DIR = f"src/{PACKAGE}"
SCRIPTS_DIR = "stages"
MANIFESTS_DIR = "lineage"
SCRIPT_CMD = re.compile(rf"^python ({SCRIPTS_DIR}/\w+\.py)\b")


def script_closure(script: Path, source: Path) -> set[Path]:
    """The source files of every project module the script at `script` runs."""
    modules = import_closure(*file_imports(script, source), source=source)
    return {module_file(module, source) for module in modules}


def manifest_path(script: str) -> str:
    """The manifest of stage script `script` ("stages/train.py" → "lineage/train.txt"), relative to the root."""
    return f"{MANIFESTS_DIR}/{Path(script).stem}.txt"


def stage_scripts(root: Path) -> list[str]:
    """Every stage script, relative to `root`."""
    return sorted(path.relative_to(root).as_posix() for path in (root / SCRIPTS_DIR).glob("*.py"))


def manifest(script: str, root: Path, digest: Callable[[Path], str] = sha256_file) -> str:
    """`sha256sum` lines for `script` and the project source files it runs, sorted by path."""
    closure = script_closure(root / script, root / SOURCE_DIR)
    paths = [script, *sorted(path.relative_to(root).as_posix() for path in closure)]
    return "".join(f"{digest(root / path)}  {path}\n" for path in paths)


def stale_manifests(root: Path) -> dict[str, str]:
    """The manifests (path → fresh text) whose file is missing or differs from the code as it is."""
    digest = functools.cache(sha256_file)  # most modules are in most scripts' closures: each file is read once
    fresh = {manifest_path(script): manifest(script, root, digest) for script in stage_scripts(root)}
    return {
        path: text for path, text in fresh.items() if not (root / path).is_file() or (root / path).read_text() != text
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.lineage.code_deps", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report the manifests that differ; change nothing")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project root (default: here)")
    args = parser.parse_args(argv)
    stale = stale_manifests(args.root)
    if not args.check:
        for path, text in stale.items():  # an unchanged manifest keeps its file, so DVC sees no change
            write_text(args.root / path, text)
    verb = "differ" if args.check else "rewritten"
    print(f"code manifests {verb}: {', '.join(sorted(stale))}" if stale else "code manifests: all up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
