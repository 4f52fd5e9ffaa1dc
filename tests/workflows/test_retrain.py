"""`cnnlab retrain` as the workflow runs it, in a temporary git repository with a local DVC remote, logging over
HTTP to a team tracking server (mlflow server on PostgreSQL): a baseline, a params change that improves the model
and one that makes it worse. Then what the diff, the remote, the registry, PostgreSQL and the MLflow UI hold."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import mlflow
import psycopg
import pytest
import yaml
from playwright.sync_api import sync_playwright

from cnnlab.tracking.server import cluster, mlflow_server
from cnnlab.workflows import ci_retrain as retraining
from helpers.project import GIT, copy_project, free_port, run

pytestmark = pytest.mark.slow  # whole-pipeline runs: the full suite, not the inner loop

CNNLAB = [sys.executable, "-m", "cnnlab.cli"]
BASELINE, BETTER, WORSE = 1000, 6000, 150  # F0's training images: the knob each change turns


def tiny_project(params: dict) -> None:
    """F0 (fast, dense) is the model that changes; C1 and its cross-validation C3 give nested fold runs."""
    params["datasets"] = ["fashion_mnist"]
    params["finetune"]["run"] = []
    params["tune"], params["ablation"] = {}, {}
    f0, c1 = params["experiments"]["F0"], params["experiments"]["C1"] | {"dataset": "fashion_mnist"}
    f0["budgets"] = {"quick": {"epochs": 1, "train_samples": BASELINE}}
    c1["budgets"] = {"quick": {"epochs": 1, "train_samples": 600}}
    params["experiments"] = {"F0": f0, "C1": c1}
    params["crossval"] = {"C3": params["crossval"]["C3"]}
    params["crossval"]["C3"]["budgets"]["quick"] = {"epochs": 1, "batch_size": 32, "train_samples": 600, "k": 2}
    params["crossval"]["C3"]["parallel"] = 1  # 2 folds of 300 images: starting worker processes would cost more


def set_f0_samples(project: Path, samples: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["experiments"]["F0"]["budgets"]["quick"]["train_samples"] = samples
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def team_server():
    """PostgreSQL and mlflow server on 127.0.0.1; PostgreSQL runs as `postgres` under root, so its folder is
    made where that user can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-server-"))
    folder.chmod(0o755)
    try:
        with contextlib.ExitStack() as stack:
            backend = stack.enter_context(cluster(folder / "postgres", free_port()))
            log = folder / "server.log"
            # One server process: one pipeline logs to it at a time
            url = stack.enter_context(mlflow_server(backend, folder / "artifacts", "127.0.0.1", free_port(), log,
                                                    workers=1))  # fmt: skip
            yield url, backend, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory, team_server, fashion_dir: Path) -> dict:
    url = team_server[0]
    project, remote = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("dvc-remote")
    env = copy_project(project, tiny_project) | {"MLFLOW_TRACKING_URI": url}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "branch", "-M", "main"], project, env)
    retrain = [*CNNLAB, "retrain", "--base", "main", "--remote-url", str(remote)]
    summaries = {}
    # The baseline, its results committed on main (what merging retrain/main would do).
    run([*retrain, "--summary", "baseline.md", "--commit-to", "main"], project, env)
    summaries["baseline"] = (project / "baseline.md").read_text()
    # A pull request that improves F0, its results committed on retrain/better.
    run([*GIT, "switch", "-q", "-c", "better"], project, env)
    set_f0_samples(project, BETTER)
    run([*GIT, "commit", "-qam", "more training images"], project, env)
    run([*retrain, "--summary", "../better.md", "--commit-to", "retrain/better"], project, env)
    summaries["better"] = (project.parent / "better.md").read_text()
    # One from main that makes it worse.
    run([*GIT, "switch", "-q", "-c", "worse", "main"], project, env)
    set_f0_samples(project, WORSE)
    run([*GIT, "commit", "-qam", "fewer training images"], project, env)
    run([*retrain, "--summary", "../worse.md"], project, env)
    summaries["worse"] = (project.parent / "worse.md").read_text()
    return {"project": project, "remote": remote, "env": env, "url": url, "summaries": summaries}


def metric_row(summary: str, path: str, metric: str) -> list[str]:
    row = next(line for line in summary.splitlines() if line.startswith(f"| {path}") and f"| {metric} " in line)
    return [cell.strip() for cell in row.strip("|").split("|")]


