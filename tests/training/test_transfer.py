"""Transfer learning on the real cats-vs-dogs subset with the real ImageNet MobileNet (alpha 0.25) weights of the
offline mirror: weights that matter, the three modes, the seeds' C7 and birds recipes, and clear errors."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from cnnlab.nets import backbones
from cnnlab.nets.backbones import WeightsUnavailableError, build_backbone, first_trainable
from cnnlab.nets.predict import load_model
from cnnlab.params import FromLayer, ParamsError, Transfer, parse_params
from cnnlab.pipeline.stage import Paths
from cnnlab.training.transfer import train_transfer, transfer_model
from helpers.images import own_data_params, own_tree, png
from helpers.project import MIRROR, ROOT, copy_project, load_stage, require, run, subset

WEIGHTS = MIRROR.parent / "weights"
MOBILENET = {"name": "MobileNet", "options": {"alpha": 0.25}, "input_size": 224, "weights": "imagenet"}


@pytest.fixture(scope="session")
def cats() -> dict:
    """The subset's train / val / test splits at 150x150, as the preprocess stage makes them."""
    from cnnlab.data.loaders import load_image_folder

    archive = require(MIRROR / "cats_vs_dogs" / "cats_vs_dogs_small.zip", "the offline mirror's cats vs dogs")
    require(WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5", "the offline mirror's MobileNet weights")
    return load_image_folder(archive, (150, 150), 3, resize=True).splits


def recipe(**changes: object) -> Transfer:
    base = {"dataset": "cats_vs_dogs", "mode": "features", "backbone": MOBILENET, "batch_size": 20,
            "optimizer": {"name": "rmsprop", "learning_rate": 2e-5}, "epochs": 4}  # fmt: skip
    return Transfer.model_validate(base | changes)


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    scores = model.predict(images, batch_size=50, verbose=0).ravel()
    return float(((scores > 0.5) == labels).mean())


def test_imagenet_features_are_real_and_random_weights_stay_near_chance(cats: dict, tmp_path: Path) -> None:
    train, val, test = subset(cats["train"], 300), subset(cats["val"], 200), subset(cats["test"], 200)
    scores = {}
    for weights in ["imagenet", None]:
        tl = recipe(backbone=MOBILENET | {"weights": weights})
        backbone = build_backbone(tl.backbone, (150, 150, 3), WEIGHTS, online=False)
        result = train_transfer(tl, backbone, train, val, 2, 42, [], tmp_path / f"{weights}.npz")
        # The saved model takes raw 150x150 pixels: resizing, MobileNet's preprocessing, features, head.
        scores[weights] = accuracy(result.model, *test)
    assert scores["imagenet"] >= 0.8, scores  # 300 training images, 4 epochs of the head alone
    assert scores[None] <= 0.65, scores  # the same network without the ImageNet weights learns next to nothing


def test_features_are_computed_once_and_reused_until_the_images_change(
    cats: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, val = subset(cats["train"], 40), subset(cats["val"], 20)
    tl = recipe(epochs=1)
    backbone = build_backbone(tl.backbone, (150, 150, 3), WEIGHTS, online=False)
    cache = tmp_path / "features.npz"
    caplog.set_level(logging.INFO, logger="cnnlab.transfer")
    first = train_transfer(tl, backbone, train, val, 2, 42, [], cache)
    assert cache.is_file() and "reused" not in caplog.text
    again = train_transfer(tl.model_copy(update={"head": tl.head.model_copy(update={"dropout": 0.2})}),
                           backbone, train, val, 2, 42, [], cache)  # fmt: skip
    assert "features: reused" in caplog.text  # a new head, the same backbone and images
    assert first.history.keys() == again.history.keys()
    # Saved and loaded as the evaluate stage loads it: the same scores, and the optimizer state fits the model.
    first.model.save(tmp_path / "d3.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Skipping variable loading for optimizer"
        loaded = load_model(tmp_path / "d3.keras")
    np.testing.assert_allclose(loaded.predict(val[0], verbose=0), first.model.predict(val[0], verbose=0), atol=1e-6)
    caplog.clear()
    train_transfer(tl, backbone, subset(cats["train"], 40, seed=1), val, 2, 42, [], cache)
    assert "reused" not in caplog.text  # other images: computed anew


def test_fine_tuning_trains_the_head_first_then_the_unfrozen_layers(cats: dict) -> None:
    train, val = subset(cats["train"], 40), subset(cats["val"], 20)
    small = MOBILENET | {"input_size": 96, "weights": None}  # no weights needed to see what trains
    tl = recipe(mode="finetune", backbone=small, epochs=1, fine_tune_epochs=1, unfreeze={"from_layer": "conv_dw_12"},
                augmentation={"rotation_range": 10, "horizontal_flip": True})  # fmt: skip
    backbone = build_backbone(tl.backbone, (150, 150, 3), None, online=False)
    names = [layer.name for layer in backbone.layers]
    before = {n: [w.copy() for w in backbone.get_layer(n).get_weights()] for n in ("conv_dw_11", "conv_pw_13")}
    result = train_transfer(tl, backbone, train, val, 2, 42, [])
    assert len(result.history["val_accuracy"]) == 2  # one epoch of the head, one of fine-tuning, numbered on
    trainable = [layer.name for layer in backbone.layers if layer.trainable]
    assert trainable == names[names.index("conv_dw_12") :]
    after = backbone.get_layer("conv_dw_11").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before["conv_dw_11"], after, strict=True))  # frozen throughout
    assert not np.array_equal(before["conv_pw_13"][0], backbone.get_layer("conv_pw_13").get_weights()[0])
    assert float(keras.ops.convert_to_numpy(result.model.optimizer.learning_rate)) == pytest.approx(1e-5)


def seed_recipe(name: str) -> Transfer:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())["finetune"]["recipes"][name]
    raw["backbone"]["weights"] = None  # the tests download nothing
    return Transfer.model_validate(raw)


