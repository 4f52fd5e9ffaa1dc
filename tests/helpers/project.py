"""The project under test: its root and data, its stage scripts, prepared copies of it, and running its tools."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from helpers.mlflow_store import new_store

ROOT = Path(__file__).resolve().parents[2]
# CI checks the project out with ../shared beside it; tests read the real data from there.
MIRROR = ROOT.parent / "shared" / "datasets"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]  # commits in test repositories


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


def subset(arrays: tuple, size: int, seed: int = 0) -> tuple:
    from cnnlab.data.splits import stratified_subsample

    x, y = arrays
    keep = stratified_subsample(y, size, seed)
    return x[keep], y[keep]


def fit_quick_floors(raw: dict) -> None:
    """Leave out the quick floors that name no id of params trimmed to a few experiments or studies (params
    refuses a floor that names nothing)."""
    floors = raw.get("quick_floors", {})
    for section, entries in floors.items():
        ids = raw["finetune"]["recipes"] if section == "finetune" else raw.get(section, {})
        floors[section] = {key: floor for key, floor in entries.items() if any(fnmatchcase(i, key) for i in ids)}


def prepared_project(
    root: Path, fashion: dict, edit: Callable[[dict], None], train_size: int, test_size: int
) -> object:
    """A project folder at `root`: the repository's params with `edit` applied (no model logging) and a
    stratified subset of Fashion-MNIST prepared as the preprocess stage leaves it; returns the params."""
    from cnnlab.catalog.datasets import DATASETS
    from cnnlab.data.prepare import Prepared, describe, save_split
    from cnnlab.params import parse_params
    from cnnlab.pipeline.stage import Paths

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["mlflow"]["log_model"] = False
    edit(raw)
    fit_quick_floors(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    splits = {"train": subset(fashion["train"], train_size), "test": subset(fashion["test"], test_size)}
    prepared = Prepared(splits, list(DATASETS["fashion_mnist"].classes))
    out = Paths(root).prepared("fashion_mnist")
    meta = describe(prepared, "fashion_mnist")
    meta["source"] = {"source": "debian", "format": "idx-gz"}
    meta["sha256"] = {s: save_split(out / f"{s}.npz", a) for s, a in prepared.splits.items()}
    (out / "meta.json").write_text(json.dumps(meta))
    return parse_params(raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def copy_project(project: Path, edit: Callable[[dict], None]) -> dict[str, str]:
    """A git + DVC copy of the project at `project` with `edit` applied to its params; returns the environment
    to run its stages in (this interpreter's tools, the copy's sources, no MLflow / DVC / cnnlab overrides)."""
    for name in ["dvc.yaml", "params.yaml", "claims.yaml", ".dvcignore", ".gitignore", "pyproject.toml"]:
        shutil.copy(ROOT / name, project / name)
    for folder in ["stages", "src"]:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    edit(params)
    fit_quick_floors(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CNNLAB_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(project / "src")
    new_store(project / "mlflow.db")  # the stages' default store (git-ignored), migrated already
    run(["git", "init", "-q"], project, env)
    run(["dvc", "init", "-q"], project, env)
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")  # the box plot template
    run([*GIT, "add", "-A"], project, env)
    run([*GIT, "commit", "-qm", "copy"], project, env)
    return env
