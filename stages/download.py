# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""download stage: bring one data set into data/raw/<name>/, verified, and record where it came from."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already

from cnnlab.pipeline import stage
from cnnlab.workflows.download import run as main

if __name__ == "__main__":
    stage.run(main)