def test_c7_opens_the_last_four_vgg16_layers_under_the_seeds_head() -> None:
    c7 = seed_recipe("C7")
    backbone = build_backbone(c7.backbone, (32, 32, 3), None, online=False)
    model = transfer_model(c7, backbone, (32, 32, 3), 10, 42)
    assert [layer.name for layer in backbone.layers if layer.trainable] == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"
    ]  # fmt: skip
    # VGG16 without its top (14,714,688) + Dense(256) on 512 features + BatchNorm(256) + Dense(10)
    assert model.count_params() == 14_714_688 + (512 * 256 + 256) + 4 * 256 + (256 * 10 + 10)
    head = model.get_layer("head")
    assert [type(layer).__name__ for layer in head.layers] == [
        "Flatten", "Dense", "BatchNormalization", "Activation", "Dense"
    ]  # fmt: skip


@pytest.mark.parametrize(("name", "all_train"), [("birds", True), ("birds_frozen", False)])
def test_the_birds_recipe_fine_tunes_all_of_resnet50_or_none(name: str, all_train: bool) -> None:
    birds = seed_recipe(name)
    assert birds.optimizer.name == "adam" and birds.optimizer.learning_rate == 2e-5 and birds.batch_size == 16
    backbone = build_backbone(birds.backbone, (224, 224, 3), None, online=False)
    model = transfer_model(birds, backbone, (224, 224, 3), 20, 42)  # CUB-200 every 10th class: 20 birds
    assert backbone.name == "resnet50"
    assert [layer.trainable for layer in backbone.layers] == [all_train] * len(backbone.layers)
    head = 7 * 7 * 2048 * 1024 + 1024 + 1024 * 20 + 20  # Flatten → Dense(1024) → Dense(20)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == head + (sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) if all_train else 0)
    assert (trainable > 120_000_000) == all_train  # ResNet50's own 23.5M weights train too


