"""Every stage depends on its script's code manifest, the manifests list exactly the project modules each script
imports, and on a copy of the project `dvc repro code` followed by `dvc status` shows which stages an edit
re-runs."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from cnnlab.lineage.code_deps import (
    SCRIPT_CMD,
    SOURCE_DIR,
    main,
    manifest,
    manifest_path,
    script_closure,
    stage_scripts,
    stale_manifests,
)
from cnnlab.lineage.code_digest import code_digest
from cnnlab.util.files import sha256_file
from cnnlab.workflows.study.plan import FOLD_CODE
from cnnlab.workflows.tuner import TRIAL_CODE
from helpers.project import GIT, ROOT, run

STUDY_STAGES = {"crossval", "ablation"}
EVALUATE_STAGES = {"evaluate", "evaluate_tuned", "evaluate_finetuned"}
CODE_STAGE = "code"


def pipeline_stages() -> dict[str, dict]:
    """Every stage's body in dvc.yaml (a foreach stage's `do`)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def test_every_stage_depends_on_its_scripts_manifest_and_on_no_source_file() -> None:
    stages = pipeline_stages()
    code = stages.pop(CODE_STAGE)
    assert code["deps"] == [SOURCE_DIR, "stages"]
    assert [next(iter(out)) for out in code["outs"]] == [manifest_path(script) for script in stage_scripts(ROOT)]
    assert all(next(iter(out.values())) == {"cache": False} for out in code["outs"])  # kept in git, diffable
    scripts_run = set()
    for name, body in stages.items():
        script = SCRIPT_CMD.match(body["cmd"])
        assert script, f"{name}: its command does not run a stage script"
        scripts_run.add(script[1])
        assert manifest_path(script[1]) in body["deps"], name
        assert not [dep for dep in body["deps"] if dep.startswith((f"{SOURCE_DIR}", "stages/"))], name
    assert scripts_run == set(stage_scripts(ROOT))  # no manifest is written for nothing


def test_the_committed_manifests_match_the_code() -> None:
    stale = stale_manifests(ROOT)
    assert not stale, f"run `python -m cnnlab.lineage.code_deps`: {sorted(stale)} differ from the code"


def test_a_manifest_is_the_sha256sum_of_its_script_and_the_modules_it_imports() -> None:
    lines = manifest("stages/train.py", ROOT).splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert lines[0].endswith("  stages/train.py")
    assert all(digest == sha256_file(ROOT / path) for path, digest in listed.items())
    assert f"{SOURCE_DIR}/training/fit.py" in listed and f"{SOURCE_DIR}/cli/commands.py" not in listed
    assert f"{SOURCE_DIR}/training/fit.py" not in manifest("stages/download.py", ROOT)


def test_the_tool_rewrites_only_the_manifests_that_differ(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for folder in ["stages", "src", "lineage"]:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / SOURCE_DIR / "plots" / "confusion.py").write_text("# an edit\n", encoding="utf-8")
    untouched = (tmp_path / "lineage" / "train.txt").stat().st_mtime_ns
    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert re.search(r"differ: lineage/evaluate\.txt$", capsys.readouterr().out.strip())
    assert main(["--root", str(tmp_path)]) == 0
    assert stale_manifests(tmp_path) == {}
    assert (tmp_path / "lineage" / "train.txt").stat().st_mtime_ns == untouched


def dvc_changed_deps(project: Path, env: dict) -> dict[str, set[str]]:
    """`dvc status`'s changed dependencies of each stage of the copy."""
    status = json.loads(run(["dvc", "status", "--json"], project, env).stdout or "{}")
    changed: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict) and "changed deps" in entry:
                changed.setdefault(stage, set()).update(entry["changed deps"])
    return changed


def one_of_each_stage() -> dict:
    """The project's params with one item in each `foreach` list: every kind of stage, each once (what an edit
    re-runs is a set of stage kinds, and DVC's status of 17 stages takes a fraction of 80's)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    study = params["crossval"]["C3"]["experiment"]
    params["datasets"] = params["datasets"][:1]
    params["experiments"] = {study: params["experiments"][study]}
    params["finetune"]["run"] = params["finetune"]["run"][:1]
    params["detect"]["run"] = list(params["detect"]["jobs"])[:1]
    for section in ("crossval", "ablation", "tune"):
        params[section] = dict(list(params[section].items())[:1])
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A git + DVC copy of the project's code and params, with the pipeline's stages as dvc.yaml has them but
    only their code dependencies (no data, no outputs but the manifests), every stage up to date in dvc.lock."""
    project = tmp_path_factory.mktemp("project")
    for name in ["claims.yaml", ".dvcignore"]:
        shutil.copy(ROOT / name, project / name)
    (project / "params.yaml").write_text(yaml.safe_dump(one_of_each_stage(), sort_keys=False))
    for folder in ["stages", "src", "lineage"]:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in pipeline["stages"].items():
        body = stage.get("do", stage)
        if name != CODE_STAGE:
            body["deps"] = [dep for dep in body["deps"] if dep.startswith("lineage/")]
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
    listed = run(["dvc", "stage", "list", "--name-only"], project, env).stdout.split()
    assert {name.split("@")[0] for name in listed} == set(pipeline["stages"])  # every kind of stage, once
    return project, env


def rerun_by_edit(project: tuple[Path, dict], module: str, *, before: bool = False) -> set[str]:
    """The stage kinds (`evaluate`, not `evaluate@F1`) that an edit of `module` (a path under src/cnnlab) re-runs:
    after the code stage has run, those `dvc status` finds changed (`before`: and before it runs, only the code
    stage). The copy is restored afterwards."""
    folder, env = project
    path = folder / SOURCE_DIR / module
    path.write_text(path.read_text() + "\n# an edit\n")
    try:
        if before:
            assert set(dvc_changed_deps(folder, env)) == {CODE_STAGE}
        run(["dvc", "repro", "--single-item", CODE_STAGE], folder, env)
        changed = dvc_changed_deps(folder, env)
    finally:
        run(["git", "checkout", "-q", "--", "."], folder, env)
    assert all(dep.startswith("lineage/") for deps in changed.values() for dep in deps)
    return {stage.split("@")[0] for stage in changed}


def test_editing_the_confusion_matrix_drawing_reruns_only_the_evaluate_stages(project: tuple[Path, dict]) -> None:
    assert rerun_by_edit(project, "plots/confusion.py", before=True) == EVALUATE_STAGES


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
