"""Run a study: every arm trained and scored on the same k folds, as nested MLflow runs, resumable.

MLflow: the stage's run (`crossval@C3`) is the parent, each arm a child (`C3/dropout`), each fold a
grandchild (`C3/dropout/fold2`) with its own params and per-epoch metrics.

Trainings at once (`parallel`): the folds of an arm can train side by side in worker processes (spawned, so
each has its own backend state), which keeps a GPU busy with models too small to fill it. Every training is
seeded alone, so a fold's score is the same whichever way it ran.

Resuming: every finished training is recorded at once in `folds/<study>/<arm>/fold<i>.json` (written
atomically), with a fingerprint of everything its score depends on: the arms' recipes, folds, seed,
sample count, data and code. An interrupted study run again with the same fingerprint skips the finished
trainings, reopens its parent and arm runs instead of starting new ones, and deletes the run of the
training that was cut off, so MLflow ends with exactly one finished run per arm and fold. A changed
study starts afresh.
"""
