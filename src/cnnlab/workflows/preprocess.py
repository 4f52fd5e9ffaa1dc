"""One data set's raw files -> uint8 train/test (and shipped val) .npz and meta.json.

Each experiment holds out its own validation split from these arrays when it trains, so the
arrays are made once per data set however many experiments use them."""

from __future__ import annotations

import json
import logging

import mlflow

from cnnlab.data.prepare import describe, read_raw, save_split
from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.util.files import combined_hash, staged_outputs, write_json

log = logging.getLogger("cnnlab.preprocess")


def raw_record(paths: stage.Paths, name: str) -> dict:
    record = paths.source_record(name)
    if not record.is_file():
        raise FileNotFoundError(f"{record} not found: run the download stage first (`dvc repro download@{name}`)")
    return json.loads(record.read_text())


def run(params: Params, paths: stage.Paths, name: str) -> None:
    params.check_dataset(name)
    out_dir = paths.prepared(name)
    with stage.mlflow_run("preprocess", name, params, paths, None, {"dataset": name}, computes=False):
        with staged_outputs(paths.root) as out:
            source = raw_record(paths, name)
            log.info("reading %s (%s)", name, source["format"])
            custom = params.data.custom.get(name)
            prepared = read_raw(name, paths.raw / name, source["format"], custom, params.data.limits)
            meta = describe(prepared, name)
            meta["source"] = source
            meta["sha256"] = {s: save_split(out.path(out_dir / f"{s}.npz"), a) for s, a in prepared.splits.items()}
            meta_file = write_json(out.path(out_dir / "meta.json"), meta)
            mlflow.set_tag("data_hash", combined_hash(meta["sha256"].values()))
            mlflow.log_metrics({f"count_{split}": n for split, n in meta["counts"].items()})
            mlflow.log_metric("skipped_images", meta["skipped_count"])
            mlflow.log_metric("converted_images", meta.get("converted_count", 0))
            mlflow.log_artifact(str(meta_file))
        # A split the data no longer has (an own data set whose val folder was removed) must not survive.
        for stale in out_dir.glob("*.npz"):
            if stale.stem not in prepared.splits:
                stale.unlink()
    log.info(
        "%s: %s; %d image(s) skipped, %d converted",
        name,
        meta["counts"],
        meta["skipped_count"],
        meta.get("converted_count", 0),
    )
