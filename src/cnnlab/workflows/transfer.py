"""A pretrained backbone with a new head, trained in its recipe's mode (features, frozen or
finetune), saved as models/<id>.keras for the evaluate stage."""

from __future__ import annotations

from functools import partial

from cnnlab.data.prepare import read_meta, training_splits
from cnnlab.data.splits import subsample
from cnnlab.nets.backbones import build_backbone, first_trainable
from cnnlab.params import Params, ParamsError
from cnnlab.pipeline import stage
from cnnlab.training.transfer import train_transfer
from cnnlab.workflows.train import train_and_save


def run(params: Params, paths: stage.Paths, transfer_id: str) -> None:
    target = params.target(transfer_id)
    recipe, budget = params.transfer(transfer_id), target.budget
    prepared = paths.prepared(recipe.dataset)
    meta = read_meta(prepared)
    # Missing weights fail here, before the data is read or anything trains.
    backbone = build_backbone(recipe.backbone, meta["image_shape"], params.data.weights_mirror, params.data.online)
    for name, spec in (("backbone.trainable", recipe.backbone.trainable), ("unfreeze", recipe.unfreeze)):
        try:
            first_trainable(backbone, spec)
        except ValueError as exc:
            raise ParamsError(f"finetune.recipes.{transfer_id}.{name}: {exc}") from None
    (x_train, y_train), validation = training_splits(prepared, recipe.validation, params.seed, recipe.stratify)
    train = subsample(x_train, y_train, target.train_samples, params.seed)
    classes = len(meta["classes"])
    trainer = partial(train_transfer, recipe, backbone, train, validation, classes, params.seed,
                      features_cache=paths.features(transfer_id))  # fmt: skip
    train_and_save(params, paths, transfer_id, recipe, train, validation, meta, budget, "finetune", trainer)
