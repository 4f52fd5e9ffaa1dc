# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""crossval stage: named variants of one experiment trained and scored on the same k folds, then compared."""

from __future__ import annotations

import cnnlab  # noqa: F401
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab import stage
from cnnlab.study_outputs import crossval_outputs, run_study_stage

if __name__ == "__main__":
    stage.run(lambda params, paths, study_id: run_study_stage("crossval", study_id, params, paths, crossval_outputs))
