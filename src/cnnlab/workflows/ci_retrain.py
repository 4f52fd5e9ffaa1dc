"""Retraining as CI runs it (.github/workflows/retrain.yml calls `cnnlab retrain`), the same steps on any machine:
set the budget, `dvc pull` from the remote, `dvc repro`, `dvc push`, the metrics and params diff against a base
revision, and the Model Registry's promotion decisions (the evaluate stage makes them), as one Markdown summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from cnnlab.catalog.datasets import DATASETS
from cnnlab.params import Params, load_params
from cnnlab.tracking.registry import CHAMPION
from cnnlab.tracking.runs import tracking_uri
from cnnlab.tracking.uris import redact
from cnnlab.util.errors import UserError
from cnnlab.util.files import write_text

REMOTE_NAME = "cnnlab-ci"  # the remote --remote-url adds to .dvc/config.local (never committed)


class RetrainError(UserError):
    """Something to fix before (or after) retraining; the message says what and how."""


class StepFailed(RuntimeError):
    """A DVC step failed (`dvc repro` among them): not bad input but a failure, `cnnlab retrain` exits 1."""


@dataclass(frozen=True)
class Promotion:
    """One evaluated model's registry decision, read back from its evaluate run."""

    model: str
    version: str
    test_accuracy: float
    champion_test_accuracy: float | None  # the champion's before this run, re-scored on the same test set
    promoted: bool
    reason: str


@dataclass
class Outcome:
    base: str
    budget: str
    metrics_diff: str = ""
    params_diff: str = ""
    pushed: str = ""  # dvc push's last line
    promotions: list[Promotion] = field(default_factory=list)


def dvc(args: list[str], root: Path, *, capture: bool = False) -> str:
    """Run `dvc ...` in `root` (the interpreter's own DVC), its output streamed unless captured; a failure raises
    StepFailed."""
    shown_args = redact(" ".join(args))  # a remote URL may hold a password; CI logs are read by many
    print("$ dvc", shown_args, flush=True)
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, text=True,
                          stdout=subprocess.PIPE if capture else None)  # fmt: skip
    if done.returncode != 0:
        shown = f":\n{redact(done.stdout)}" if capture and done.stdout else " (its output is above)"
        raise StepFailed(f"`dvc {shown_args}` failed with exit code {done.returncode}{shown}")
    return done.stdout or ""


def git(args: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, text=True, capture_output=True)


