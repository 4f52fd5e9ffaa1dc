"""A study's and a search's saved results are keyed by the code that decides a score: its import closure, read
from the source. Drawing, report and command-line code are outside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab import code_digest
from cnnlab.code_digest import code_digest as digest
from cnnlab.code_digest import import_closure
from cnnlab.study import FOLD_CODE
from cnnlab.tuning import TRIAL_CODE

OUTSIDE_SCORES = {"cnnlab.plots", "cnnlab.study_outputs", "cnnlab.fold_stats", "cnnlab.report", "cnnlab.cli",
                  "cnnlab.tune_outputs", "cnnlab.explain", "cnnlab.layer_views"}  # fmt: skip


@pytest.mark.parametrize("code", [FOLD_CODE, TRIAL_CODE])
def test_the_score_deciding_code_holds_training_and_leaves_out_drawing_and_reports(code: str) -> None:
    closure = import_closure(code)
    # scan_steps is imported inside a function of backend: it runs when a model is compiled, so it counts
    assert {"cnnlab", "cnnlab.training", "cnnlab.models", "cnnlab.augment", "cnnlab.scan_steps"} <= closure
    assert not closure & OUTSIDE_SCORES


@pytest.mark.slow  # a new interpreter each, importing Keras
@pytest.mark.parametrize("module", ["cnnlab.study", "cnnlab.cli"])  # the CLI imports most of the package
def test_the_closure_holds_every_project_module_python_imports_for_it(module: str) -> None:
    """Python imports the top-level imports only; the closure read from the source holds all of them."""
    listed = "import sys, {0}; print(' '.join(m for m in sys.modules if m == 'cnnlab' or m.startswith('cnnlab.')))"
    done = subprocess.run([sys.executable, "-c", listed.format(module)], capture_output=True, text=True, check=True)
    imported = set(done.stdout.split())
    assert module in imported and imported <= import_closure(module), imported - import_closure(module)


def test_the_digest_changes_with_a_module_in_the_closure_only(tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "cnnlab"
    shutil.copytree(code_digest.SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_digest, "SOURCE", copy)
    code_digest.imported_modules.cache_clear()
    try:
        before = digest(FOLD_CODE)
        for outside in ("plots.py", "study_outputs.py", "cli.py"):
            (copy / outside).write_text((copy / outside).read_text() + "\n# a new colour\n")
        assert digest(FOLD_CODE) == before
        (copy / "scan_steps.py").write_text((copy / "scan_steps.py").read_text() + "\n# a changed step\n")
        assert digest(FOLD_CODE) != before
    finally:
        code_digest.imported_modules.cache_clear()
