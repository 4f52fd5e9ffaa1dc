# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""preprocess stage: raw files -> uint8 train/val/test .npz and meta.json per data set."""

from __future__ import annotations

import cnnlab  # noqa: F401

import json
import logging

import mlflow

from cnnlab import stage
from cnnlab.config import Params
from cnnlab.files import combined_hash, staged_outputs, write_json
from cnnlab.prepare import describe, read_raw, save_split, with_validation

log = logging.getLogger("cnnlab.preprocess")


def raw_record(paths: stage.Paths, name: str) -> dict:
    sources_file = paths.raw / "sources.json"
    if not sources_file.is_file():
        raise FileNotFoundError(f"{sources_file} not found: run the download stage first (`dvc repro download`)")
    sources = json.loads(sources_file.read_text())
    if name not in sources:
        raise FileNotFoundError(f"{name} is not in {sources_file}: run the download stage again")
    return sources[name]


def main(params: Params, paths: stage.Paths) -> None:
    experiment = params.experiments[params.experiment]
    name, out_dir = experiment.dataset, paths.prepared(experiment.dataset)
    logged = {
        "dataset": name,
        "validation": experiment.validation,
        "stratify": experiment.stratify,
        "seed": params.seed,
    }
    with stage.mlflow_run("preprocess", params, paths, None, logged):
        with staged_outputs(paths.root) as out:
            source = raw_record(paths, name)
            log.info("reading %s (%s)", name, source["format"])
            raw = read_raw(name, paths.raw / name, source["format"], params.data.custom.get(name))
            prepared = with_validation(raw, experiment.validation, params.seed, experiment.stratify)
            meta = describe(prepared, name, experiment.validation, params.seed)
            meta["source"] = source
            meta["sha256"] = {s: save_split(out.path(out_dir / f"{s}.npz"), a) for s, a in prepared.splits.items()}
            meta_file = write_json(out.path(out_dir / "meta.json"), meta)
            mlflow.set_tag("data_hash", combined_hash(meta["sha256"].values()))
            mlflow.log_metrics({f"count_{split}": n for split, n in meta["counts"].items()})
            mlflow.log_metric("skipped_images", meta["skipped_count"])
            mlflow.log_artifact(str(meta_file))
        # Splits of an earlier validation scheme must not survive next to the new ones.
        for stale in out_dir.glob("*.npz"):
            if stale.stem not in prepared.splits:
                stale.unlink()
    log.info("%s: %s; %d image(s) skipped", name, meta["counts"], meta["skipped_count"])


if __name__ == "__main__":
    stage.run(main)
