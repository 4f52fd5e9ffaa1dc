"""Every epoch's metrics logged to the active MLflow run."""

from __future__ import annotations

from mlflow.keras.callback import MlflowCallback


class EpochsToMlflow(MlflowCallback):
    """MLflow's Keras callback, logging the optimizer and model summary at the first fit of a run only.

    Fine-tuning fits again with a new optimizer, and MLflow refuses to change a logged param.

    Not marked `async_safe`: Keras would then run batch-end hooks on a thread pool, which a stop signal could
    leave converting tensors while the stage exits. Keras waits for each compiled call's results instead;
    `steps_per_execution` makes those calls few.
    """

    def __init__(self) -> None:
        super().__init__()
        self._began = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self._began:
            trained = self.model
            self.set_model(getattr(trained, "network", trained))  # the network's summary, not its training wrapper's
            super().on_train_begin(logs)
            self.set_model(trained)
            self._began = True
