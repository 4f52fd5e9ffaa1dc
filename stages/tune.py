# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""tune stage: a Keras Tuner search for one `tune` id of params (see cnnlab/tune_run.py; `cnnlab tune <id>`
runs the same, and is the command of a distributed search's workers)."""

from __future__ import annotations

import cnnlab  # noqa: F401
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab import stage
from cnnlab.tune_run import main

if __name__ == "__main__":
    stage.run(main)
