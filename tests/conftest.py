"""Shared fixtures: the offline data mirror, Fashion-MNIST, a private MLflow store per test, a folder on HTTP.

Only fixtures live here; the helpers the tests share are in the `helpers` package beside this file."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from helpers.mlflow_store import new_store
from helpers.project import FASHION_DEBIAN, MIRROR, require

# As many test workers as cores: one TensorFlow thread each, in the workers and the stages they start. Two
# workers of two threads each on two cores spin in each other's way: two copies of tests/training/test_training.py
# side by side took 52 s so, 47 s with one thread each. Set before any test imports TensorFlow; a variable you set
# yourself wins.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, "1")


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
    uri = new_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test's set_tracking_uri would otherwise win over the variable
    monkeypatch.delenv("CNNLAB_DATA_MIRROR", raising=False)
    return uri


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (no test touches the internet)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# pytest-xdist gives each worker the next test file in collection order as it frees up: a long file collected
# last would leave the other worker idle at the end. These run first, the longest first.
LONGEST_FIRST = [  # seconds per file in `pytest --junitxml` of the whole suite, two files at a time
    "tests/workflows/test_retrain.py",  # 159
    "tests/project/test_benchmarks.py",  # 151
    "tests/workflows/test_tune.py",  # 142
    "tests/training/test_transfer.py",  # 127
    "tests/workflows/test_study_pipeline.py",  # 102
    "tests/project/test_pipeline.py",  # 95
    "tests/workflows/test_study_ray.py",  # 86
    "tests/training/test_fast_paths.py",  # 54
    "tests/training/test_training.py",  # 47
    "tests/tracking/test_server_auth.py",  # 38
    "tests/workflows/test_grid.py",  # 34
    "tests/training/test_distribution.py",  # 34
    "tests/catalog/test_models.py",  # 33
    "tests/workflows/test_serve.py",  # 32
    "tests/pipeline/test_kill.py",  # 26
    "tests/workflows/test_study.py",  # 23
    "tests/pipeline/test_warm.py",  # 22
    "tests/cli/test_shell_and_exit_codes.py",  # 21
    "tests/cli/test_own_data_pipeline.py",  # 19
    "tests/params/test_config.py",  # 14
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: place for place, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))  # stable: the rest in order
