"""The explain stage's pictures of one trained model: first-layer kernels, feature maps, filter patterns, Grad-CAM
on correctly and wrongly classified test images, and the augmentation preview (seeds 000-004)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cnnlab.explain.filter_patterns import filter_patterns, for_display
from cnnlab.explain.grad_cam import check_output, grad_cam, upsample
from cnnlab.explain.hand_filters import sobel_edges
from cnnlab.explain.layer_views import feature_maps, first_conv_kernels
from cnnlab.nets.cut import conv_layer_names, last_map_layer, split, up_to
from cnnlab.params import Augmentation, ParamsError, Views
from cnnlab.plots.base import image_grid
from cnnlab.plots.layers import feature_map_grid, image_panels, kernel_grid
from cnnlab.training.augment import build_augmenter
from cnnlab.training.evaluation import classes_of

log = logging.getLogger("cnnlab.explain")


ASCENT_COLUMNS = ["series", "layer", "filter", "step", "activation"]


@dataclass(frozen=True)
class Choice:
    """The layers and images a model's views are drawn for, checked against the model and data before any work."""

    layers: list[str]
    grad_cam_layer: str | None  # None: the model has no convolution (a dense baseline)
    feature_map_images: list[int]


def choose(model: keras.Model, views: Views, test_images: int, model_id: str) -> Choice:
    """The configured layers (default: the first and last convolution) and Grad-CAM layer, all found in the model.

    A model without convolutions gets none by default: only its hand-filter and augmentation pictures are drawn.
    """
    convs = conv_layer_names(model)
    layers = views.layers or list(dict.fromkeys(convs[:1] + convs[-1:]))
    try:
        cam_layer = views.grad_cam_layer or (last_map_layer(model) if convs else None)
        for name in layers:
            _check_maps(up_to(model, name), name, convs)
        if cam_layer is not None:
            check_output(model)
            _check_maps(split(model, cam_layer)[0], cam_layer, convs)
    except ValueError as error:
        raise ParamsError(f"explain ({model_id}): {error}") from None
    too_far = [i for i in views.feature_map_images if i >= test_images]
    if too_far:
        raise ParamsError(
            f"explain ({model_id}).feature_map_images: {too_far} past the last of the {test_images} test images"
        )
    return Choice(layers, cam_layer, list(views.feature_map_images))


def _check_maps(cut: keras.Model, name: str, convs: list[str]) -> None:
    if len(cut.output_shape) != 4:
        raise ValueError(
            f"{name!r} outputs {cut.output_shape}, not feature maps (rows, columns, channels);"
            f" choose a convolution: {', '.join(convs) or 'the model has none'}"
        )


def kernels_png(model: keras.Model, title: str, path: Path) -> Path:
    return kernel_grid(first_conv_kernels(model), f"{title}: first convolution's kernels (min-max scaled)", path)


def feature_map_pngs(
    model: keras.Model, choice: Choice, images: np.ndarray, max_maps: int, title: str, folder: Path
) -> list[Path]:
    """One grid per layer and chosen image."""
    maps = feature_maps(model, choice.layers, images[choice.feature_map_images])
    return [
        feature_map_grid(
            maps[layer][k],
            f"{title}: {layer} on test image {index}",
            folder / f"feature_maps_{layer}_{index}.png",
            max_maps=max_maps,
        )
        for layer in choice.layers
        for k, index in enumerate(choice.feature_map_images)
    ]


def pattern_pngs(
    model: keras.Model, choice: Choice, views: Views, seed: int, title: str, folder: Path
) -> tuple[list[Path], list[dict[str, Any]]]:
    """(pictures, ascent rows): each layer's first filters' patterns, and their mean activation at every step."""
    pictures: list[Path] = []
    rows: list[dict[str, Any]] = []
    for layer in choice.layers:
        channels = up_to(model, layer).output_shape[-1]
        filters = list(range(min(views.filters, channels)))
        found = filter_patterns(model, layer, filters, views.ascent_steps, views.ascent_step_size, seed)
        log.info("%s: filter patterns of %s: mean activation %.3g -> %.3g", title, layer,
                 found.activations[0].mean(), found.activations[-1].mean())  # fmt: skip
        pictures.append(
            image_grid(
                for_display(found.images),
                [f"filter {f}" for f in filters],
                f"{title}: what {layer}'s filters respond to (gradient ascent, {views.ascent_steps} steps)",
                folder / f"filter_patterns_{layer}.png",
                columns=min(8, len(filters)),
            )
        )
        rows += [
            {"series": f"{layer} #{f}", "layer": layer, "filter": f, "step": step, "activation": float(value)}
            for step, per_filter in enumerate(found.activations)
            for f, value in zip(filters, per_filter, strict=True)
        ]
    return pictures, rows


