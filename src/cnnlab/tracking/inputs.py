"""A stage's data set as MLflow dataset inputs: the runs table's Dataset column and the run page's inputs.

One input per split the run uses, in MLflow's contexts ("training", "validation", "test"), each named after the
data set, its source where the raw data came from (the mirror folder, the URL, the user's folder), and its
digest the data hash (the run's `data_hash` tag) and the split: `3f9a0c1d2e4b5a69-train`. MLflow keeps one input
per name and digest in a run, so the splits need digests of their own. Only metadata is logged: no image is
read or hashed again.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.types import Schema, TensorSpec

TRAINING, VALIDATION, TEST = "training", "validation", "test"
SPLITS = {TRAINING: "train", VALIDATION: "val", TEST: "test"}  # a context's split, as the prepared arrays name it
ORIGIN_TAG = "origin"  # an input's tag: mirror, online, debian, local (where the download stage found the data)


def dataset_of(meta: Mapping[str, Any], data_hash: str, prepared: Path, context: str) -> MetaDataset:
    """The split of the prepared data set described by `meta` (its meta.json) that the run uses in `context`:
    its source the raw data's location (the prepared folder when none was recorded), its schema the images'
    shape."""
    location = meta.get("source", {}).get("location") or str(prepared.resolve())
    shape = meta.get("image_shape")
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *shape), "images")]) if shape else None
    digest = f"{data_hash}-{SPLITS[context]}"
    with warnings.catch_warnings():  # MLflow registers its local source for both "" and "file:" and warns so
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(location)
    # MLflow's stubs leave `profile` abstract; MetaDataset has none and instantiates
    return MetaDataset(source, name=meta["dataset"], digest=digest, schema=schema)  # type: ignore[abstract]


def log_prepared_inputs(meta: Mapping[str, Any], data_hash: str, prepared: Path, contexts: Sequence[str]) -> None:
    """The prepared data set of `meta` as the active run's inputs, one for each of `contexts`, in one request."""
    origin = meta.get("source", {}).get("source")
    tags = {ORIGIN_TAG: str(origin)} if origin else None
    mlflow.log_inputs(
        datasets=[dataset_of(meta, data_hash, prepared, context) for context in contexts],
        contexts=list(contexts),
        tags_list=[tags] * len(contexts),
    )
