"""The logged model as MLflow stores it: Keras' own flavor, whose `python_function` answers with class names.

`mlflow.keras.load_model` gets the Keras model back as ever. `mlflow.pyfunc.load_model`, and so
`mlflow models serve`, gets a classifier that returns, for each image, its most likely class by name, that
class's probability and every class's probability, in the order of the model card's `class_names` (the
MLmodel's metadata). Images are pixel values, as `cnnlab predict` reads them: shape (n, height, width,
channels), 0-255.

`Model.log(flavor=this module, ...)` calls `save_model` below: the model is saved by `mlflow.keras.save_model`,
then its `python_function` loader is pointed here.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.pyfunc import FLAVOR_NAME as PYFUNC
from mlflow.pyfunc import MAIN

CLASS_NAMES = "class_names"


def save_model(model: Any, path: str, mlflow_model: Model | None = None, **kwargs: Any) -> None:
    """Keras' save, with the `python_function` flavor loading through `_load_pyfunc` of this module."""
    mlflow_model = mlflow_model or Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    mlflow_model.flavors[PYFUNC][MAIN] = __name__
    mlflow_model.save(os.path.join(path, "MLmodel"))


def class_names(metadata: dict[str, Any] | None, outputs: int) -> list[str]:
    """The model card's class names, or class numbers for a model logged without them (one sigmoid unit: two)."""
    wanted = max(outputs, 2)
    names = (metadata or {}).get(CLASS_NAMES)
    if isinstance(names, list) and len(names) == wanted:
        return [str(name) for name in names]
    return [str(i) for i in range(wanted)]


def ranked(probabilities: np.ndarray, names: list[str]) -> pd.DataFrame:
    """One row per image: `class` (the most likely), its `probability`, and `probabilities` (all, in `names`' order)."""
    if probabilities.shape[-1] == 1:  # one sigmoid unit: P(class 1)
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=-1)
    best = probabilities.argmax(axis=-1)
    return pd.DataFrame(
        {
            "class": [names[i] for i in best],
            "probability": probabilities[np.arange(len(best)), best].astype(float),
            "probabilities": [row.astype(float).tolist() for row in probabilities],
        }
    )


class Classifier:
    """What `mlflow.pyfunc.load_model` returns for a cnnlab model."""

    def __init__(self, keras_model: Any, names: list[str]):
        self.model = keras_model
        self.names = names

    def get_raw_model(self) -> Any:
        return self.model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        images = np.asarray(data.values if isinstance(data, pd.DataFrame) else data, dtype=np.float32)
        return ranked(np.asarray(self.model.predict(images, verbose=0)), self.names)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> Classifier:
    from mlflow.keras.load import _load_keras_model

    from cnnlab.nets import backbones  # noqa: F401  (registers the transfer models' preprocessing layer)

    conf_path = os.path.join(path, "MLmodel")
    conf = Model.load(conf_path if os.path.isfile(conf_path) else os.path.join(os.path.dirname(path), "MLmodel"))
    model = _load_keras_model(path, conf, safe_mode=True)  # a Lambda layer's code in the file is refused
    return Classifier(model, class_names(conf.metadata, model.output_shape[-1]))
