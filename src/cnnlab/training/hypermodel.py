"""A search trial's model and training: the recipe its hyperparameters make, built and fitted through the same
code as the experiments. What decides a trial's score lives here (`TRIAL_CODE`); logging is added by subclasses."""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from cnnlab.params import Tune
from cnnlab.training import backend, distribution
from cnnlab.training.fit import StopOnSignal, compile_model, seeded_model, trainer, training_inputs
from cnnlab.training.search_space import trial_recipe
from cnnlab.util.signals import stops_at_safe_points


class SearchHyperModel(kt.HyperModel):
    """Builds and fits the recipe a trial's hyperparameters make (seeded: equal values, equal start)."""

    def __init__(self, search: Tune, input_shape: tuple[int, ...], num_classes: int, seed: int):
        super().__init__(name="CNN")
        self.search, self.input_shape, self.num_classes, self.seed = search, input_shape, num_classes, seed

    def extra_callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks a subclass adds to every trial's fit (logging)."""
        return []

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        recipe = trial_recipe(hp, self.search)
        model = seeded_model(recipe, self.input_shape, self.num_classes, self.seed)
        return compile_model(model, recipe, self.num_classes)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, x: Any, y: Any, **kwargs: Any) -> Any:
        recipe = trial_recipe(hp, self.search)
        callbacks = [*kwargs.pop("callbacks", []), *self.extra_callbacks(), StopOnSignal()]
        seed = self.seed + kwargs.get("initial_epoch", 0)  # a continued trial: new epoch orders
        plan = distribution.of(model)  # the trial's model was built within its distribution: fit within it too
        x, y = distribution.divisible(x, y, plan.replicas, seed)
        validation = kwargs.get("validation_data")
        if isinstance(validation, tuple) and len(validation) == 2:  # the search's held-out arrays
            kwargs["validation_data"] = distribution.divisible(*validation, plan.replicas, seed)
        with stops_at_safe_points(), plan.scope():
            trained = trainer(model, recipe, self.num_classes, self.seed)
            backend.build_training_state(trained, x, y)
            return trained.fit(**training_inputs(x, y, recipe, seed), callbacks=callbacks, **kwargs)
