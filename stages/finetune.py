# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""finetune stage: a pretrained backbone with a new head, trained in its recipe's mode (features, frozen or
finetune), saved as models/<id>.keras for the evaluate stage."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab.pipeline import stage
from cnnlab.workflows.transfer import run as main

if __name__ == "__main__":
    stage.run(main)
