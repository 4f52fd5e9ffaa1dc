"""The tune stage's work: a Keras Tuner search over the CNN search space of params, run locally, as the
chief of a distributed search (serves the oracle, writes the outputs) or as one of its workers.

Distributed (Keras Tuner's chief / worker mode), one command per machine:
  chief:  KERASTUNER_TUNER_ID=chief   KERASTUNER_ORACLE_IP=<chief address> KERASTUNER_ORACLE_PORT=8000 dvc repro tune@T1
  worker: KERASTUNER_TUNER_ID=worker1 KERASTUNER_ORACLE_IP=<chief address> KERASTUNER_ORACLE_PORT=8000 cnnlab tune T1
"""

from __future__ import annotations

import logging
import time

import mlflow

from cnnlab.data.prepare import read_meta, training_splits
from cnnlab.data.splits import Arrays, subsample
from cnnlab.params import Params, default_loss
from cnnlab.pipeline import stage
from cnnlab.tracking.inputs import TRAINING, VALIDATION, log_prepared_inputs
from cnnlab.tracking.runs import use_experiment
from cnnlab.tracking.system import system_metrics
from cnnlab.training.labels import encode_labels
from cnnlab.util.files import staged_outputs
from cnnlab.workflows.search_outputs import (
    best_hyperparameters,
    log_search,
    search_metrics,
    trial_records,
    trials_table,
    write_search_outputs,
)
from cnnlab.workflows.tuner import (
    FINGERPRINT_TAG,
    TrackedHyperModel,
    discard_unfinished,
    find_chief_run,
    prepare_folder,
    role,
    run_search,
    search_fingerprint,
    tracked_tuner,
)

log = logging.getLogger("cnnlab.tune")
# Knobs that only say how long to search: tags, since a resumed run refuses a changed param.
BUDGET_KNOBS = ("max_trials", "max_minutes", "top_n", "max_retries_per_trial", "max_consecutive_failed_trials")


def search_data(params: Params, paths: stage.Paths, search_id: str) -> tuple[Arrays, Arrays, dict]:
    """The trials' training and validation arrays (labels encoded for the loss) and the data set's meta."""
    search = params.search(search_id)
    prepared = paths.prepared(search.dataset)
    meta = read_meta(prepared)
    (x_train, y_train), (x_val, y_val) = training_splits(prepared, search.validation, params.seed, stratify=True)
    x_train, y_train = subsample(x_train, y_train, params.target(search_id).train_samples, params.seed)
    classes = len(meta["classes"])
    loss = default_loss(classes)
    train = (x_train.astype("float32"), encode_labels(y_train, loss, classes))
    return train, (x_val.astype("float32"), encode_labels(y_val, loss, classes)), meta


def main(params: Params, paths: stage.Paths, search_id: str) -> None:
    search, budget = params.search(search_id), params.search_budget(search_id)
    train, validation, meta = search_data(params, paths, search_id)
    classes, input_shape = len(meta["classes"]), train[0].shape[1:]
    data_hash = paths.data_hash(search.dataset)
    fingerprint = search_fingerprint(search, params.seed, data_hash, len(train[1]))
    hypermodel = TrackedHyperModel(search, input_shape, classes, params.seed)
    folder, who = paths.tuning(search_id), role()
    log.info(
        "%s: %s search (%s) on %s, %d train / %d validation images, budget %s",
        *(search_id, search.tuner, who, search.dataset, len(train[1]), len(validation[1]), budget),
    )
    if who == "worker":
        run_worker(params, paths, search_id, fingerprint, hypermodel, train, validation)
        return
    state, fresh = prepare_folder(folder, fingerprint, search_id)
    knobs = set(BUDGET_KNOBS) | {"budgets", "budget", "description"}
    logged = {"search": search_id, "budget": budget, "seed": params.seed, "train_samples": len(train[1]),
              "val_samples": len(validation[1]), **search.model_dump(mode="json", exclude=knobs)}  # fmt: skip
    parent_id = None if fresh else state.reusable_parent()
    with (
        stage.mlflow_run("tune", search_id, params, paths, data_hash, logged, run_id=parent_id) as run,
        staged_outputs(paths.root) as out,
    ):
        mlflow.set_tags({"role": who, **{k: str(getattr(search, k)) for k in BUDGET_KNOBS}})
        log_prepared_inputs(meta, data_hash, paths.prepared(search.dataset), [TRAINING, VALIDATION])
        tuner = tracked_tuner(search, hypermodel, folder, params.seed, fresh)  # a fresh tuner empties the folder
        state.parent_run_id = run.info.run_id
        state.save()
        tuner.parent_run_id, tuner.search_id = run.info.run_id, search_id
        if not fresh:
            discard_unfinished(run.info.run_id, set(tuner.oracle.end_order))
        mlflow.set_tag(FINGERPRINT_TAG, fingerprint)  # workers wait for it: only now is the directory ready
        deadline = time.monotonic() + 60 * search.max_minutes if search.max_minutes and who == "local" else None
        with system_metrics():
            timed_out, seconds = run_search(tuner, search, train, validation, deadline)
        records = trial_records(tuner.oracle, search, run.info.run_id)
        if not any(r.status == "completed" for r in records):
            raise RuntimeError(f"{search_id}: no trial completed; their errors are in the MLflow trial runs")
        best = best_hyperparameters(tuner, search, input_shape, classes, params.seed)
        table = trials_table(records, search.objective)
        metrics = search_metrics(records, best, search, timed_out)
        files = write_search_outputs(search_id, table, best, metrics, search, out, paths)
        log_search(table, best, metrics, search, files)
    log.info(
        "%s: %d trials in %.1f min; best %s %.4f (trial %s, %d parameters, %d epochs)",
        *(search_id, metrics["trials"], seconds / 60, search.objective, best["best_objective"], best["trial_id"]),
        *(best["params"], best["epochs"]),
    )


def run_worker(
    params: Params, paths: stage.Paths, search_id: str, fingerprint: str, hypermodel, train, validation
) -> None:
    """Run trials for the chief until its oracle says the search is over; the chief writes the outputs."""
    search = params.search(search_id)
    experiment_id = use_experiment(params.mlflow.experiment_name, paths.root)
    parent = find_chief_run(experiment_id, fingerprint)
    paths.tuning(search_id).mkdir(parents=True, exist_ok=True)
    tuner = tracked_tuner(search, hypermodel, paths.tuning(search_id), params.seed, fresh=False)
    tuner.parent_run_id, tuner.search_id = parent, search_id
    run_search(tuner, search, train, validation, None)
    log.info("%s: worker %s done", search_id, tuner.tuner_id)
