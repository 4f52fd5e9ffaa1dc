"""Shared fixtures: the project root, the offline data mirror, a private MLflow store per test."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
# CI checks the project out with ../shared beside it; tests read the real data from there.
MIRROR = ROOT.parent / "shared" / "datasets"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def require(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}", pytrace=False)
    return path


def load_stage(name: str) -> ModuleType:
    """A stage script (stages/<name>.py) as a module, to call its main() in-process."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mirror() -> Path:
    return require(MIRROR, "the tests read the offline data mirror at ../shared/datasets")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    return require(FASHION_DEBIAN, "run `apt-get install dataset-fashion-mnist`")


@pytest.fixture(autouse=True)
def private_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test writes its MLflow runs to its own SQLite file, never the project's."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test's set_tracking_uri would otherwise win over the variable
    monkeypatch.delenv("CNNLAB_DATA_MIRROR", raising=False)
    return uri
