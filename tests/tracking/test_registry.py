"""The champion alias moves only to a model that beats the current champion by the margin; models:/<name>@champion
loads and predicts."""

from __future__ import annotations

import keras
import mlflow
import numpy as np

from cnnlab.tracking.registry import (
    CHAMPION,
    champion_score,
    champion_version,
    decide,
    model_name,
    record,
    register_evaluated,
    score_tag,
)
from cnnlab.tracking.runs import log_keras_model


def test_the_decision_needs_the_margin() -> None:
    assert decide(0.80, None, 0.01).promoted and decide(0.80, None, 0.01).reason == "no champion yet"
    assert decide(0.85, 0.80, 0.01).promoted
    assert not decide(0.805, 0.80, 0.01).promoted and not decide(0.79, 0.80, 0.0).promoted
    assert "does not beat the champion's 0.8000 by the margin 0.01" in decide(0.805, 0.80, 0.01).reason


def _log(model: keras.Model, name: str) -> str:
    with mlflow.start_run():
        info = log_keras_model(model, np.zeros((1, model.input_shape[1])), registered_model_name=name)
    return str(info.registered_model_version)


def never() -> float:
    raise AssertionError("the champion was re-scored on a test set it already has a score for")


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
        champion = champion_score(client, name, current, "a" * 64, never) if current else None
        record(client, name, version, decide(accuracy, champion, margin=0.01), "a" * 64)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert str(champion.version) == "2" and champion.tags["champion_test_accuracy"] == "0.700000"
    assert client.get_model_version(name, "3").tags["promoted"] == "false"
    loaded = mlflow.keras.load_model(f"models:/{name}@{CHAMPION}")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), models[1].predict(images, verbose=0), atol=1e-6)


def test_the_champion_is_scored_once_per_test_set() -> None:
    client, name = mlflow.MlflowClient(), model_name("ONCE")
    _log(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), name)
    record(client, name, "1", decide(0.9, None, 0.01), "a" * 64)
    scored = []

    def rescore() -> float:
        scored.append(1)
        return 0.8

    for _ in range(2):  # a new test set: scored on the first evaluate, read back on the second
        current = champion_version(client, name)
        assert champion_score(client, name, current, "b" * 64, rescore) == 0.8
    assert len(scored) == 1 and champion_version(client, name).tags[score_tag("b" * 64)] == "0.800000"
    assert champion_score(client, name, champion_version(client, name), "a" * 64, never) == 0.9


def test_an_evaluated_model_becomes_champion_only_if_it_beats_the_champion_rescored_on_its_test_set() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (20, 4)).astype("float32")
    models = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        models.append(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")]))
    labels = models[0].predict(images, verbose=0).argmax(axis=-1)  # the first model scores 1.0 on them
    with mlflow.start_run():
        version, decision = register_evaluated(models[0], "GATE", images, labels, "c" * 64, 0.6, 0.0)
    assert version == "1" and decision.promoted and decision.reason == "no champion yet"
    with mlflow.start_run() as second:  # a new test set: the champion is loaded and scored on it
        version, decision = register_evaluated(models[1], "GATE", images, labels, "d" * 64, 0.9, 0.0)
    assert version == "2" and not decision.promoted and decision.champion == 1.0
    run = mlflow.get_run(second.info.run_id)
    assert run.data.metrics["promoted"] == 0.0 and run.data.metrics["champion_test_accuracy"] == 1.0
    assert run.data.tags["registered_version"] == "2" and "does not beat" in run.data.tags["promotion"]
    assert str(champion_version(mlflow.MlflowClient(), model_name("GATE")).version) == "1"
