"""Data sets in and out of the pipeline: fetching them, reading their files, and the splits training uses."""

from __future__ import annotations

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]  # images and their labels