def spread_over_classes(labels: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` indices where `candidates` holds: the first of each class in turn, then the second, ...

    Prepared splits may run class by class (the offline CIFAR-10 and cats vs dogs do): the first images alone
    would show one class.
    """
    index = np.flatnonzero(candidates)
    rank = np.zeros(len(index), dtype=np.int64)
    for label in np.unique(labels[index]):
        mine = labels[index] == label
        rank[mine] = np.arange(mine.sum())
    return index[np.lexsort((labels[index], rank))][:count]


def predictions(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its probability) per row of class probabilities (one sigmoid unit: class 1's)."""
    predicted = classes_of(probabilities)
    if probabilities.shape[-1] == 1:
        return predicted, np.where(predicted == 1, probabilities[:, 0], 1 - probabilities[:, 0])
    return predicted, np.take_along_axis(probabilities, predicted[:, None], axis=1)[:, 0]


def spread_is_decided(labels: np.ndarray, known: np.ndarray, candidates: np.ndarray, count: int) -> bool:
    """Whether `spread_over_classes` over every image is already decided by the `known` ones.

    `known` must hold a prefix of each class's images (in index order); `candidates` is False where unknown.
    Walking the spread's order (rank, then class), a class whose next candidate is not known yet, and whose
    images are not all known, could still put an image before the `count`-th: undecided.
    """
    found = {c: int((candidates & (labels == c)).sum()) for c in np.unique(labels)}
    complete = {c: bool(known[labels == c].all()) for c in found}
    taken, rank = 0, 0
    while taken < count and any(rank < found[c] or not complete[c] for c in found):
        for c in sorted(found):
            if taken == count:
                break
            if rank < found[c]:
                taken += 1
            elif not complete[c]:
                return False
        rank += 1
    return True


def predict_for_grad_cam(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, count: int, chunk: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, known): the model's class probabilities for as many test images as choosing `count`
    correctly and `count` wrongly classified ones needs, the same images a prediction of the whole test set
    would give (`spread_over_classes`). Images are predicted class by class in turn, `chunk` at a time; rows
    not predicted are zero and not `known`."""
    order = spread_over_classes(labels, np.ones(len(labels), bool), len(labels))
    known = np.zeros(len(labels), bool)
    probabilities = np.zeros((0, 0), "float32")
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        predicted_part = model.predict(images[part], batch_size=256, verbose=0)
        if start == 0:
            probabilities = np.zeros((len(labels), predicted_part.shape[-1]), predicted_part.dtype)
        probabilities[part], known[part] = predicted_part, True
        right = classes_of(probabilities) == labels
        if all(spread_is_decided(labels, known, known & ok, count) for ok in (right, ~right)):
            break
    return probabilities, known


def grad_cam_pngs(
    model: keras.Model,
    layer: str,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    count: int,
    title: str,
    folder: Path,
) -> list[Path]:
    """Heatmaps of the predicted class for `count` correctly and `count` wrongly classified test images."""
    probabilities, known = predict_for_grad_cam(model, images, labels, count)
    predicted, confidence = predictions(probabilities)
    pictures = []
    for kind, chosen in (("correct", known & (predicted == labels)), ("wrong", known & (predicted != labels))):
        index = spread_over_classes(labels, chosen, count)
        if not len(index):
            log.info("%s: no %s test image to explain", title, "misclassified" if kind == "wrong" else "correct")
            continue
        heat = upsample(grad_cam(model, layer, images[index], predicted[index]), images.shape[1:3])
        captions = [f"{classes[labels[i]]} → {classes[predicted[i]]} ({confidence[i]:.0%})" for i in index]
        what = "correctly" if kind == "correct" else "wrongly"
        title_text = f"{title}: Grad-CAM of {layer}, {what} classified (true → predicted)"
        pictures.append(image_grid(images[index], captions, title_text, folder / f"grad_cam_{kind}.png",
                                         overlays=heat))  # fmt: skip
    return pictures


def augmented_draws(options: Augmentation, images: np.ndarray, draws: int, seed: int) -> np.ndarray | None:
    """(draws, images, rows, cols, channels) uint8: `draws` random passes of the training augmenter, or None
    without augmentation."""
    augmenter = build_augmenter(options, seed)
    if augmenter is None:
        return None
    passes = [augmenter(images.astype("float32"), training=True) for _ in range(draws)]
    return np.stack([np.clip(np.rint(keras.ops.convert_to_numpy(p)), 0, 255) for p in passes]).astype(np.uint8)


def augmentation_png(
    options: Augmentation, images: np.ndarray, labels: list[str], draws: int, seed: int, title: str, path: Path
) -> Path | None:
    """Training images and `draws` random augmented versions of each (seed 004, program 6-7); None without
    augmentation."""
    augmented = augmented_draws(options, images, draws, seed)
    if augmented is None:
        return None
    captions = [label if r == 0 else f"draw {r}" for r in range(draws + 1) for label in labels]
    return image_grid(
        np.concatenate([images[None], augmented]).reshape(-1, *images.shape[1:]),
        captions,
        f"{title}: training images (top row) and {draws} augmented draws of each",
        path,
        columns=len(images),
    )


def hand_filters_png(image: np.ndarray, title: str, path: Path) -> Path:
    """Seed 000's Sobel filters and 2x2 max pooling, written out by hand, on one image (grey)."""
    grey = image.astype(np.float32).mean(axis=-1)
    return image_panels(sobel_edges(grey), f"{title}: Sobel filters and max pooling by hand", path)
