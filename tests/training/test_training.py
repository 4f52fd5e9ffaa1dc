"""Training on real Fashion-MNIST: seeded runs agree exactly, accuracy is far above chance,
and a stage that fails keeps the previous outputs and marks its MLflow run FAILED."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import yaml

from cnnlab.catalog.datasets import DATASETS
from cnnlab.pipeline.stage import Paths
from cnnlab.training.evaluation import evaluate
from cnnlab.training.fit import encode_labels, fit, kept_epoch, seeded_model
from cnnlab.util.files import sha256_file
from cnnlab.workflows import train as train_run
from helpers.project import ROOT, load_stage, prepared_project, subset
from helpers.training import f1_recipe


@pytest.mark.parametrize("augmentation", [{}, {"width_shift_range": 0.1, "horizontal_flip": True}])
def test_same_seed_same_metrics(fashion: dict, augmentation: dict) -> None:
    recipe = f1_recipe(epochs=1, budgets={}, augmentation=augmentation)
    train, val = subset(fashion["train"], 2000), subset(fashion["test"], 500)

    def run(seed: int) -> dict:
        model = seeded_model(recipe, (28, 28, 1), 10, seed)
        return fit(model, recipe, train, val, 10, seed=seed, verbose=0).history

    runs = [run(7), run(7)]
    assert runs[0] == runs[1]
    other = run(8)
    assert other != runs[0]


def test_held_out_8_bit_images_score_as_keras_scores_them_as_floats(fashion: dict) -> None:
    """fit casts the images one batch at a time; its validation scores are Keras' own for the float32 arrays."""
    recipe = f1_recipe(epochs=1, budgets={})
    (x_train, y_train), (x_val, y_val) = subset(fashion["train"], 1000), subset(fashion["test"], 300)
    assert x_train.dtype == np.uint8
    result = fit(seeded_model(recipe, (28, 28, 1), 10, 3), recipe, (x_train, y_train), (x_val, y_val), 10, 3, verbose=0)
    expected = result.model.evaluate(
        x_val.astype("float32"),
        encode_labels(y_val, recipe.loss_for(10), 10),
        batch_size=32,
        verbose=0,
        return_dict=True,
    )
    assert result.history["val_accuracy"][-1] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert result.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)
    assert result.history["accuracy"][-1] > 0.3  # the training batches were the images, not a cast gone wrong


def test_f1_learns_fashion_mnist(fashion: dict) -> None:
    recipe = f1_recipe(epochs=2, budgets={})
    train, val = subset(fashion["train"], 12000), subset(fashion["train"], 1000, seed=1)
    result = fit(seeded_model(recipe, (28, 28, 1), 10, 42), recipe, train, val, 10, seed=42, verbose=0)
    x_test, y_test = fashion["test"]
    scores = evaluate(result.model, x_test, y_test, [str(i) for i in range(10)], recipe.loss_for(10))
    assert scores.accuracy > 0.80  # chance is 0.10
    assert scores.confusion.sum() == 10000 and scores.confusion.trace() == round(scores.accuracy * 10000)


@pytest.mark.parametrize(
    ("model_name", "options", "classes", "loss"),
    [
        ("C1", {"output_l2": 0.01}, 10, "sparse_categorical_crossentropy"),  # the L2 penalty counts in the loss
        ("C1", {}, 10, "categorical_crossentropy"),
        ("D1", {"input_size": 48}, 2, "binary_crossentropy"),  # one sigmoid unit
    ],
)
def test_evaluate_scores_in_one_pass_as_keras_evaluate_does(model_name, options, classes, loss) -> None:
    from cnnlab.catalog.networks import build_model

    rng = np.random.default_rng(0)
    shape = (32, 32, 3) if model_name == "C1" else (64, 64, 3)
    model = build_model(model_name, shape, classes, **options)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    images, labels = rng.integers(0, 256, (300, *shape)).astype("uint8"), rng.integers(0, classes, 300)
    targets = encode_labels(labels, loss, classes)
    model.fit(images.astype("float32"), targets, epochs=1, verbose=0)
    expected = model.evaluate(images.astype("float32"), targets, verbose=0, return_dict=True)
    scores = evaluate(model, images, labels, [str(i) for i in range(classes)], loss)
    assert scores.loss == pytest.approx(expected["loss"], rel=1e-5)
    assert scores.accuracy == pytest.approx(expected["accuracy"], abs=1e-6)
    if options.get("output_l2"):
        assert sum(float(t) for t in model.losses) > 1e-3  # a test that would miss a dropped penalty is no test


@pytest.fixture
def tiny_project(tmp_path: Path, fashion: dict) -> tuple[Path, object]:
    """A project folder with params (1 epoch) and 600 prepared Fashion-MNIST images."""

    def edit(raw: dict) -> None:
        raw["experiments"]["F1"]["budgets"] = {"quick": {"epochs": 1}}

    return tmp_path, prepared_project(tmp_path, fashion, edit, train_size=500, test_size=100)


