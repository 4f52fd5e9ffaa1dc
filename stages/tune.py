# ruff: noqa: E402  (cnnlab first: it quiets TensorFlow; then the stage hands itself to a warm worker)
"""tune stage: a Keras Tuner search for one `tune` id of params (see cnnlab/workflows/search.py; `cnnlab tune <id>`
runs the same, and is the command of a distributed search's workers)."""

from __future__ import annotations

import cnnlab  # noqa: F401
from cnnlab.pipeline.warm import run_in_warm_worker

run_in_warm_worker(__file__)  # from here on, in a worker that has imported Keras and MLflow already
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab.pipeline import stage
from cnnlab.workflows.search import main

if __name__ == "__main__":
    stage.run(main)
