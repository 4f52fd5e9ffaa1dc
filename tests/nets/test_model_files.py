"""Saved models that are not what they claim: a Lambda layer's code is never run, a model card must fit."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pytest

from cnnlab.nets.predict import ModelFileError, load_classes, load_model, model_card_path


def small_model(outputs: int = 3, with_lambda: bool = False) -> keras.Model:
    layers = [keras.Input((4, 4, 1)), keras.layers.Flatten()]
    if with_lambda:
        layers.append(keras.layers.Lambda(lambda x: x * 2))
    return keras.Sequential([*layers, keras.layers.Dense(outputs, activation="softmax")])


def test_a_lambda_layer_model_is_refused_without_running_its_code(tmp_path: Path) -> None:
    path = tmp_path / "lambda.keras"
    small_model(with_lambda=True).save(path)
    with pytest.raises(ModelFileError, match="refused, it holds a Lambda layer"):
        load_model(path)
    plain = tmp_path / "plain.keras"
    small_model().save(plain)
    assert load_model(plain).output_shape == (None, 3)


def test_predict_refuses_a_lambda_model_with_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnlab.cli import main as cli

    small_model(with_lambda=True).save(tmp_path / "lambda.keras")
    keras.utils.save_img(tmp_path / "x.png", [[[0]] * 4] * 4, scale=False)
    assert cli(["predict", str(tmp_path / "lambda.keras"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Lambda layer" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"classes": ["a", "b"]}, "names 2 classes but m.keras has 3"),
        ({"labels": ["a", "b", "c"]}, "not a model card"),
        ("{not json", "not a model card"),
    ],
)
def test_a_model_card_that_does_not_fit_its_model_is_a_clear_error(tmp_path: Path, card, message: str) -> None:
    model_path = tmp_path / "m.keras"
    model_card_path(model_path).write_text(card if isinstance(card, str) else json.dumps(card))
    with pytest.raises(ModelFileError, match=message):
        load_classes(model_path, 3)


def test_a_fitting_card_names_the_classes_and_no_card_numbers_them(tmp_path: Path) -> None:
    model_path = tmp_path / "m.keras"
    assert load_classes(model_path, 1) == ["0", "1"]  # one sigmoid unit: two classes
    model_card_path(model_path).write_text(json.dumps({"classes": ["cat", "dog"]}))
    assert load_classes(model_path, 1) == ["cat", "dog"]


@pytest.mark.parametrize(
    ("outputs", "with_lambda", "message"),
    [(10, True, "refused, it holds a Lambda layer"), (3, False, "has 3 outputs but fashion_mnist has 10 classes")],
)
def test_the_evaluate_stage_refuses_a_model_file_before_opening_a_run(
    tmp_path: Path, fashion: dict, outputs: int, with_lambda: bool, message: str
) -> None:
    import mlflow

    from cnnlab.pipeline.stage import Paths
    from helpers.project import load_stage, prepared_project

    params = prepared_project(tmp_path, fashion, lambda raw: None, 100, 50)
    paths = Paths(tmp_path)
    paths.model("F1").parent.mkdir(parents=True, exist_ok=True)
    small_model(outputs, with_lambda).save(paths.model("F1"))
    with pytest.raises(ModelFileError, match=message):
        load_stage("evaluate").main(params, paths, "F1")
    assert mlflow.search_runs(search_all_experiments=True).empty
