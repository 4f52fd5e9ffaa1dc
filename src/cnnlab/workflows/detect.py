"""A Darknet YOLO model run through OpenCV on a job's images (seed 004, program 6-12); the drawn
images and detections.json go to detections/<id>/ and to the job's MLflow run."""

from __future__ import annotations

import mlflow

from cnnlab.detect.yolo import Detector, detect_images, image_files, summary_metrics
from cnnlab.params import Params, ParamsError
from cnnlab.pipeline import stage
from cnnlab.util.files import combined_hash, sha256_file, staged_outputs


def run(params: Params, paths: stage.Paths, job_id: str) -> None:
    if job_id not in params.detect.jobs:
        raise ParamsError(
            f"unknown detect job {job_id!r}; params.yaml `detect.jobs` has: {', '.join(params.detect.jobs)}"
        )
    job = params.detect.jobs[job_id]
    where = paths.root
    # Every file is checked (the pair, the names, every image readable) before the run starts.
    detector = Detector.load(where / job.cfg, where / job.weights, where / job.names, job.settings())
    images = image_files([where / p for p in job.images])
    inputs = combined_hash(sha256_file(p) for p in images)
    logged = {"job": job_id, **job.model_dump(mode="json", exclude={"description"})}
    with (
        stage.mlflow_run("detect", job_id, params, paths, inputs, logged, computes=False),
        staged_outputs(where) as out,
    ):
        mlflow.set_tag("weights_sha256", sha256_file(where / job.weights))
        folder = out.path(paths.detections(job_id))
        report = detect_images(detector, images, folder)
        mlflow.log_metrics(summary_metrics(report))
        mlflow.log_artifacts(str(folder), artifact_path="detections")