def test_failed_train_stage_keeps_previous_outputs_and_marks_run_failed(tiny_project, monkeypatch) -> None:
    root, params = tiny_project
    train = load_stage("train")
    paths = Paths(root)
    train.main(params, paths, "F1")
    outputs = [paths.model("F1"), paths.metrics("F1") / "train.json", paths.plots("F1") / "history.csv"]
    before = {p: sha256_file(p) for p in outputs}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-training")

    monkeypatch.setattr(train_run, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(params, paths, "F1")
    assert {p: sha256_file(p) for p in outputs} == before
    assert not [p for p in (root / "models").iterdir() if p.name.startswith(".")]  # no temp files left
    runs = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time ASC"])
    assert runs["status"].tolist() == ["FINISHED", "FAILED"]
    assert runs["tags.mlflow.runName"].tolist() == ["train@F1", "train@F1"]
    shutil.rmtree(root / "models")


@pytest.mark.slow
def test_killed_train_stage_keeps_previous_model_and_marks_run_failed(tiny_project) -> None:
    """A real SIGTERM in the middle of training, as when a user stops `dvc repro`."""
    root = tiny_project[0]
    paths = Paths(root)
    paths.model("F1").parent.mkdir(parents=True)
    paths.model("F1").write_bytes(b"the previous model")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["experiments"]["F1"]["budgets"] = {"quick": {"epochs": 500}}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "train.py"), "F1"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Epoch 3/"):
            process.send_signal(signal.SIGTERM)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output
    assert paths.model("F1").read_bytes() == b"the previous model"
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    assert runs["status"].tolist() == ["FAILED"], output[-3000:]


def test_kept_epoch_follows_the_callback_that_restored_weights() -> None:
    history = {"val_loss": [0.5, 0.3, 0.4, 0.45], "val_accuracy": [0.8, 0.85, 0.9, 0.86]}
    assert kept_epoch(history, f1_recipe()) == 3  # no restoring callback: the last epoch
    stop = {"early_stopping": {"monitor": "val_loss", "patience": 2}}
    assert kept_epoch(history, f1_recipe(callbacks=stop)) == 1
    checkpoint = {"checkpoint_best": True, "checkpoint_monitor": "val_accuracy"}
    assert kept_epoch(history, f1_recipe(callbacks=checkpoint)) == 2


def test_saved_and_reloaded_model_gives_the_same_test_metrics(fashion: dict, tmp_path: Path) -> None:
    """Seed 004, programs 6-4b / 6-5: save the trained model, load it back, score it again."""
    recipe = f1_recipe(epochs=1, budgets={})
    model = seeded_model(recipe, (28, 28, 1), 10, seed=3)
    fit(model, recipe, subset(fashion["train"], 2000), subset(fashion["test"], 200), 10, seed=3, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    x_test, y_test = subset(fashion["test"], 1000, seed=2)
    classes = [str(i) for i in range(10)]
    first, again = (evaluate(m, x_test, y_test, classes, recipe.loss_for(10)) for m in (model, reloaded))
    assert (first.loss, first.accuracy) == (again.loss, again.accuracy)
    np.testing.assert_array_equal(first.predicted, again.predicted)


def test_train_stage_writes_model_card_and_diagram_and_predict_uses_them(tiny_project, fashion, capsys) -> None:
    from PIL import Image

    from cnnlab.cli import main as cli

    root, params = tiny_project
    load_stage("train").main(params, Paths(root), "F1")
    capsys.readouterr()  # training's progress lines
    card = json.loads((root / "models" / "F1.meta.json").read_text())
    assert card["classes"] == list(DATASETS["fashion_mnist"].classes) and card["input_shape"] == [28, 28, 1]
    run = mlflow.search_runs(experiment_names=["cnnlab"]).iloc[0]
    assert "model.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"])}

    image = root / "shoe.png"
    Image.fromarray(fashion["test"][0][0][..., 0]).save(image)
    chart = root / "bars.png"
    assert cli(["predict", str(root / "models" / "F1.keras"), str(image), "--top", "2", "--chart", str(chart)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{image}: ") and line.count("%") == 2
    assert any(f"{name} " in line for name in card["classes"])  # classes shown by name, from the model card
    assert chart.stat().st_size > 0

    Image.new("L", (32, 32)).save(root / "big.png")
    (root / "notes.txt").write_text("not an image")
    assert cli(["predict", str(root / "models" / "F1.keras"), str(root / "big.png")]) == 2
    assert "is 32x32 but the model takes 28x28" in capsys.readouterr().err
    assert cli(["predict", str(root / "models" / "F1.keras"), str(root / "notes.txt")]) == 2
    assert "not an image file" in capsys.readouterr().err
    assert cli(["predict", str(root / "models" / "F1.keras"), str(root / "big.png"), "--resize"]) == 0


def test_cosine_schedule_warms_up_then_decays_to_zero_by_the_last_epoch() -> None:
    from cnnlab.training.fit import learning_rate

    plan = f1_recipe(epochs=10, budgets={}, optimizer={"name": "adam", "learning_rate": 0.004, "schedule": "cosine",
                                           "warmup_epochs": 1})  # fmt: skip
    schedule = learning_rate(plan, steps_per_epoch=100)
    values = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    np.testing.assert_allclose(values, [0.0, 0.002, 0.004, 0.002, 0.0], atol=1e-6)
    assert learning_rate(f1_recipe(), None) == 0.001  # constant: the recipe's number
    with pytest.raises(ValueError, match="needs the number of steps per epoch"):
        learning_rate(plan, None)


def test_batchnorm_option_normalizes_every_convolution_of_f1_and_m3() -> None:
    from cnnlab.catalog.networks import build_model

    for name, seed_params in (("F1", 89_546), ("M3", None)):
        plain, normed = build_model(name, (28, 28, 1), 10), build_model(name, (28, 28, 1), 10, batchnorm=True)
        convs = [layer for layer in normed.layers if isinstance(layer, keras.layers.Conv2D)]
        norms = [layer for layer in normed.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(convs) == len(norms) == 3
        assert normed.count_params() == plain.count_params() + sum(4 * c.filters for c in convs)
        assert seed_params is None or plain.count_params() == seed_params
