# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""ablation stage: every cell of a 2^n factorial design trained and scored on the same k folds, then its effects."""

from __future__ import annotations

import cnnlab  # noqa: F401
import keras  # noqa: F401  (Keras, and TensorFlow under it, load before MLflow's libraries, as always)

from cnnlab import stage
from cnnlab.study_outputs import ablation_outputs, run_study_stage

if __name__ == "__main__":
    stage.run(lambda params, paths, study_id: run_study_stage("ablation", study_id, params, paths, ablation_outputs))
