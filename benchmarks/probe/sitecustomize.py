"""Where a pipeline stage's time goes, measured from outside the project's code.

`benchmarks/run.py pipeline` puts this folder on PYTHONPATH, so Python loads this file at start-up in every
process of a `dvc repro`. It acts only in stage processes (DVC sets DVC_STAGE for them): it wraps the
functions that compute (fit, predict, gradient ascent, reading and writing data) and those that do not
(params, MLflow, saving models and figures) as their modules load, and at exit writes one JSON record of
exclusive seconds per phase to $CNNLAB_PROBE_DIR. Nothing here changes what a stage does, so the same probe
measures any commit of the project.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

# module -> [(attribute path, phase)]: the functions timed, as they are named in that module
HOOKS: dict[str, list[tuple[str, str]]] = {
    "keras": [
        ("Model.fit", "fit"),
        ("Model.predict", "predict"),
        ("Model.evaluate", "predict"),
        ("Model.predict_on_batch", "predict"),
        ("Model.save", "save"),
        ("saving.load_model", "load"),
    ],
    "cnnlab.explain.filter_patterns": [("filter_patterns", "ascent")],
    "cnnlab.explain.grad_cam": [("grad_cam", "ascent")],
    "cnnlab.explain.layer_views": [("feature_maps", "predict")],
    "cnnlab.data.download": [("fetch", "data")],
    "cnnlab.data.prepare": [("read_raw", "data"), ("save_split", "data"), ("load_split", "load")],
    "cnnlab.params": [("load_params", "params")],
    "cnnlab.pipeline.stage": [("run", "entry")],  # not a phase: where import time ends and the stage's own code starts
    "matplotlib.figure": [("Figure.savefig", "save")],
    "mlflow": [
        (name, "mlflow")
        for name in [
            *("start_run", "end_run", "log_metrics", "log_metric", "log_params", "log_param", "set_tag", "set_tags"),
            *("log_artifact", "log_artifacts", "log_text", "log_dict", "log_figure", "log_table", "log_input"),
            *("search_runs", "set_tracking_uri", "set_experiment", "get_experiment_by_name", "create_experiment"),
            *("register_model", "MlflowClient"),
        ]
    ],
    "mlflow.keras": [("log_model", "mlflow"), ("load_model", "load")],
    "mlflow.models": [("infer_signature", "mlflow")],
    # A study training folds on worker processes waits here for their scores: the workers' fits (and their
    # start-up) are the stage's compute, counted once however many run side by side.
    "multiprocessing.pool": [("IMapIterator.__next__", "workers")],
}
# The phases that are the stage's work; every other second is overhead.
COMPUTE = ("fit", "predict", "ascent", "data", "workers")

seconds: dict[str, float] = {}
_stack: list[list[Any]] = []  # [phase, started] of the calls in progress; time counts for the innermost only
_stage_entered: list[float] = []


def _enter(phase: str) -> None:
    now = time.perf_counter()
    if _stack:
        outer = _stack[-1]
        seconds[outer[0]] = seconds.get(outer[0], 0.0) + now - outer[1]
    _stack.append([phase, now])


def _leave() -> None:
    now = time.perf_counter()
    phase, started = _stack.pop()
    seconds[phase] = seconds.get(phase, 0.0) + now - started
    if _stack:
        _stack[-1][1] = now


def timed(function: Callable[..., Any], phase: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _enter(phase)
        try:
            return function(*args, **kwargs)
        finally:
            _leave()

    return wrapper


def timed_class(cls: type, phase: str) -> type:
    """Every public method of `cls` timed (MlflowClient: the registry and run lookups go through it)."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, timed(value, phase))
    return cls


def _wrap(module: Any, dotted: str, phase: str) -> None:
    *owner_path, name = dotted.split(".")
    owner = module
    for part in owner_path:
        owner = getattr(owner, part, None)
        if owner is None:
            return
    target = getattr(owner, name, None)
    if phase == "entry" and callable(target):
        setattr(owner, name, _marks_entry(target))
    elif isinstance(target, type):
        timed_class(target, phase)
    elif callable(target) and not getattr(target, "_probed", False):
        wrapper = timed(target, phase)
        wrapper._probed = True  # type: ignore[attr-defined]
        setattr(owner, name, wrapper)


def _wrap_hooks(module: Any, name: str) -> None:
    for dotted, phase in HOOKS[name]:
        _wrap(module, dotted, phase)


def _marks_entry(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _stage_entered.append(time.time())
        return function(*args, **kwargs)

    return wrapper


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps a hooked module's functions as soon as the module has run, before anyone imports names from it."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in HOOKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            _wrap_hooks(module, name)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def process_started() -> float:
    """This process's start, in seconds since the epoch (Linux /proc; clock ticks of 10 ms)."""
    with open("/proc/self/stat") as fh:
        ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as fh:
        boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _write() -> None:
    while _stack:  # a stage that exits from inside a timed call (sys.exit in a user error)
        _leave()
    record = {
        "stage": os.environ["DVC_STAGE"],
        "argv": sys.argv,
        "started": process_started(),
        "entered": _stage_entered[0] if _stage_entered else None,
        "ended": time.time(),
        "seconds": seconds,
        "warm": bool(os.environ.get("CNNLAB_WARM_CLIENT")),  # run by a warm worker's fork
    }
    folder = os.environ["CNNLAB_PROBE_DIR"]
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as fh:
        json.dump(record, fh)


def _stage_process() -> bool:
    """The stage command's own process, or the warm worker's fork that runs the stage for it
    (cnnlab.pipeline.warm_worker loads this file again there); not the processes they start (MLflow inferring a
    model's requirements, a Keras Tuner worker), which inherit DVC_STAGE and whose time is inside the phase that
    started them."""
    if not (os.environ.get("DVC_STAGE") and os.environ.get("CNNLAB_PROBE_DIR")):
        return False
    probed = os.environ.get("CNNLAB_PROBED")
    return not probed or probed == os.environ.get("CNNLAB_WARM_CLIENT")


if _stage_process():
    os.environ["CNNLAB_PROBED"] = str(os.getpid())
    sys.meta_path.insert(0, _AfterImport())
    for _name in set(HOOKS) & set(sys.modules):  # preloaded by a warm worker
        _wrap_hooks(sys.modules[_name], _name)
    atexit.register(_write)
