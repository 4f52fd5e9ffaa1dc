"""Each stage's code dependencies in `dvc.yaml`, computed: the project modules its script imports, directly or
through others (read from the source, see `cnnlab.lineage.code_digest`).

A package directory stands for its modules only when every one of them is in the closure; otherwise the files
are listed. `python -m cnnlab.lineage.code_deps` rewrites the lists in `dvc.yaml` (comments and all else kept);
`--check` only reports the stages whose lists differ, and exits 1 if any does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from cnnlab.lineage.code_digest import PACKAGE, file_imports, import_closure, module_file

SOURCE_DIR = f"src/{PACKAGE}"
SCRIPT = re.compile(r"^\s+cmd: python (stages/\w+\.py)\b")
STAGE = re.compile(r"^  (\w+):\s*(#.*)?$")  # a stage's name under `stages:`
CODE_DEP = re.compile(rf"^\s+- {SOURCE_DIR}/")


def script_closure(script: Path, source: Path) -> set[Path]:
    """The source files of every project module the script at `script` runs."""
    modules = import_closure(*file_imports(script, source), source=source)
    return {module_file(module, source) for module in modules}


def _python_files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*.py") if "__pycache__" not in path.parts}


def covering_deps(files: set[Path], folder: Path) -> list[Path]:
    """The fewest paths under `folder` that name exactly `files`: a folder whose Python files are all in
    `files`, else its files and subfolders one by one."""
    if _python_files(folder) <= files:
        return [folder]
    found: list[Path] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and _python_files(child):
            found += covering_deps(files, child) if _python_files(child) & files else []
        elif child in files:
            found.append(child)
    return found


def code_deps(script: str, root: Path) -> list[str]:
    """`dvc.yaml` dependency paths (relative to `root`) for the project code the stage script `script` runs."""
    source = root / SOURCE_DIR
    return [path.relative_to(root).as_posix() for path in covering_deps(script_closure(root / script, source), source)]


def rewritten(dvc_yaml: str, root: Path) -> tuple[str, list[str]]:
    """`dvc_yaml` with every stage's code deps replaced by the computed ones (placed after its script's dep),
    and the names of the stages whose lists changed."""
    lines, changed = [], []
    stage, script, old, new = "", "", [], []
    for line in dvc_yaml.splitlines(keepends=True):
        if match := STAGE.match(line):
            stage = match[1]
        elif match := SCRIPT.match(line):
            script = match[1]
        if CODE_DEP.match(line):
            old.append(line.strip().removeprefix("- "))
            continue
        lines.append(line)
        if script and line.strip() == f"- {script}":
            indent = line[: len(line) - len(line.lstrip())]
            new = code_deps(script, root)
            lines += [f"{indent}- {dep}\n" for dep in new]
        if line.strip() == "" and (old or new):  # the blank line that ends a stage
            if old != new:
                changed.append(stage)
            old, new, script = [], [], ""
    if old != new:
        changed.append(stage)
    return "".join(lines), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.lineage.code_deps", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report the stages whose lists differ; change nothing")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project root (default: here)")
    args = parser.parse_args(argv)
    path = args.root / "dvc.yaml"
    text, changed = rewritten(path.read_text(), args.root)
    if changed and not args.check:
        path.write_text(text)
    verb = "differ" if args.check else "rewritten"
    print(f"code deps {verb}: {', '.join(changed)}" if changed else "code deps: every stage's list is exact")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
