"""`cnnlab retrain`'s options for a pull request's run: no registration, no data set without an online source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cnnlab.catalog.datasets import DATASETS
from cnnlab.params import load_params
from cnnlab.workflows import ci_retrain as retraining
from helpers.project import ROOT


def test_registration_is_turned_off_in_place_with_comments_kept(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("mlflow:\n  log_model: true\n  register_model: true  # registers\n")
    assert retraining.turn_off_registration(params)
    assert params.read_text() == "mlflow:\n  log_model: true\n  register_model: false  # registers\n"
    assert not retraining.turn_off_registration(params)
    project = ROOT / "params.yaml"
    params.write_text(project.read_text())
    retraining.turn_off_registration(params)
    assert load_params(params).mlflow.register_model is False and load_params(project).mlflow.register_model


def test_online_only_leaves_out_the_chains_of_data_sets_without_an_online_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = load_params(ROOT / "params.yaml")
    assert retraining.offline_datasets(params) == set()  # every built-in data set has an online source
    offline = dataclasses.replace(DATASETS["cats_vs_dogs"], online_base=None)
    monkeypatch.setitem(DATASETS, "cats_vs_dogs", offline)
    assert retraining.offline_datasets(params) == {"cats_vs_dogs"}
    kept = retraining.online_stages(ROOT, params)
    assert {"download@cifar10", "train@F1", "crossval@C3", "tune@T1", "explain@M3"} <= set(kept)
    left_out = {"download@cats_vs_dogs", "preprocess@cats_vs_dogs", "train@D1", "evaluate@D2", "finetune@D3",
                "explain_finetuned@D5", "report"}  # fmt: skip
    assert not left_out & set(kept)
    assert all(params.target(name.partition("@")[2]).dataset != "cats_vs_dogs" for name in kept)


def test_the_remote_it_uses_re_hashes_what_it_pulls(tmp_path: Path) -> None:
    import subprocess
    import sys

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    assert retraining.use_remote(tmp_path, str(tmp_path / "remote")) == retraining.REMOTE_NAME
    config = (tmp_path / ".dvc" / "config.local").read_text()
    assert f"['remote \"{retraining.REMOTE_NAME}\"']" in config and "verify = true" in config
