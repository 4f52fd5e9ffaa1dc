"""Each stage's code dependencies in dvc.yaml are exactly the project modules its script imports, and on a copy of
the project `dvc status` shows which stages an edit re-runs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from cnnlab.lineage.code_deps import SOURCE_DIR, code_deps, covering_deps, rewritten, script_closure
from cnnlab.lineage.code_digest import code_digest
from cnnlab.workflows.study.plan import FOLD_CODE
from cnnlab.workflows.tuner import TRIAL_CODE
from helpers.project import GIT, ROOT, run

STUDY_STAGES = {"crossval", "ablation"}
EVALUATE_STAGES = {"evaluate", "evaluate_tuned", "evaluate_finetuned"}


def listed_code_deps() -> dict[str, list[str]]:
    """Every stage kind's project-code deps as dvc.yaml lists them."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        found[name] = [dep for dep in body["deps"] if dep.startswith(f"{SOURCE_DIR}/")]
    return found


def test_every_stage_lists_exactly_the_project_code_its_script_imports() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    _, changed = rewritten(text, ROOT)
    assert not changed, f"run `python -m cnnlab.lineage.code_deps`: the lists of {changed} are not exact"
    stages = yaml.safe_load(text)["stages"]
    for name, deps in listed_code_deps().items():
        script = next(dep for dep in stages[name].get("do", stages[name])["deps"] if dep.startswith("stages/"))
        assert deps == code_deps(script, ROOT), name
    # the lists are not empty by accident: training code is in train's, not in the data stages'
    assert f"{SOURCE_DIR}/training/fit.py" in listed_code_deps()["train"]
    assert f"{SOURCE_DIR}/training/fit.py" not in listed_code_deps()["download"]


def test_a_package_directory_is_a_dependency_only_when_all_its_modules_are(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {name: package / name for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py")}
    for path in files.values():
        path.write_text("")
    assert covering_deps(set(files.values()), package) == [package]
    partial = {files["__init__.py"], files["a.py"], files["sub/__init__.py"], files["sub/c.py"]}
    assert covering_deps(partial, package) == [files["__init__.py"], files["a.py"], package / "sub"]


def test_the_code_deps_tool_rewrites_a_wrong_list_and_keeps_the_rest_of_dvc_yaml() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    broken = text.replace(f"        - {SOURCE_DIR}/plots/confusion.py\n", "", 1)
    extra = f"        - stages/train.py\n        - {SOURCE_DIR}/cli\n"
    broken = broken.replace("        - stages/train.py\n", extra, 1)
    fixed, changed = rewritten(broken, ROOT)
    assert set(changed) == {"train", "evaluate"} and fixed == text


def dvc_changed_deps(project: Path, env: dict) -> dict[str, set[str]]:
    """`dvc status`'s changed dependencies of each stage of the copy."""
    status = json.loads(run(["dvc", "status", "--json"], project, env).stdout or "{}")
    changed: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict) and "changed deps" in entry:
                changed.setdefault(stage, set()).update(entry["changed deps"])
    return changed


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A git + DVC copy of the project's code and params, with the pipeline's stages as dvc.yaml has them but
    only their code dependencies (no data, no outputs), each stage's hashes recorded in a fresh dvc.lock."""
    project = tmp_path_factory.mktemp("project")
    for name in ["params.yaml", "claims.yaml", ".dvcignore"]:
        shutil.copy(ROOT / name, project / name)
    for folder in ["stages", "src"]:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage in pipeline["stages"].values():
        body = stage.get("do", stage)
        body["deps"] = [dep for dep in body["deps"] if dep.startswith(("stages/", f"{SOURCE_DIR}/"))]
        for outputs in ("outs", "metrics", "plots"):
            body.pop(outputs, None)
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(project)}
    run(["git", "init", "-q"], project, env)
    run(["dvc", "init", "-q"], project, env)
    run(["dvc", "commit", "--force", "--quiet"], project, env)  # every stage up to date with the code as it is
    run([*GIT, "add", "-A"], project, env)
    run([*GIT, "commit", "-qm", "copy"], project, env)
    assert dvc_changed_deps(project, env) == {}
    return project, env


def rerun_by_edit(project: tuple[Path, dict], module: str) -> set[str]:
    """The stage kinds (`evaluate`, not `evaluate@F1`) `dvc status` finds changed by an edit of `module` (a path
    under src/cnnlab)."""
    folder, env = project
    path = folder / SOURCE_DIR / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        changed = dvc_changed_deps(folder, env)
    finally:
        path.write_text(original)
    edited = f"{SOURCE_DIR}/{module}"
    assert all(edited == dep or edited.startswith(f"{dep}/") for deps in changed.values() for dep in deps)
    return {stage.split("@")[0] for stage in changed}


def test_editing_the_confusion_matrix_drawing_reruns_only_the_evaluate_stages(project: tuple[Path, dict]) -> None:
    assert rerun_by_edit(project, "plots/confusion.py") == EVALUATE_STAGES


def test_editing_the_champion_gate_reruns_every_evaluate_stage_and_nothing_upstream(
    project: tuple[Path, dict],
) -> None:
    assert rerun_by_edit(project, "tracking/registry.py") == EVALUATE_STAGES


def test_editing_the_fold_statistics_reruns_the_studies_and_nothing_upstream(project: tuple[Path, dict]) -> None:
    assert rerun_by_edit(project, "workflows/study/stats.py") == STUDY_STAGES


def test_editing_the_command_line_reruns_no_stage_and_restarts_no_study(project: tuple[Path, dict]) -> None:
    folder, _ = project
    source = folder / SOURCE_DIR
    digests = {code: code_digest(*code, source=source) for code in (FOLD_CODE, TRIAL_CODE)}
    assert rerun_by_edit(project, "cli/commands.py") == set()
    cli = source / "cli" / "commands.py"
    original = cli.read_text()
    cli.write_text(original + "\n# an edit\n")
    try:
        assert {code: code_digest(*code, source=source) for code in digests} == digests
    finally:
        cli.write_text(original)


def test_editing_a_box_plot_reruns_the_studies_but_retrains_no_fold(project: tuple[Path, dict]) -> None:
    folder, _ = project
    source = folder / SOURCE_DIR
    before = code_digest(*FOLD_CODE, source=source)
    assert rerun_by_edit(project, "plots/studies.py") == STUDY_STAGES
    boxplot = source / "plots" / "studies.py"
    original = boxplot.read_text()
    boxplot.write_text(original + "\n# a new colour\n")
    try:
        assert code_digest(*FOLD_CODE, source=source) == before
    finally:
        boxplot.write_text(original)


def test_a_stage_scripts_closure_is_read_from_its_imports() -> None:
    closure = script_closure(ROOT / "stages" / "evaluate.py", ROOT / SOURCE_DIR)
    source = ROOT / SOURCE_DIR
    assert {source / "tracking" / "registry.py", source / "plots" / "confusion.py"} <= closure
    assert source / "training" / "fit.py" not in closure and source / "cli" / "commands.py" not in closure
