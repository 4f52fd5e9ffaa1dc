"""Transfer learning: a pretrained backbone with a new head, trained as fast feature extraction (features computed
once, D3), with the frozen backbone inside the model (D4), or fine-tuned after the head has learned (D5)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cnnlab.catalog.networks import output_layer
from cnnlab.data.splits import Arrays
from cnnlab.nets.backbones import BackbonePreprocess, input_shape, set_trainable
from cnnlab.params import Head, Optimizer, Transfer
from cnnlab.training import backend
from cnnlab.training.fit import TrainResult, compile_model, fit
from cnnlab.util.files import write_with

log = logging.getLogger("cnnlab.transfer")


def head_layers(head: Head, num_classes: int) -> list[layers.Layer]:
    """Pooling, the dense layers (C7: Dense → BatchNorm → ReLU), dropout, and the output layer."""
    pooling = {"flatten": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}
    found: list[layers.Layer] = [pooling[head.pooling]()]
    for units in head.dense:
        if head.batchnorm:
            found += [layers.Dense(units), layers.BatchNormalization(), layers.Activation("relu")]
        else:
            found.append(layers.Dense(units, activation="relu"))
    if head.dropout:
        found.append(layers.Dropout(head.dropout))
    return [*found, output_layer(num_classes)]


def feature_extractor(recipe: Transfer, backbone: keras.Model, image_shape: tuple[int, ...]) -> keras.Model:
    """Raw 0..255 pixels → resized to the backbone's input → its own preprocessing → its features.

    The backbone's `trainable` layers are opened here (features mode allows none, so its saved model's
    trainable weights are the head's).
    """
    set_trainable(backbone, recipe.backbone.trainable)
    images = keras.Input(shape=image_shape, name="images")
    height, width, _ = input_shape(recipe.backbone, image_shape)
    x = images if (height, width) == tuple(image_shape[:2]) else layers.Resizing(height, width)(images)
    x = BackbonePreprocess(recipe.backbone.name, name="preprocess")(x)
    # training=False: batch-norm statistics stay ImageNet's, also once the layers are unfrozen for fine-tuning
    features = backbone(x, training=False)
    return keras.Model(images, features, name=f"{backbone.name}_features")


def head_model(feature_shape: tuple[int, ...], head: Head, num_classes: int) -> keras.Sequential:
    return keras.Sequential([keras.Input(shape=feature_shape), *head_layers(head, num_classes)], name="head")


def with_head(extractor: keras.Model, head: keras.Model) -> keras.Model:
    """One model from raw images to class scores, for the evaluate stage and `cnnlab predict`."""
    return keras.Model(extractor.input, head(extractor.output), name=f"transfer_{extractor.name}")


def transfer_model(
    recipe: Transfer, backbone: keras.Model, image_shape: tuple[int, ...], num_classes: int, seed: int
) -> keras.Model:
    """Backbone (its `trainable` layers open) and a new head in one model, for modes end_to_end and finetune."""
    extractor = feature_extractor(recipe, backbone, image_shape)
    backend.seed_everything(seed)
    return with_head(extractor, head_model(extractor.output.shape[1:], recipe.head, num_classes))


def train_transfer(
    recipe: Transfer,
    backbone: keras.Model,
    train: Arrays,
    validation: Arrays | None,
    num_classes: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback],
    features_cache: Path | None = None,
) -> TrainResult:
    """Train `recipe` on `backbone` in its mode; the result's model always takes raw images."""
    if recipe.mode == "features":
        extractor = feature_extractor(recipe, backbone, tuple(train[0].shape[1:]))
        return _train_on_features(recipe, extractor, train, validation, num_classes, seed, callbacks, features_cache)
    model = transfer_model(recipe, backbone, tuple(train[0].shape[1:]), num_classes, seed)
    first = fit(model, recipe, train, validation, num_classes, seed, callbacks)
    if recipe.mode == "end_to_end":
        return first
    unfrozen = set_trainable(backbone, recipe.unfreeze)
    log.info("fine-tuning: %d backbone layers train at learning rate %g", unfrozen, recipe.fine_tune_learning_rate)
    slow = Optimizer(name=recipe.optimizer.name, learning_rate=recipe.fine_tune_learning_rate)
    tuning = recipe.model_copy(update={"optimizer": slow, "epochs": recipe.fine_tune_epochs})
    second = fit(model, tuning, train, validation, num_classes, seed, callbacks, initial_epoch=first.epochs_run)
    history = {k: first.history[k] + second.history[k] for k in first.history}
    return TrainResult(
        model, history, first.seconds + second.seconds, first.train_samples, first.epochs_run + second.kept_epoch
    )


def _train_on_features(
    recipe: Transfer,
    extractor: keras.Model,
    train: Arrays,
    validation: Arrays | None,
    num_classes: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback],
    cache: Path | None,
) -> TrainResult:
    """D3: the frozen backbone sees every image once; the head alone trains, on the stored features."""
    started = time.perf_counter()
    splits = {"train": train[0], **({"validation": validation[0]} if validation is not None else {})}
    features = cached_features(extractor, splits, recipe, cache)
    extract_seconds = time.perf_counter() - started
    backend.seed_everything(seed)
    head = head_model(features["train"].shape[1:], recipe.head, num_classes)
    on_features = (features["validation"], validation[1]) if validation is not None else None
    trained = fit(head, recipe, (features["train"], train[1]), on_features, num_classes, seed, callbacks)
    full = compile_model(with_head(extractor, head), recipe, num_classes)
    full.optimizer.build(full.trainable_variables)  # saved with slots for the head's weights, so it loads cleanly
    log.info("features of %d images in %.1f s; head trained in %.1f s", sum(map(len, splits.values())),
             extract_seconds, trained.seconds)  # fmt: skip
    return TrainResult(full, trained.history, trained.seconds + extract_seconds, len(train[0]), trained.kept_epoch)


def cached_features(
    extractor: keras.Model, splits: dict[str, np.ndarray], recipe: Transfer, cache: Path | None
) -> dict[str, np.ndarray]:
    """The backbone's features of each split, read back from `cache` when backbone and images are unchanged."""
    digest = hashlib.sha256(json.dumps(recipe.backbone.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(keras.__version__.encode())
    for name, images in splits.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(images).data)  # hashed in place, not copied
    fingerprint = digest.hexdigest()[:16]
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == fingerprint and set(splits) <= set(stored.files):
                log.info("features: reused %s", cache)
                return {name: stored[name] for name in splits}
    found = {name: extractor.predict(images, batch_size=64, verbose=2) for name, images in splits.items()}
    if cache is not None:
        write_with(cache, lambda tmp: np.savez(tmp, fingerprint=np.array(fingerprint), **found))
    return found
