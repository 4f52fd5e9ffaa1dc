"""Bring one data set into data/raw/<name>/, verified, and record where it came from."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow

from cnnlab.catalog.datasets import DATASETS
from cnnlab.data.download import Fetched, candidate_sources, fetch
from cnnlab.data.loaders import SYMLINK, DataFormatError, folder_files
from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.util.files import combined_hash, copy_file, replace_dir, sha256_file, staged_outputs, write_json

log = logging.getLogger("cnnlab.download")


def fetch_custom(name: str, params: Params, paths: stage.Paths) -> Fetched:
    """A user's own image folder or zip, copied in whole so DVC versions exactly what was trained on."""
    source = params.data.custom[name].path
    if not source.exists():
        raise FileNotFoundError(f"data.custom.{name}.path: {source} does not exist")
    paths.raw.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        raise DataFormatError(f"data.custom.{name}.path: {source} {SYMLINK}; give the path of the folder or zip itself")
    fresh = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=paths.raw))
    files, refused = folder_files(source) if source.is_dir() else ([source.name], [])
    root = source if source.is_dir() else source.parent
    for entry in refused:  # never copied, so DVC never versions or pushes what a link points at
        log.warning("%s: skipped %s: %s", name, entry["file"], entry["reason"])
    digests = {}
    for relative in files:
        copy_file(root / relative, fresh / relative)
        digests[relative] = sha256_file(fresh / relative)
    replace_dir(fresh, paths.raw / name)  # images removed from the source disappear here too
    fmt = "image-folder" if source.is_dir() else "image-zip"
    return Fetched(name, "path", str(source), fmt, digests, refused)


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