def f0_model_hash(lock_text: str) -> str:
    lock = yaml.safe_load(lock_text)
    outs = lock["stages"]["train@F0"]["outs"]
    return next(out["md5"] for out in outs if out["path"] == "models/F0.keras")


def test_metrics_and_params_diff_against_main(retrained) -> None:
    better, worse = retrained["summaries"]["better"], retrained["summaries"]["worse"]
    _, _, old, new, change = metric_row(better, "metrics/F0/evaluate.json", "test_accuracy")
    assert float(new) > float(old) + 0.02 and float(change) == pytest.approx(float(new) - float(old), abs=1e-3)
    _, _, old_w, new_w, change_w = metric_row(worse, "metrics/F0/evaluate.json", "test_accuracy")
    assert float(old_w) == float(old) and float(new_w) < float(old) - 0.02 and float(change_w) < 0
    assert f"| params.yaml | experiments.F0.budgets.quick.train_samples | {BASELINE}   | {BETTER}" in better
    assert "metrics/C1/evaluate.json" not in better  # only what changed is diffed
    assert "No metric changed." not in retrained["summaries"]["baseline"]  # main had no metrics before


def test_only_the_better_model_became_champion(retrained) -> None:
    client = mlflow.MlflowClient(tracking_uri=retrained["url"])
    champion = client.get_model_version_by_alias("cnnlab-F0", "champion")
    versions = {v.version: v for v in client.search_model_versions("name = 'cnnlab-F0'")}
    assert sorted(versions, key=int) == ["1", "2", "3"] and str(champion.version) == "2"
    assert [versions[v].tags["promoted"] for v in ("1", "2", "3")] == ["true", "true", "false"]
    # The decision, both scores and the champion's re-scoring are what the summaries say.
    better, worse = retrained["summaries"]["better"], retrained["summaries"]["worse"]
    assert re.search(r"\| cnnlab-F0 \| 2 \| [\d.]+ \| [\d.]+ \| \*\*champion\*\*", better)
    assert re.search(r"\| cnnlab-F0 \| 3 \| [\d.]+ \| [\d.]+ \| kept the champion \(.* does not beat", worse)
    assert f"{float(versions['2'].tags['test_accuracy']):.4f} | {float(versions['1'].tags['test_accuracy']):.4f}" in (
        better
    )
    assert float(versions["3"].tags["champion_test_accuracy"]) == pytest.approx(
        float(versions["2"].tags["test_accuracy"]), abs=1e-6
    )  # the champion re-scored on the same test set gives its own score back
    mlflow.set_tracking_uri(retrained["url"])
    model = mlflow.keras.load_model("models:/cnnlab-F0@champion")
    assert model.count_params() == 101_770  # Dense(128) on 28x28, 10 classes: the champion loads and is F0


def test_outputs_reached_the_remote_and_the_results_branch(retrained) -> None:
    project, remote, env = retrained["project"], retrained["remote"], retrained["env"]
    better_lock = run(["git", "show", "retrain/better:dvc.lock"], project, env).stdout
    worse_lock = (project / "dvc.lock").read_text()
    for lock in (better_lock, worse_lock):
        digest = f0_model_hash(lock)
        assert (remote / "files" / "md5" / digest[:2] / digest[2:]).is_file()
    assert f0_model_hash(better_lock) != f0_model_hash(worse_lock)
    committed = run(["git", "show", "retrain/better:metrics/F0/evaluate.json"], project, env).stdout
    assert json.loads(committed)["test_accuracy"] > 0.7
    message = run(["git", "log", "-1", "--format=%s", "retrain/better"], project, env).stdout
    assert message.strip() == "retrain (quick budget): cnnlab-F0 v2 champion"
    assert json.loads(run(["dvc", "status", "--cloud", "--json"], project, env).stdout or "{}") == {}


def test_runs_arrive_in_postgresql_through_the_server(retrained, team_server) -> None:
    _, backend, folder = team_server
    with psycopg.connect(backend.replace("postgresql+psycopg", "postgresql")) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM runs WHERE status = 'FINISHED'")]
    for stage in ["download@fashion_mnist", "train@F0", "evaluate@F0", "crossval@C3", "report"]:
        assert stage in names
    assert names.count("evaluate@F0") == 3 and "C3/dropout/fold2" in names
    assert list(folder.glob("artifacts/**/confusion_matrix.png"))  # artifacts went through the server's proxy


