# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""retrain stage: the best recipe a search found, trained on the whole training split for the epochs its best
score took, and saved as models/<search>.keras for the evaluate stage."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab.pipeline import stage
from cnnlab.workflows.retrain import run as main

if __name__ == "__main__":
    stage.run(main)
