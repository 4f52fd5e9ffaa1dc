"""What a trained model looks at. Kernels, feature maps, filter patterns, Grad-CAM and the
augmentation preview of one model, as pictures in explain/<id>/ logged to MLflow (params: `explain`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from cnnlab.data.prepare import load_split, read_meta
from cnnlab.explain import pictures as explain
from cnnlab.nets.predict import load_model
from cnnlab.params import Params
from cnnlab.pipeline import stage
from cnnlab.util.files import staged_outputs, write_text

log = logging.getLogger("cnnlab.explain")


def run(params: Params, paths: stage.Paths, model_id: str) -> None:
    target = params.target(model_id)
    dataset = target.model_dataset
    model_path = paths.model(model_id)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: train it first (`dvc repro {target.producer}`)")
    views = params.explain.for_model(model_id)
    prepared = paths.prepared(dataset)
    classes = read_meta(prepared)["classes"]
    x_test, y_test = load_split(prepared / "test.npz")
    model = load_model(model_path)
    choice = explain.choose(model, views, len(x_test), model_id)  # a wrong layer or image fails before any work
    folder_target, plots_dir = paths.root / "explain" / model_id, paths.plots(model_id)
    logged = {
        "experiment": model_id,
        "layers": choice.layers,
        "grad_cam_layer": choice.grad_cam_layer,
        **{f"explain.{k}": v for k, v in views.model_dump(exclude={"layers", "grad_cam_layer"}).items()},
    }
    started = time.perf_counter()
    with (
        stage.mlflow_run("explain", model_id, params, paths, paths.data_hash(dataset), logged),
        staged_outputs(paths.root) as out,
    ):
        folder = out.path(folder_target)
        folder.mkdir()
        pictures: list[Path] = []
        ascent: list[dict[str, Any]] = []
        if choice.grad_cam_layer is None:
            log.info("%s: the model has no convolution: no kernels, feature maps, patterns or Grad-CAM", model_id)
        else:
            pictures.append(explain.kernels_png(model, model_id, folder / "kernels.png"))
            pictures += explain.grad_cam_pngs(model, choice.grad_cam_layer, x_test, y_test, classes,
                                              views.grad_cam_images, model_id, folder)  # fmt: skip
        pictures += explain.feature_map_pngs(model, choice, x_test, views.max_maps, model_id, folder)
        patterns, ascent = explain.pattern_pngs(model, choice, views, params.seed, model_id, folder)
        pictures += patterns
        x_train, y_train = load_split(prepared / "train.npz")
        pictures.append(explain.hand_filters_png(x_train[0], model_id, folder / "hand_filters.png"))
        options = target.augmentation
        if options is not None:
            shown = explain.spread_over_classes(y_train, np.ones(len(y_train), bool), views.augmentation_images)
            preview = explain.augmentation_png(
                options, x_train[shown], [classes[y] for y in y_train[shown]], views.augmentation_draws, params.seed,
                model_id, folder / "augmentation.png",
            )  # fmt: skip
            pictures += [preview] if preview else []
        csv = write_text(
            out.path(plots_dir / "filter_ascent.csv"),
            pd.DataFrame(ascent, columns=explain.ASCENT_COLUMNS).to_csv(index=False),
        )
        mlflow.log_artifacts(str(folder), "explain")
        mlflow.log_artifact(str(csv))
        mlflow.log_metric("explain_seconds", time.perf_counter() - started)
    log.info("%s: %d pictures in %s (%.0f s)", model_id, len(pictures), folder_target, time.perf_counter() - started)
