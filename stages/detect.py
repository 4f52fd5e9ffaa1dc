# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""detect stage: a Darknet YOLO model run through OpenCV on a job's images (seed 004, program 6-12); the drawn
images and detections.json go to detections/<id>/ and to the job's MLflow run."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already

from cnnlab.pipeline import stage
from cnnlab.workflows.detect import run as main

if __name__ == "__main__":
    stage.run(main)
