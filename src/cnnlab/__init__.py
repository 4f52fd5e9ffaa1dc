"""cnnlab: a reproducible pipeline for convolutional image classifiers (DVC + MLflow + Keras 3)."""

import os

# TensorFlow's C++ start-up chatter hides the pipeline's own progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
