#!/usr/bin/env bash
# The pictures of docs/explain.md: the explain stages of F1, C2 and D5 on the quick budget
# (each runs its model's chain first if that is not up to date), then one picture of each kind into docs/images/;
# and the MLflow UI's run comparison of docs/ci.md, as tests/workflows/test_retrain.py's headless Chromium sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .venv/bin/activate
dvc repro explain@F1 explain@C2 explain_finetuned@D5
mkdir -p docs/images
for picture in F1/hand_filters F1/feature_maps_conv2d_0 C2/kernels C2/filter_patterns_conv2d_3 C2/augmentation \
               D5/grad_cam_correct D5/grad_cam_wrong; do
  cp "explain/$picture.png" "docs/images/${picture%%/*}_${picture#*/}.png"
done
CNNLAB_UI_SCREENSHOT="$PWD/docs/images/mlflow_compare.png" python -m pytest -q tests/workflows/test_retrain.py -k mlflow_ui
ls -l docs/images
