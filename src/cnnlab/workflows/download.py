"""Bring one data set into data/raw/<name>/, verified, and record where it came from."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from cnnlab.catalog.datasets import DATASETS
from cnnlab.data.download import Fetched, candidate_sources, fetch
from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.util.files import combined_hash, copy_file, replace_dir, sha256_file, staged_outputs, write_json


def fetch_custom(name: str, params: Params, paths: stage.Paths) -> Fetched:
    """A user's own image folder or zip, copied in whole so DVC versions exactly what was trained on."""
    source = params.data.custom[name].path
    if not source.exists():
        raise FileNotFoundError(f"data.custom.{name}.path: {source} does not exist")
    paths.raw.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=paths.raw))
    files = source.rglob("*") if source.is_dir() else [source]
    root = source if source.is_dir() else source.parent
    digests = {}
    for path in sorted(p for p in files if p.is_file()):
        relative = path.relative_to(root)
        copy_file(path, fresh / relative)
        digests[str(relative)] = sha256_file(fresh / relative)
    replace_dir(fresh, paths.raw / name)  # images removed from the source disappear here too
    return Fetched(name, "path", str(source), "image-folder" if source.is_dir() else "image-zip", digests)


def fetch_builtin(name: str, params: Params, paths: stage.Paths) -> Fetched:
    sources = candidate_sources(
        DATASETS[name],
        path=params.data.paths.get(name),
        mirror=params.data.mirror,
        debian_dir=params.data.debian_dir,
        online=params.data.online,
        online_base=params.data.online_base.get(name),
    )
    return fetch(DATASETS[name], sources, paths.raw / name)


def run(params: Params, paths: stage.Paths, name: str) -> None:
    params.check_dataset(name)
    logged = params.data.model_dump(mode="json")
    with (
        stage.mlflow_run("download", name, params, paths, None, logged, computes=False),
        staged_outputs(paths.root) as out,
    ):
        fetched = (fetch_custom if name in params.data.custom else fetch_builtin)(name, params, paths)
        mlflow.set_tag("data_hash", combined_hash(fetched.files.values()))
        mlflow.set_tag("source", f"{fetched.source}: {fetched.location}")
        mlflow.set_tag("format", fetched.format)
        record = write_json(out.path(paths.source_record(name)), fetched.to_dict())
        mlflow.log_artifact(str(record))