def test_a_bad_base_or_missing_remote_stops_before_training(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    with pytest.raises(retraining.RetrainError, match="base revision 'nope' not found"):
        retraining.retrain(tmp_path, base="nope")
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True)
    with pytest.raises(retraining.RetrainError, match="no default DVC remote"):
        retraining.retrain(tmp_path, base="HEAD")


def test_budget_is_set_in_place_with_comments_kept(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("# top\nbudget: quick   # the default\nseed: 1\n")
    assert retraining.set_budget(params, "full")
    assert params.read_text() == "# top\nbudget: full   # the default\nseed: 1\n"
    assert not retraining.set_budget(params, "full")
    params.write_text("seed: 1\n")
    with pytest.raises(retraining.RetrainError, match="no top-level `budget:`"):
        retraining.set_budget(params, "quick")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (no browser download); as root it needs --no-sandbox."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: run `apt-get install chromium` (scripts/setup.sh does)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def open_page(browser, url: str, shown: str):
    """A page at `url` once the MLflow app has rendered `shown` (it loads its data after the page)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.get_by_text(shown).first.wait_for(timeout=90_000)
    return page


def compare_url(url: str, experiment_id: str, runs: list) -> str:
    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in runs]))
    return f"{url}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"


def expand(page, run_name: str, child: str) -> None:
    """Open a parent run's row in the runs table (its first button) until `child` shows."""
    page.locator("[role=row]").filter(has_text=run_name).first.locator("button").first.click()
    page.get_by_text(child, exact=True).first.wait_for(timeout=30_000)


def test_mlflow_ui_shows_experiment_runs_folds_and_champion(retrained, browser, tmp_path: Path) -> None:
    url = retrained["url"]
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("cnnlab")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    by_name = {r.info.run_name: r for r in runs}
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    folds = [r for r in runs if r.info.run_name.startswith("C3/") and "/fold" in r.info.run_name]
    assert len(folds) == 4  # 2 arms x 2 folds, each nested under its arm's run, nested under the stage run
    assert {parent[parent[r.info.run_id]] for r in folds} == {by_name["crossval@C3"].info.run_id}

    # The runs table: the experiment, the stage runs, the registered model; the folds under their arm's run.
    page = open_page(browser, f"{url}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning",
                     "crossval@C3")  # fmt: skip
    page.get_by_text("cnnlab-F0 v3").first.wait_for(timeout=30_000)  # the Models column loads after the runs
    listing = re.sub(r"\s+", " ", page.locator("body").inner_text())
    for shown in ["cnnlab", "train@F0", "evaluate@F0", "crossval@C3", "cnnlab-F0 v3"]:
        assert shown in listing, (shown, listing[:2000])
    assert "C3/dropout/fold1" not in listing  # nested runs are folded under their parent
    expand(page, "crossval@C3", "C3/dropout")
    expand(page, "C3/dropout", "C3/dropout/fold1")
    assert "C3/dropout/fold2" in page.locator("body").inner_text()

    page = open_page(browser, compare_url(url, experiment.experiment_id, folds), "Comparing 4 Runs")
    assert all(r.info.run_name in page.locator("body").inner_text() for r in folds)

    # The registered model: three versions, the alias on version 2 only.
    page = open_page(browser, f"{url}/#/models/cnnlab-F0", "Version 3")
    rows = {v: page.locator("[role=row], tr").filter(has_text=f"Version {v}").first.inner_text() for v in "123"}
    assert [bool(re.search(r"@\s*champion", rows[v])) for v in "123"] == [False, True, False], rows

    # The README's picture: the three evaluate@F0 runs (baseline, better, worse) on test accuracy and promotion.
    evaluations = [r for r in runs if r.info.run_name == "evaluate@F0"]
    page = open_page(browser, compare_url(url, experiment.experiment_id, evaluations), "Comparing 3 Runs")
    page.get_by_role("button", name="Close").click()  # the assistant's side panel
    page.get_by_role("button", name="Clear All").click()
    page.locator("[class*=select-selector]").nth(1).click()  # the plot's metrics
    for metric in ["test_accuracy", "promoted"]:
        page.keyboard.type(metric)
        page.locator(f"[class*=select-item-option][title='{metric}']").click()
    page.keyboard.press("Escape")
    page.wait_for_timeout(1500)
    shot = tmp_path / "mlflow_compare.png"
    page.screenshot(path=shot)
    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one
    if os.environ.get("CNNLAB_UI_SCREENSHOT"):  # scripts/readme_images.sh keeps it for the README
        shutil.copy(shot, os.environ["CNNLAB_UI_SCREENSHOT"])
