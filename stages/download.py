# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""download stage: bring each data set the configured experiment needs into data/raw/, verified."""

from __future__ import annotations

import cnnlab  # noqa: F401

import mlflow

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.datasets import DATASETS
from cnnlab.download import Fetched, candidate_sources, fetch
from cnnlab.files import combined_hash, copy_file, sha256_file, write_json


def fetch_custom(name: str, params: Params, paths: stage.Paths) -> Fetched:
    """A user's own image folder or zip, copied in so DVC versions it (no catalogue checksum to check)."""
    source = params.data.custom[name].path
    dest = paths.raw / name
    if source.is_file():
        copy_file(source, dest / source.name)
        files = {source.name: sha256_file(dest / source.name)}
    elif source.is_dir():
        files = {}
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source)
            copy_file(path, dest / relative)
            files[str(relative)] = sha256_file(dest / relative)
    else:
        raise FileNotFoundError(f"data.custom.{name}.path: {source} does not exist")
    return Fetched(name, "path", str(source), "image-folder", files)


def main(params: Params, paths: stage.Paths) -> None:
    fetched = {}
    for name in params.datasets_needed():
        if name in params.data.custom:
            fetched[name] = fetch_custom(name, params, paths)
            continue
        spec = DATASETS[name]
        sources = candidate_sources(
            spec,
            path=params.data.paths.get(name),
            mirror=params.data.mirror,
            debian_dir=params.data.debian_dir,
            online=params.data.online,
            online_base=params.data.online_base.get(name),
        )
        fetched[name] = fetch(spec, sources, paths.raw / name)
    record = {name: f.to_dict() for name, f in fetched.items()}
    data_hash = combined_hash(d for f in fetched.values() for d in f.files.values())
    with stage.mlflow_run("download", params, paths, data_hash, params.data.model_dump(mode="json")):
        for name, f in fetched.items():
            mlflow.set_tag(f"source.{name}", f"{f.source}: {f.location}")
            mlflow.set_tag(f"format.{name}", f.format)
        write_json(paths.raw / "sources.json", record)
        mlflow.log_dict(record, "sources.json")


if __name__ == "__main__":
    stage.run(main)
