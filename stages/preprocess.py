# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""preprocess stage: raw files -> uint8 train/val/test .npz and meta.json per data set."""

from __future__ import annotations

import cnnlab  # noqa: F401

import json
import logging

import mlflow

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.files import combined_hash, write_json
from cnnlab.prepare import describe, read_raw, save_split, with_validation

log = logging.getLogger("cnnlab.preprocess")


def main(params: Params, paths: stage.Paths) -> None:
    sources_file = paths.raw / "sources.json"
    if not sources_file.is_file():
        raise FileNotFoundError(f"{sources_file} not found: run the download stage first (`dvc repro download`)")
    sources = json.loads(sources_file.read_text())
    experiment = params.experiments[params.experiment]
    name = experiment.dataset
    if name not in sources:
        raise FileNotFoundError(f"{name} is not in {sources_file}: run the download stage again")
    log.info("reading %s (%s)", name, sources[name]["format"])
    raw = read_raw(name, paths.raw / name, sources[name]["format"], params.data.custom.get(name))
    prepared = with_validation(raw, experiment.validation, params.seed)
    meta = describe(prepared, name, experiment.validation, params.seed)
    meta["source"] = sources[name]
    out = paths.prepared(name)
    # Stale splits of an earlier validation scheme must not survive.
    for old in out.glob("*.npz"):
        if old.stem not in prepared.splits:
            old.unlink()
    meta["sha256"] = {split: save_split(out / f"{split}.npz", arrays) for split, arrays in prepared.splits.items()}
    with stage.mlflow_run(
        "preprocess",
        params,
        paths,
        combined_hash(meta["sha256"].values()),
        {"dataset": name, "validation": experiment.validation, "seed": params.seed},
    ):
        mlflow.log_metrics({f"count_{split}": n for split, n in meta["counts"].items()})
        mlflow.log_metric("skipped_images", meta["skipped_count"])
        mlflow.log_dict(meta, "meta.json")
        write_json(out / "meta.json", meta)
    log.info("%s: %s; %d image(s) skipped", name, meta["counts"], meta["skipped_count"])


if __name__ == "__main__":
    stage.run(main)