def test_missing_weights_fail_before_training_naming_the_file_and_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backbones, "keras_home", lambda: str(tmp_path / "keras"))
    monkeypatch.delenv(backbones.WEIGHTS_MIRROR_ENV, raising=False)
    empty = tmp_path / "mirror"
    empty.mkdir()
    spec = recipe().backbone
    with pytest.raises(WeightsUnavailableError) as offline:
        build_backbone(spec, (150, 150, 3), empty, online=False)
    message = str(offline.value)
    assert "mobilenet_2_5_224_tf_no_top.h5" in message and str(empty) in message and str(tmp_path / "keras") in message
    assert "data.online: false" in message and "backbone.weights: null" in message

    def no_network(*args: object, **kwargs: object) -> str:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(backbones.file_utils, "get_file", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"the download failed \(Temporary failure in name resolution"):
        build_backbone(spec, (150, 150, 3), empty, online=True)
    with pytest.raises(WeightsUnavailableError, match=r"backbone.weights: nowhere.h5 not found"):
        build_backbone(spec.model_copy(update={"weights": "nowhere.h5"}), (150, 150, 3), empty, online=False)


def test_bad_transfer_params_are_refused_with_the_fix() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["finetune"]["recipes"]["D3"]["augmentation"] = {"horizontal_flip": True}
    with pytest.raises(ParamsError, match=r"finetune.recipes.D3.*mode features.*use mode end_to_end"):
        parse_params(raw)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["finetune"]["recipes"]["D3"]["backbone"]["name"] = "VGG61"
    with pytest.raises(ParamsError, match=r"unknown backbone 'VGG61'; allowed .*VGG16"):
        parse_params(raw)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["finetune"]["run"].append("C8")
    with pytest.raises(ParamsError, match=r"finetune.run: no recipe C8"):
        parse_params(raw)
    backbone = build_backbone(seed_recipe("C7").backbone, (32, 32, 3), None, online=False)
    with pytest.raises(ValueError, match=r"vgg16 has no layer 'block6_conv1'; its last layers are .*block5_pool"):
        first_trainable(backbone, FromLayer(from_layer="block6_conv1"))


def tiny_transfer(params: dict) -> None:
    params["datasets"] = ["cats_vs_dogs"]
    d1 = params["experiments"]["D1"] | {"budgets": {"quick": {"epochs": 1, "train_samples": 200}}}
    params["experiments"] = {"D1": d1}  # trained from scratch, for the report's comparison
    params["crossval"], params["ablation"], params["tune"] = {}, {}, {}
    params["finetune"]["run"] = ["D3"]
    params["finetune"]["recipes"]["D3"]["budgets"]["quick"] = {"epochs": 3, "train_samples": 300}


@pytest.mark.slow
def test_the_finetune_stage_trains_logs_and_is_evaluated_and_reported(tmp_path: Path) -> None:
    import mlflow

    env = copy_project(tmp_path, tiny_transfer)
    env |= {"CNNLAB_DATA_MIRROR": str(MIRROR), "CNNLAB_WEIGHTS_MIRROR": str(WEIGHTS)}
    run(["dvc", "repro", "report"], tmp_path, env)
    tested = json.loads((tmp_path / "metrics" / "D3" / "evaluate.json").read_text())
    assert tested["test_accuracy"] >= 0.8  # 300 training images; 1,000 test images through the saved model
    trained = json.loads((tmp_path / "metrics" / "D3" / "train.json").read_text())
    assert trained["train_samples"] == 300 and trained["epochs_run"] == 3
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    stage_run = runs[runs["tags.mlflow.runName"] == "finetune@D3"].iloc[0]
    assert stage_run["status"] == "FINISHED" and stage_run["params.backbone.name"] == "MobileNet"
    assert stage_run["params.mode"] == "features"
    history = mlflow.MlflowClient().get_metric_history(stage_run["run_id"], "val_accuracy")
    assert [m.step for m in history] == [0, 1, 2]
    report = (tmp_path / "reports" / "reproduction.md").read_text()
    assert "## Transfer learning" in report and "MobileNet (imagenet)" in report and "from scratch" in report
    # A new head on the same backbone and images: the stored features are reused, not computed again.
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["finetune"]["recipes"]["D3"]["head"]["dropout"] = 0.3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = run(["dvc", "repro", "finetune@D3"], tmp_path, env)
    assert "features: reused" in again.stdout + again.stderr


