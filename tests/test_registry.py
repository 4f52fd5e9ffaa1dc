"""The champion alias moves only to a model that beats the current champion by the margin; models:/<name>@champion
loads and predicts."""

from __future__ import annotations

import keras
import mlflow
import numpy as np

from cnnlab.registry import CHAMPION, champion_version, decide, model_name, record


def test_the_decision_needs_the_margin() -> None:
    assert decide(0.80, None, 0.01).promoted and decide(0.80, None, 0.01).reason == "no champion yet"
    assert decide(0.85, 0.80, 0.01).promoted
    assert not decide(0.805, 0.80, 0.01).promoted and not decide(0.79, 0.80, 0.0).promoted
    assert "does not beat the champion's 0.8000 by the margin 0.01" in decide(0.805, 0.80, 0.01).reason


def _log(model: keras.Model, name: str) -> str:
    with mlflow.start_run():
        info = mlflow.keras.log_model(model, name="model", registered_model_name=name)
    return str(info.registered_model_version)


def test_only_the_better_model_becomes_champion_and_loads_by_alias() -> None:
    client, name = mlflow.MlflowClient(), model_name("TINY")
    images = np.random.default_rng(0).uniform(0, 1, (3, 4)).astype("float32")
    models = []
    for seed in (0, 1, 2):
        keras.utils.set_random_seed(seed)
        models.append(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")]))
    assert champion_version(client, name) is None
    for model, accuracy in zip(models, (0.70, 0.80, 0.75), strict=True):
        version = _log(model, name)
        current = champion_version(client, name)
        champion = float(current.tags["test_accuracy"]) if current else None
        record(client, name, version, decide(accuracy, champion, margin=0.01))
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert str(champion.version) == "2" and champion.tags["champion_test_accuracy"] == "0.700000"
    assert client.get_model_version(name, "3").tags["promoted"] == "false"
    loaded = mlflow.keras.load_model(f"models:/{name}@{CHAMPION}")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), models[1].predict(images, verbose=0), atol=1e-6)
