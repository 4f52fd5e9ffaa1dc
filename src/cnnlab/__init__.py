"""cnnlab: a reproducible pipeline for convolutional image classifiers (DVC + MLflow + Keras 3)."""

import os

# TensorFlow's C++ start-up chatter hides the pipeline's own progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# MLflow's background logger (epoch metrics) gathers a second of metrics at a time and sees the end of a run at
# once; without it, it polls its queue with a 1 s timeout, and every run's end waits out that poll.
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")

__version__ = "0.1.0"