def test_more_than_two_classes_get_a_softmax_and_sparse_cross_entropy(cats: dict) -> None:
    x, _ = subset(cats["train"], 30)
    y = np.arange(len(x)) % 3  # three classes, as in a user's own image folder
    tl = recipe(mode="end_to_end", backbone=MOBILENET | {"input_size": 64, "weights": None}, epochs=1)
    backbone = build_backbone(tl.backbone, (150, 150, 3), None, online=False)
    result = train_transfer(tl, backbone, (x, y), (x, y), 3, 42, [])
    output = result.model.get_layer("head").layers[-1]
    assert output.units == 3 and output.activation.__name__ == "softmax"
    assert tl.loss_for(3) == "sparse_categorical_crossentropy" and result.model.loss == tl.loss_for(3)
    assert result.model.predict(x[:4], verbose=0).sum(axis=1) == pytest.approx(np.ones(4), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("classes", [2, 3])
def test_a_users_own_image_folder_is_fine_tuned_evaluated_and_logged(
    tmp_path: Path, classes: int, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    birds = {f"{split}/bird/{i}.png": png((0, 200, 0)) for split, n in [("train", 4), ("test", 2)] for i in range(n)}
    source = tmp_path / "pets"
    for name, data in (own_tree() | (birds if classes == 3 else {})).items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    raw = own_data_params(source)
    raw["finetune"]["recipes"]["OWN_TL"] = {
        "dataset": "pets", "mode": "finetune", "validation": 0.5, "batch_size": 4, "epochs": 1, "fine_tune_epochs": 1,
        "backbone": {"name": "MobileNet", "options": {"alpha": 0.25}, "input_size": 32, "weights": None},
        "head": {"pooling": "avg", "dense": [8]}, "unfreeze": {"last": 3},
    }  # fmt: skip
    params, paths = parse_params(raw), Paths(tmp_path / "project")
    stages = ["download", "preprocess", "finetune", "evaluate", "explain"]
    for stage, target in zip(stages, ["pets", "pets", "OWN_TL", "OWN_TL", "OWN_TL"], strict=True):
        load_stage(stage).main(params, paths, target)
    meta = json.loads((paths.prepared("pets") / "meta.json").read_text())
    assert meta["skipped_count"] == 1  # the broken image; the greyscale one is converted
    trained = json.loads((paths.metrics("OWN_TL") / "train.json").read_text())
    assert trained["epochs_run"] == 2  # one epoch of the head, then one of fine-tuning
    report = json.loads((paths.metrics("OWN_TL") / "classification_report.json").read_text())
    assert report["macro avg"]["support"] == 4 + (2 if classes == 3 else 0)
    output = load_model(paths.model("OWN_TL")).get_layer("head").layers[-1]
    assert (output.units, output.activation.__name__) == ((1, "sigmoid") if classes == 2 else (3, "softmax"))
    runs = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time ASC"])
    assert runs["tags.mlflow.runName"].tolist() == ["download@pets", "preprocess@pets", "finetune@OWN_TL",
                                                    "evaluate@OWN_TL", "explain@OWN_TL"]  # fmt: skip
    # Grad-CAM and filter patterns reach inside the nested backbone (MobileNet's last block by default).
    assert runs.iloc[4]["params.grad_cam_layer"] == "conv_pw_13_relu"
    assert {"grad_cam_correct.png", "filter_patterns_conv_pw_13.png"} <= {
        p.name for p in (paths.root / "explain" / "OWN_TL").iterdir()
    }
    assert set(runs["status"]) == {"FINISHED"}
    # The fine-tuning fit's new optimizer is not logged over the first's (MLflow refuses to change a param).
    assert "Changing param values is not allowed" not in caplog.text
    assert runs.iloc[2]["params.optimizer_learning_rate"] == "0.0010000000474974513"
