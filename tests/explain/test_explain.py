"""The explain stage on a model trained on real Fashion-MNIST: every picture, the ascent curves and the MLflow run;
bad layer names fail before any work and keep the earlier pictures; a dense model gets what applies to it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from cnnlab.cli import main as cnnlab_main
from cnnlab.explain.layer_views import feature_maps
from cnnlab.explain.pictures import augmented_draws, choose, predict_for_grad_cam, predictions, spread_over_classes
from cnnlab.nets.predict import load_model
from cnnlab.params import ParamsError, parse_params
from cnnlab.pipeline.stage import Paths
from helpers.models import residual_model, transfer_like
from helpers.project import ROOT, load_stage, prepared_project

AUGMENTED = {"horizontal_flip": True, "width_shift_range": 0.1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, fashion: dict) -> tuple[Path, object]:
    """F1 (three convolutions) with augmentation and the dense F0, one epoch each on 2,000 real images."""

    def edit(raw: dict) -> None:
        raw["experiments"]["F1"]["augmentation"] = AUGMENTED
        for exp in ("F0", "F1"):
            raw["experiments"][exp]["budgets"] = {"quick": {"epochs": 1}}
        raw["explain"]["filters"] = 4

    root = tmp_path_factory.mktemp("explain")
    params = prepared_project(root, fashion, edit, train_size=2000, test_size=300)
    for exp in ("F0", "F1"):
        load_stage("train").main(params, Paths(root), exp)
    return root, params


def f1_convolutions(root: Path) -> list[str]:
    return [layer.name for layer in load_model(root / "models" / "F1.keras").layers if "conv" in layer.name]


def test_every_view_of_a_trained_convnet_is_drawn_and_logged(trained: tuple[Path, object]) -> None:
    root, params = trained
    load_stage("explain").main(params, Paths(root), "F1")
    first, _, last = convs = f1_convolutions(root)  # Keras numbers layer names per process: read them
    drawn = sorted(p.name for p in (root / "explain" / "F1").iterdir())
    assert drawn == sorted([
        "augmentation.png", f"feature_maps_{first}_0.png", f"feature_maps_{last}_0.png",
        f"filter_patterns_{first}.png", f"filter_patterns_{last}.png", "grad_cam_correct.png", "grad_cam_wrong.png",
        "hand_filters.png", "kernels.png",
    ])  # fmt: skip
    assert len(convs) == 3
    assert all((root / "explain" / "F1" / name).read_bytes().startswith(b"\x89PNG") for name in drawn)
    ascent = pd.read_csv(root / "plots" / "F1" / "filter_ascent.csv")
    assert len(ascent) == 2 * 4 * 31 and set(ascent["layer"]) == {first, last}
    start, end = (ascent[ascent["step"] == s].set_index("series")["activation"] for s in (0, 30))
    assert (end > start).all() and end.mean() > 2 * start.mean(), pd.DataFrame({"start": start, "end": end})
    runs = mlflow.search_runs(experiment_names=["cnnlab"], filter_string="tags.stage = 'explain'")
    run = runs.iloc[0]
    assert run["tags.mlflow.runName"] == "explain@F1" and run["status"] == "FINISHED"
    assert run["params.grad_cam_layer"] == last and run["params.layers"] == str([first, last])
    logged = {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "explain")}
    assert logged == set(drawn)


def test_a_layer_the_model_lacks_fails_first_and_keeps_the_earlier_pictures(trained: tuple[Path, object]) -> None:
    root, params = trained
    explain = load_stage("explain")
    explain.main(params, Paths(root), "F1")
    before = {p.name: p.read_bytes() for p in (root / "explain" / "F1").iterdir()}
    raw = params.model_dump()
    first = f1_convolutions(root)[0]
    raw["explain"]["models"] = {"F1": {"layers": [first, "block9"]}}
    with pytest.raises(
        ParamsError, match=rf"explain \(F1\): model 'F1' has no layer 'block9'; its convolutions: {first}, "
    ):
        explain.main(parse_params(raw), Paths(root), "F1")
    dense = next(
        layer.name for layer in load_model(root / "models" / "F1.keras").layers if layer.name.startswith("dense")
    )
    raw["explain"]["models"] = {"F1": {"grad_cam_layer": dense}}
    with pytest.raises(ParamsError, match=rf"'{dense}' outputs \(None, 64\), not feature maps"):
        explain.main(parse_params(raw), Paths(root), "F1")
    assert {p.name: p.read_bytes() for p in (root / "explain" / "F1").iterdir()} == before
    runs = mlflow.search_runs(experiment_names=["cnnlab"], filter_string="tags.stage = 'explain'")
    assert len(runs) == 1  # the failures stopped before their MLflow runs started


def test_each_image_s_predicted_class_and_its_probability() -> None:
    predicted, confidence = predictions(np.array([[0.9], [0.2], [0.5]]))  # one sigmoid unit: P(class 1)
    assert predicted.tolist() == [1, 0, 0] and np.allclose(confidence, [0.9, 0.8, 0.5])
    predicted, confidence = predictions(np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]))
    assert predicted.tolist() == [1, 0] and np.allclose(confidence, [0.7, 0.6])


def test_a_dense_model_gets_the_hand_filters_and_an_empty_ascent_table(trained: tuple[Path, object]) -> None:
    root, params = trained
    load_stage("explain").main(params, Paths(root), "F0")
    assert [p.name for p in (root / "explain" / "F0").iterdir()] == ["hand_filters.png"]
    assert (root / "plots" / "F0" / "filter_ascent.csv").read_text() == "series,layer,filter,step,activation\n"


def test_layers_lists_the_convolutions_and_grad_cam_s_default(
    trained: tuple[Path, object], capsys: pytest.CaptureFixture
) -> None:
    root, _ = trained
    assert cnnlab_main(["layers", str(root / "models" / "F1.keras")]) == 0
    out = capsys.readouterr().out
    convs = [line.split()[0] for line in out.splitlines() if line.rstrip().endswith("conv")]
    assert convs == f1_convolutions(root) and len(convs) == 3
    assert out.splitlines()[-1] == f"Grad-CAM's default layer: {convs[-1]}"


def test_images_are_taken_one_class_after_another() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert spread_over_classes(labels, np.ones(8, bool), 5).tolist() == [0, 3, 5, 1, 4]
    assert spread_over_classes(labels, labels != 1, 10).tolist() == [0, 5, 1, 6, 2, 7]


class TableModel:
    """A stand-in model whose 'image' i (a 1x1x1 array holding i) gets row i of a fixed probability table."""

    def __init__(self, table: np.ndarray) -> None:
        self.table, self.predicted = table, 0

    def predict(self, images: np.ndarray, **_: object) -> np.ndarray:
        self.predicted += len(images)
        return self.table[images[:, 0, 0, 0].astype(int)]


@pytest.mark.parametrize("sorted_by_class", [True, False])
@pytest.mark.parametrize("accuracy", [0.1, 0.9, 0.999, 1.0])
def test_grad_cam_images_are_those_a_whole_test_set_prediction_picks(sorted_by_class: bool, accuracy: float) -> None:
    rng = np.random.default_rng(int(accuracy * 1000) + sorted_by_class)
    labels = np.sort(rng.integers(0, 10, 5000)) if sorted_by_class else rng.integers(0, 10, 5000)
    guessed = np.where(rng.random(5000) < accuracy, labels, (labels + rng.integers(1, 10, 5000)) % 10)
    table = np.eye(10, dtype="float32")[guessed]
    images = np.arange(5000, dtype="float32").reshape(-1, 1, 1, 1)
    model = TableModel(table)
    probabilities, known = predict_for_grad_cam(model, images, labels, count=6, chunk=500)
    for right in (True, False):
        everything = spread_over_classes(labels, (guessed == labels) == right, 6)
        partial = spread_over_classes(labels, known & ((probabilities.argmax(1) == labels) == right), 6)
        assert partial.tolist() == everything.tolist()
        np.testing.assert_array_equal(probabilities[partial], table[partial])
    if 0.1 <= accuracy <= 0.9:  # both kinds are common: a chunk or two decides, not the whole set
        assert model.predicted <= 1000


def test_explain_settings_for_an_unknown_model_or_key_are_refused() -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["explain"]["models"] = {"F9": {"filters": 4}}
    with pytest.raises(ParamsError, match=r"explain.models.F9: no model has that id; allowed: .*F1"):
        parse_params(raw)
    raw["explain"]["models"] = {"F1": {"filter": 4}}
    with pytest.raises(
        ParamsError, match=r"explain.models.F1.filter: Extra inputs are not permitted \(the keys: layers, "
    ):
        parse_params(raw)


def test_augmented_draws_are_random_passes_of_the_model_s_own_augmentation(fashion: dict) -> None:
    from cnnlab.params import Augmentation

    images = fashion["train"][0][:12]
    draws = augmented_draws(Augmentation(horizontal_flip=True), images, 3, seed=0)
    assert draws is not None and draws.shape == (3, *images.shape) and draws.dtype == np.uint8
    mirrored = images[:, :, ::-1]
    flipped = np.array([[np.array_equal(d, m) for d, m in zip(draw, mirrored, strict=True)] for draw in draws])
    kept = np.array([[np.array_equal(d, x) for d, x in zip(draw, images, strict=True)] for draw in draws])
    assert np.all(flipped | kept) and 0 < flipped.mean() < 1  # each image flipped or not, at random
    assert not np.array_equal(flipped[0], flipped[1]) or not np.array_equal(flipped[1], flipped[2])
    assert augmented_draws(Augmentation(), images, 2, seed=0) is None


def test_default_views_of_a_residual_backbone_need_no_settings() -> None:
    from cnnlab.params import Views

    model = transfer_like(residual_model(32))
    choice = choose(model, Views(), test_images=10, model_id="RES")
    assert choice.layers == ["stem", "block_conv"] and choice.grad_cam_layer == "block_out"
    maps = feature_maps(model, choice.layers, np.zeros((1, 24, 24, 3), np.uint8))  # inside the block: no `after`
    assert maps["block_conv"].shape == (1, 32, 32, 4)
