#!/usr/bin/env bash
# Set everything up, then run the whole pipeline on the default (quick) budget.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
# Use the offline mirror of the public data sets when it sits beside the checkout.
if [ -z "${CNNLAB_DATA_MIRROR:-}" ] && [ -d ../shared/datasets ]; then
  CNNLAB_DATA_MIRROR="$(cd ../shared/datasets && pwd)"
  export CNNLAB_DATA_MIRROR
fi
# ... and of the pretrained weights (ImageNet MobileNet for the transfer recipes).
if [ -z "${CNNLAB_WEIGHTS_MIRROR:-}" ] && [ -d ../shared/weights ]; then
  CNNLAB_WEIGHTS_MIRROR="$(cd ../shared/weights && pwd)"
  export CNNLAB_WEIGHTS_MIRROR
fi
# The stage worker imports Keras, TensorFlow and MLflow while params are checked: the first stage starts warm too.
cnnlab warm &
warm=$!
cnnlab check
wait "$warm" || echo "quickstart: going on without a warm worker"
dvc repro
cat reports/reproduction.md
echo "Runs are in MLflow: open them with 'source .venv/bin/activate && cnnlab ui' (http://127.0.0.1:5000)"
