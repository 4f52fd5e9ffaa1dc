"""A registered model carries its card (class names, image shape, data set) in its MLflow metadata: a user of
models:/cnnlab-<id>@champion needs no models/<id>.meta.json."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest

from cnnlab.tracking.cards import ModelCard, ModelCardError, model_card
from cnnlab.tracking.registry import CHAMPION, model_name, register_evaluated
from cnnlab.tracking.runs import log_keras_model

CARD = ModelCard(["cat", "dog", "bird"], (4, 4, 1), "pets")


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input(CARD.image_shape), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    return keras.Sequential(layers)


def test_the_champion_is_registered_with_its_card() -> None:
    images = np.random.default_rng(0).uniform(0, 255, (6, *CARD.image_shape)).astype("float32")
    labels = tiny_model().predict(images, verbose=0).argmax(axis=-1)
    with mlflow.start_run() as run:
        version, decision = register_evaluated(tiny_model(), "CARD", images, labels, "a" * 64, 1.0, 0.0, CARD)
    assert decision.promoted
    for uri in (f"models:/{model_name('CARD')}@{CHAMPION}", f"models:/{model_name('CARD')}/{version}",
                f"runs:/{run.info.run_id}/model"):  # fmt: skip
        class_names, image_shape, dataset = model_card(uri)
        assert (class_names, image_shape, dataset) == (["cat", "dog", "bird"], (4, 4, 1), "pets"), uri


def test_a_model_without_a_card_or_a_wrong_uri_is_a_clear_error() -> None:
    with mlflow.start_run():
        info = log_keras_model(tiny_model(), np.zeros((1, *CARD.image_shape)), registered_model_name="cnnlab-BARE")
    with pytest.raises(ModelCardError, match="models:/cnnlab-BARE/1 has no class names in its metadata"):
        model_card(f"models:/cnnlab-BARE/{info.registered_model_version}")
    with pytest.raises(ModelCardError, match="models:/cnnlab-NOPE@champion"):
        model_card("models:/cnnlab-NOPE@champion")
