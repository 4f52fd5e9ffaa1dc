# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""preprocess stage: one data set's raw files -> uint8 train/test (and shipped val) .npz and meta.json.

Each experiment holds out its own validation split from these arrays when it trains, so the
arrays are made once per data set however many experiments use them."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already

from cnnlab.pipeline import stage
from cnnlab.workflows.preprocess import run as main

if __name__ == "__main__":
    stage.run(main)
