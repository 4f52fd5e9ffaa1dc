"""A study's and a search's saved results are keyed by the code that decides a score: its import closure, read
from the source. Drawing, report, logging and command-line code are outside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.lineage import code_digest
from cnnlab.lineage.code_digest import code_digest as digest
from cnnlab.lineage.code_digest import import_closure, is_module
from cnnlab.workflows.study.plan import FOLD_CODE
from cnnlab.workflows.tuner import TRIAL_CODE

OUTSIDE_SCORES = {
    *("cnnlab.plots.studies", "cnnlab.plots.confusion", "cnnlab.plots.search", "cnnlab.report", "cnnlab.cli"),
    *("cnnlab.workflows.study.outputs", "cnnlab.workflows.study.stats", "cnnlab.workflows.search_outputs"),
    *("cnnlab.tracking.runs", "cnnlab.tracking.epochs", "cnnlab.explain.pictures", "cnnlab.pipeline.stage"),
}
TRAINING = {"cnnlab", "cnnlab.training.fit", "cnnlab.catalog.networks", "cnnlab.training.augment"}


@pytest.mark.parametrize("code", [FOLD_CODE, TRIAL_CODE])
def test_the_score_deciding_code_holds_training_and_leaves_out_drawing_logging_and_reports(code: tuple) -> None:
    closure = import_closure(*code)
    # scan_steps is imported inside a function of backend: it runs when a model is compiled, so it counts
    assert {*TRAINING, "cnnlab.training.scan_steps"} <= closure
    assert not closure & OUTSIDE_SCORES


def small_package(folder: Path, main: str) -> Path:
    """A package `cnnlab` in `folder` with modules a.b and a.c, and `main` importing them as `main` says."""
    package = folder / "cnnlab"
    (package / "a").mkdir(parents=True)
    for name, text in {"__init__.py": "", "a/__init__.py": "", "a/b.py": "X = 1\n", "a/c.py": "Y = 2\n"}.items():
        (package / name).write_text(text)
    (package / "main.py").write_text(main)
    return package


def test_imports_inside_functions_count_and_those_for_type_checking_only_do_not(tmp_path: Path) -> None:
    both = small_package(tmp_path / "both", "from cnnlab.a import b\ndef later():\n    import cnnlab.a.c\n")
    assert import_closure("cnnlab.main", source=both) == {"cnnlab", "cnnlab.main", "cnnlab.a", "cnnlab.a.b",
                                                           "cnnlab.a.c"}  # fmt: skip
    typing_only = small_package(tmp_path / "typing", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    import cnnlab.a.c\n")  # fmt: skip
    assert import_closure("cnnlab.main", source=typing_only) == {"cnnlab", "cnnlab.main"}


@pytest.mark.slow  # a new interpreter each, importing Keras
@pytest.mark.parametrize("module", ["cnnlab.workflows.study.plan", "cnnlab.cli"])  # the CLI imports most modules
def test_the_closure_holds_every_project_module_python_imports_for_it(module: str) -> None:
    """Python imports the top-level imports only; the closure read from the source holds all of them."""
    listed = "import sys, {0}; print(' '.join(m for m in sys.modules if m == 'cnnlab' or m.startswith('cnnlab.')))"
    done = subprocess.run([sys.executable, "-c", listed.format(module)], capture_output=True, text=True, check=True)
    imported = {name for name in done.stdout.split() if is_module(name)}  # namespace packages have no file
    assert module in imported and imported <= import_closure(module), imported - import_closure(module)


def test_the_digest_changes_with_a_module_in_the_closure_only(tmp_path: Path) -> None:
    copy = tmp_path / "cnnlab"
    shutil.copytree(code_digest.SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = digest(*FOLD_CODE, source=copy)
    for outside in ("plots/studies.py", "workflows/study/outputs.py", "tracking/epochs.py", "cli/commands.py"):
        (copy / outside).write_text((copy / outside).read_text() + "\n# a new colour\n")
    assert digest(*FOLD_CODE, source=copy) == before
    steps = copy / "training" / "scan_steps.py"
    steps.write_text(steps.read_text() + "\n# a changed step\n")
    assert digest(*FOLD_CODE, source=copy) != before
