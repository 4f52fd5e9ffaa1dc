"""Shared fixtures: the offline data mirror, Fashion-MNIST, a private MLflow store per test.

Only fixtures live here; the helpers the tests share are in the `helpers` package beside this file."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from helpers.project import FASHION_DEBIAN, MIRROR, require


@pytest.fixture(scope="session")
def mirror() -> Path:
    return require(MIRROR, "the tests read the offline data mirror at ../shared/datasets")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return require(FASHION_DEBIAN, "run `apt-get install dataset-fashion-mnist`")


@pytest.fixture(scope="session")
def fashion(fashion_dir: Path) -> dict:
    """Fashion-MNIST's train and test arrays, read once."""
    from cnnlab.data.loaders import load_idx_folder

    return load_idx_folder(fashion_dir)


@pytest.fixture(autouse=True)
def private_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test writes its MLflow runs to its own SQLite file, never the project's."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test's set_tracking_uri would otherwise win over the variable
    monkeypatch.delenv("CNNLAB_DATA_MIRROR", raising=False)
    return uri