def check_project(root: Path, base: str) -> None:
    """Fail before any compute when `root` is not a DVC project in git or the base revision is unknown."""
    if not (root / "dvc.yaml").is_file() or not (root / ".dvc").is_dir():
        raise RetrainError(f"{root} is not a DVC project (no dvc.yaml or .dvc): run `cnnlab retrain` in its root")
    if git(["rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], root).returncode != 0:
        raise RetrainError(
            f"base revision {base!r} not found: fetch it (`git fetch origin {base}`; in GitHub Actions, "
            "actions/checkout with fetch-depth: 0) or pass --base <revision>"
        )


def use_remote(root: Path, remote_url: str | None) -> str:
    """The DVC remote to pull from and push to: `remote_url` (added to .dvc/config.local), else the default."""
    if remote_url:
        dvc(["remote", "add", "--local", "--force", "--default", REMOTE_NAME, remote_url], root, capture=True)
    try:
        name = dvc(["remote", "default"], root, capture=True).strip()
    except StepFailed:  # DVC exits 1 when no default is set
        name = ""
    if not name:
        raise RetrainError(
            "no default DVC remote: add one (`dvc remote add -d storage s3://bucket/cnnlab`), pass --remote-url, "
            "or set the DVC_REMOTE_URL secret for the workflow; --no-pull --no-push retrains without one"
        )
    # Re-hash what is pulled: whoever can write to the remote must not be able to swap in other files
    dvc(["remote", "modify", "--local", name, "verify", "true"], root, capture=True)
    return name


def set_in_place(params_file: Path, pattern: str, replacement: str, what: str) -> bool:
    """Replace the first line of params.yaml that `pattern` matches (comments kept); True when it changed."""
    text = params_file.read_text()
    new, count = re.subn(pattern, replacement, text, count=1)
    if count == 0:
        raise RetrainError(f"{params_file} has no {what}")
    if new == text:
        return False
    write_text(params_file, new)
    return True


def set_budget(params_file: Path, budget: str) -> bool:
    """Set params.yaml's top-level `budget:` in place; True when it changed."""
    what = f"top-level `budget:` line to set to {budget!r}"
    return set_in_place(params_file, r"(?m)^budget:[ \t]*[^\s#]+", f"budget: {budget}", what)


def turn_off_registration(params_file: Path) -> bool:
    """Set params.yaml's `mlflow.register_model:` to false in place: evaluated models are then neither registered
    nor promoted. True when it changed."""
    what = "`register_model:` line under `mlflow:` to set to false"
    return set_in_place(params_file, r"(?m)^([ \t]+register_model:[ \t]*)[^\s#]+", r"\g<1>false", what)


def offline_datasets(params: Params) -> set[str]:
    """The built-in data sets in use that have no online source (a runner without the offline mirror lacks them)."""
    return {name for name in params.datasets if name in DATASETS and DATASETS[name].online is None}


def online_stages(root: Path, params: Params) -> list[str]:
    """Every stage but those that need a data set without an online source, and the report (which needs them
    all): what a runner without the offline mirror can reproduce."""
    offline = offline_datasets(params)
    kept = []
    for name in dvc(["stage", "list", "--name-only"], root, capture=True).split():
        _, _, target_id = name.partition("@")
        if target_id and params.target(target_id).dataset not in offline:
            kept.append(name)
    return kept


def stage_targets(targets: list[str]) -> list[str]:
    """Targets for pull and push: a stage's own outputs and those of every stage it depends on."""
    return [*targets, "--with-deps"] if targets else []


def is_empty_table(markdown: str) -> bool:
    """DVC prints a header and no rows when nothing changed."""
    return sum(1 for line in markdown.splitlines() if line.startswith("|")) <= 2


def promotions_since(started_ms: int, experiment: str, root: Path) -> list[Promotion]:
    """The registry decisions of the evaluate runs that started after `started_ms`."""
    mlflow.set_tracking_uri(tracking_uri(root))
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"attributes.start_time >= {started_ms} AND tags.stage = 'evaluate'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    found = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if "registered_version" not in tags:  # registration off (mlflow.register_model: false) or the run failed
            continue
        scores = metrics["test_accuracy"], metrics.get("champion_test_accuracy")
        model, version = tags["registered_model"], tags["registered_version"]
        found.append(Promotion(model, version, *scores, bool(metrics["promoted"]), tags["promotion"]))
    return found


def promotion_table(promotions: list[Promotion]) -> str:
    if not promotions:
        return "No model was evaluated in this run: no stage that evaluates one had changed.\n"
    lines = ["| Model | Version | Test accuracy | Champion before | Decision |", "|---|---|---|---|---|"]
    for p in promotions:
        before = "–" if p.champion_test_accuracy is None else f"{p.champion_test_accuracy:.4f}"
        verdict = f"**{CHAMPION}** ({p.reason})" if p.promoted else f"kept the champion ({p.reason})"
        lines.append(f"| {p.model} | {p.version} | {p.test_accuracy:.4f} | {before} | {verdict} |")
    return "\n".join(lines) + "\n"


def metrics_section(table: str) -> str:
    """DVC's metrics diff with the per-class rows (classification reports) folded away under the headline ones."""
    if is_empty_table(table):
        return "No metric changed.\n"
    lines = table.strip().splitlines()
    per_class = [row for row in lines[2:] if "classification_report.json" in row]
    headline = [row for row in lines if row not in per_class]
    folded = "\n".join([*lines[:2], *per_class])
    details = f"\n<details><summary>Per-class metrics</summary>\n\n{folded}\n\n</details>\n" if per_class else ""
    return "\n".join(headline) + "\n" + details


def summary(outcome: Outcome) -> str:
    """The job summary and pull-request comment."""
    metrics = metrics_section(outcome.metrics_diff)
    params = outcome.params_diff if not is_empty_table(outcome.params_diff) else "No parameter changed.\n"
    pushed = f"Outputs pushed to the DVC remote: {outcome.pushed}\n" if outcome.pushed else "Nothing was pushed.\n"
    return (
        f"## cnnlab retrain ({outcome.budget} budget) against `{outcome.base}`\n\n"
        f"### Metrics\n\n{metrics}\n### Parameters\n\n{params}\n"
        f"### Model Registry\n\n{promotion_table(outcome.promotions)}\n{pushed}"
    )


def commit_message(outcome: Outcome) -> str:
    promoted = ", ".join(f"{p.model} v{p.version}" for p in outcome.promotions if p.promoted)
    return f"retrain ({outcome.budget} budget): " + (f"{promoted} champion" if promoted else "no new champion")


def commit_results(root: Path, branch: str, message: str) -> bool:
    """Commit what the run changed (dvc.lock, params.yaml, DVC's git-tracked metrics and plots) on `branch`,
    created or reset at the current commit; False when nothing changed."""
    for args in (["switch", "-C", branch], ["add", "-A"]):
        done = git(args, root)
        if done.returncode != 0:
            raise RetrainError(f"`git {' '.join(args)}` failed: {done.stderr.strip()}")
    if git(["diff", "--cached", "--quiet"], root).returncode == 0:
        return False
    done = git(["commit", "-q", "-m", message], root)
    if done.returncode != 0:
        raise RetrainError(f"`git commit` on {branch} failed: {done.stderr.strip()}")
    return True


def retrain(root: Path, *, base: str, budget: str | None = None, targets: list[str] | None = None,
            remote_url: str | None = None, pull: bool = True, push: bool = True, register: bool = True,
            online_only: bool = False) -> Outcome:  # fmt: skip
    """Every step, in order; a problem that can be seen before training stops it there.

    `register=False` registers and promotes nothing; `online_only` leaves out the stages that need a data set
    without an online source (what a pull request's hosted runner runs)."""
    targets = targets or []
    check_project(root, base)
    if pull or push:
        use_remote(root, remote_url)
    if budget is not None:
        set_budget(root / "params.yaml", budget)
    if not register:
        turn_off_registration(root / "params.yaml")
    params = load_params(root / "params.yaml")  # a ParamsError names the problem before any stage runs
    if online_only:
        targets = targets or online_stages(root, params)
        print(f"left out, no online source: {', '.join(sorted(offline_datasets(params))) or 'nothing'}", flush=True)
    outcome = Outcome(base=base, budget=params.budget)
    if pull:
        dvc(["pull", "--allow-missing", *stage_targets(targets)], root)
    started_ms = int(time.time() * 1000)
    dvc(["repro", *targets], root)
    if push:
        lines = dvc(["push", *stage_targets(targets)], root, capture=True).strip().splitlines()
        outcome.pushed = lines[-1] if lines else "done"
    outcome.metrics_diff = dvc(["metrics", "diff", "--md", base], root, capture=True)
    outcome.params_diff = dvc(["params", "diff", "--md", base], root, capture=True)
    outcome.promotions = promotions_since(started_ms, params.mlflow.experiment_name, root)
    return outcome


def publish(text: str, summary_file: Path | None) -> None:
    """Print the summary, write it to `summary_file`, and append it to GitHub's job summary when there is one."""
    print(text)
    if summary_file is not None:
        write_text(summary_file, text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(text)
