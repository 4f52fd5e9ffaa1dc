# ruff: noqa: I001  (cnnlab is imported first: it quiets TensorFlow before TensorFlow loads)
"""cnnlab's benchmark harness: the pipeline against plain seed scripts, and the pipeline's own overheads.

    python benchmarks/run.py training [--experiments F1 M3] [--budget quick|full|speed] [--epochs N] [--seeds 1 2]
    python benchmarks/run.py study [--study C4] [--parallel 1 5]  a study's folds one at a time against several at once
    python benchmarks/run.py peer [--study C3] [--folds 1 2]      study folds: plain seed script against the pipeline
    python benchmarks/run.py ray [--study C4] [--nodes 1 2]      a study's trainings here against Ray on loopback nodes
    python benchmarks/run.py data [--datasets mnist cifar10]     download + preprocess, as stage processes
    python benchmarks/run.py noop [--project DIR]                a `dvc repro` with nothing to do
    python benchmarks/run.py pipeline [--setup] [--keep]         a fresh quick `dvc repro` in a scratch clone, per stage

Each prints a Markdown table (docs/performance.md collects them) and writes its figures, with the machine,
backend and versions, to benchmarks/results/<command>-<time>.json. Read the project's params and prepared
data from --project (default: the current folder); `training` needs `dvc repro preprocess` done there.
"""

from __future__ import annotations

import cnnlab  # noqa: F401

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # measure.py and plain.py beside this script

if TYPE_CHECKING:
    from measure import ArmResult

# Test accuracy each experiment's time-to-accuracy is measured to (issue 9's targets, the seeds' claims rounded down)
TARGETS = {"F1": 0.91, "M2": 0.99, "M3": 0.991, "C1": 0.77, "C2": 0.77}


def machine() -> dict[str, object]:
    import keras

    from cnnlab.training import backend

    versions = {"python": platform.python_version(), "keras": keras.__version__}
    for name in ("jax", "jaxlib", "tensorflow-cpu", "tensorflow", "torch", "mlflow", "dvc"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = models[0] if models else cpu
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": backend.name(),
        "device": backend.device(),
        "versions": versions,
        "commit": commit.stdout.strip(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def save(args: argparse.Namespace, figures: dict[str, object]) -> Path:
    out = Path(args.results) / f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), **figures}, indent=2) + "\n")
    return out


# ---- training: the pipeline's fit against the plain seed script, same data, recipe and process ----


def train_arms(project: Path, exp_id: str, args: argparse.Namespace) -> list:
    import mlflow
    import numpy as np

    from measure import ArmResult, Clock, PeakMemory
    from plain import plain_fit, plain_model, seed_layers

    from cnnlab.params import load_params
    from cnnlab.data.prepare import load_split
    from cnnlab.pipeline.stage import Paths
    from cnnlab.workflows.train import experiment_data
    from cnnlab.tracking.epochs import EpochsToMlflow
    from cnnlab.training.fit import fit, seeded_model

    params = load_params(project / "params.yaml")
    if args.budget:
        params = params.model_copy(update={"budget": args.budget})
    paths = Paths(project)
    recipe = params.recipe(exp_id)
    changes = {"epochs": args.epochs, "steps_per_execution": args.steps_per_execution, "precision": args.precision}
    recipe = recipe.model_copy(update={k: v for k, v in changes.items() if v is not None})
    (x_train, y_train), validation, meta = experiment_data(params, paths, exp_id)
    if args.train_samples:
        x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_test, y_test = load_split(paths.prepared(recipe.dataset) / "test.npz")
    target = args.target or TARGETS.get(exp_id, 0.0)
    if "plain" in args.arms:
        seed_layers(recipe)  # a model or option the plain script lacks stops here, before any training

    def measured(arm: str, seed: int, clock: Clock, train: callable) -> ArmResult:
        with PeakMemory() as memory:
            started = time.perf_counter()
            train()
            wall = time.perf_counter() - started
        reached = clock.seconds_to(target)
        result = ArmResult(arm, exp_id, seed, len(x_train), recipe.epochs, wall, clock.epoch_seconds,
                           clock.test_accuracy, target, reached, memory.host, memory.device)  # fmt: skip
        print(f"{exp_id} {arm} seed {seed}: {wall:.1f} s, test accuracy {result.final_test_accuracy:.4f}", flush=True)
        return result

    def plain(seed: int) -> ArmResult:  # /255 outside the model, the seed's Sequential, fit on the same arrays
        scale = 1 / np.float32(255)
        clock = Clock(x_test * scale, y_test)
        model = plain_model(recipe, x_train.shape[1:], seed)
        scaled_validation = (validation[0] * scale, validation[1]) if validation else None
        return measured("plain", seed, clock, lambda: plain_fit(
            model, (x_train * scale, y_train), scaled_validation, recipe, seed, [clock], args.verbose))  # fmt: skip

    def pipeline(seed: int) -> ArmResult:  # what the train stage runs, logging every epoch to a scratch MLflow store
        clock = Clock(x_test, y_test)
        classes = len(meta["classes"])
        with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
            mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
            with mlflow.start_run():
                model = seeded_model(recipe, x_train.shape[1:], classes, seed)
                return measured("pipeline", seed, clock, lambda: fit(
                    model, recipe, (x_train, y_train), validation, classes, seed,
                    [EpochsToMlflow(), clock], verbose=args.verbose))  # fmt: skip

    # The arms in the order asked (--arms): the first pays the backend's start-up. The split is params' seed's.
    arms = {"plain": plain, "pipeline": pipeline}
    return [arms[arm](seed) for seed in args.seeds or [params.seed] for arm in args.arms]


TRAINING_HEADER = ["experiment", "arm", "seed", "train images", "epochs", "first epoch s", "steady epoch s",
                   "images/s", "train s", "wall s", "time to target s", "final test acc", "peak host MiB",
                   "peak device MiB"]  # fmt: skip
RATIO_HEADER = ["experiment", "seed", "speed-up per epoch (plain / pipeline)", "speed-up in training time",
                "accuracy change"]  # fmt: skip
SEEDS_HEADER = ["experiment", "arm", "seeds", "test acc mean", "test acc min", "reached target", "time to target s",
                "first epoch s (compilation)"]  # fmt: skip


def training_row(r: ArmResult) -> list[str]:
    reach = f"{r.seconds_to_target:.1f}" if r.seconds_to_target else "not reached"
    return [r.experiment, r.arm, str(r.seed), str(r.train_images), str(r.epochs), f"{r.first_epoch:.2f}",
            f"{r.steady_epoch:.2f}", f"{r.images_per_second:,.0f}", f"{r.train_seconds:.1f}", f"{r.wall_seconds:.1f}",
            f"{reach} ({r.target:.1%})", f"{r.final_test_accuracy:.4f}", f"{r.peak_host_mib:,.0f}",
            f"{r.peak_device_mib:,.0f}"]  # fmt: skip


def ratio_rows(results: list[ArmResult]) -> list[list[str]]:
    """Plain against pipeline, for each experiment and seed that ran both."""
    by_key = {(r.experiment, r.seed, r.arm): r for r in results}
    rows = []
    for (exp_id, seed, arm), plain in by_key.items():
        pipeline = by_key.get((exp_id, seed, "pipeline"))
        if arm == "plain" and pipeline:
            rows.append([exp_id, str(seed), f"{plain.steady_epoch / pipeline.steady_epoch:.2f}x",
                         f"{plain.train_seconds / pipeline.train_seconds:.2f}x",
                         f"{pipeline.final_test_accuracy - plain.final_test_accuracy:+.4f}"])  # fmt: skip
    return rows


def seed_rows(results: list[ArmResult]) -> list[list[str]]:
    """Per experiment and arm over its seeds: accuracy mean and minimum, how many reached the target and when."""
    groups: dict[tuple[str, str], list[ArmResult]] = {}
    for r in results:
        groups.setdefault((r.experiment, r.arm), []).append(r)
    rows = []
    for (exp_id, arm), runs in groups.items():
        accuracies = [r.final_test_accuracy for r in runs]
        times = [r.seconds_to_target for r in runs if r.seconds_to_target is not None]
        reach = f"mean {statistics.mean(times):.2f}, max {max(times):.2f}" if times else "-"
        rows.append([exp_id, arm, str(len(runs)), f"{statistics.mean(accuracies):.4f}", f"{min(accuracies):.4f}",
                     f"{len(times)} of {len(runs)} ({runs[0].target:.1%})", reach,
                     f"{statistics.mean(r.first_epoch for r in runs):.2f}"])  # fmt: skip
    return rows


def training(args: argparse.Namespace) -> None:
    project = Path(args.project).resolve()
    results = [r for exp_id in args.experiments for r in train_arms(project, exp_id, args)]
    print(markdown(TRAINING_HEADER, [training_row(r) for r in results]))
    if ratios := ratio_rows(results):
        print("\n" + markdown(RATIO_HEADER, ratios))
    if len(args.seeds or []) > 1:
        print("\n" + markdown(SEEDS_HEADER, seed_rows(results)))
    derived = ("first_epoch", "steady_epoch", "images_per_second", "train_seconds", "final_test_accuracy")
    figures = [asdict(r) | {name: getattr(r, name) for name in derived} for r in results]
    print(f"\nsaved {save(args, {'budget': args.budget, 'results': figures})}")


# ---- study: a study's trainings one at a time against several at once ----


def study_once(project: Path, params: object, study_id: str, parallel: int) -> tuple:
    """Run the study from scratch in a scratch folder (its own ledger and MLflow store, the project's prepared
    data): nothing is resumed and nothing of the project's is touched."""
    kind = "ablation" if study_id in params.ablation else "crossval"
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        plan, scratch = scratch_plan(project, params, study_id, kind, Path(tmp))
        with plan.parent_run(params, scratch, {}):
            return plan, plan.train_all(params.seed, parallel)


def scratch_plan(
    project: Path, params: object, study_id: str, kind: str, scratch: Path, tracking_uri: str | None = None
) -> tuple:
    """The study's plan over the project's prepared data, with its ledger and MLflow store in `scratch` (and
    the scratch project's paths); its runs go to `tracking_uri` when given."""
    import mlflow

    from cnnlab.pipeline.stage import Paths
    from cnnlab.workflows.study.plan import StudyPlan

    paths = Paths(scratch)
    (scratch / "data").mkdir()
    (scratch / "data" / "prepared").symlink_to(project / "data" / "prepared")
    mlflow.set_tracking_uri(tracking_uri or f"sqlite:///{scratch / 'mlflow.db'}")
    return StudyPlan.make(kind, study_id, params, paths), paths


def study(args: argparse.Namespace) -> None:
    import numpy as np

    from cnnlab.training import backend
    from cnnlab.pipeline import stage
    from cnnlab.params import load_params

    stage.setup_logging()  # the study's progress lines: each training's score and the time left
    project = Path(args.project).resolve()
    params = load_params(project / "params.yaml")
    if args.budget:
        params = params.model_copy(update={"budget": args.budget})
    backend.share_the_device()
    rows, figures = [], []
    for parallel in args.parallel:
        plan, run = study_once(project, params, args.study, parallel)
        scores = [(s.arm, s.fold, s.val_accuracy, s.val_loss) for s in run.scores]
        same = not figures or scores == figures[0]["scores"]
        cells = {arm: float(np.mean([s.val_accuracy for s in run.scores if s.arm == arm])) for arm in plan.arms}
        mean_cell = f"{100 * np.mean(list(cells.values())):.2f}%"
        rows.append([args.study, parallel, len(scores), f"{run.wall_seconds:.1f}", f"{run.trainings_per_minute:.2f}",
                     mean_cell, "yes" if same else "NO"])  # fmt: skip
        figures.append({"parallel": parallel, "wall_seconds": run.wall_seconds, "cell_accuracy": cells,
                        "scores": scores, "same_scores_as_first": same})  # fmt: skip
        print(f"{args.study}, {parallel} at once: {run.wall_seconds:.1f} s, same scores: {same}", flush=True)
    print(markdown(["study", "at once", "trainings", "wall s", "trainings/min", "mean cell accuracy", "same scores"],
                   rows))  # fmt: skip
    if len(figures) > 1:
        ratio = figures[0]["wall_seconds"] / figures[-1]["wall_seconds"]
        print(f"\nspeed-up of {args.parallel[-1]} at once over {args.parallel[0]}: {ratio:.2f}x")
    print(f"\nsaved {save(args, {'study': args.study, 'budget': params.study_budget(args.study), 'runs': figures})}")


# ---- peer: a study arm's fold trained by the plain seed script and by the pipeline, same fold and seed ----

PEER_HEADER = ["arm", "fold", "seed", "plain val acc", "pipeline val acc", "pipeline - plain", "plain train acc",
               "pipeline train acc", "plain s", "pipeline s"]  # fmt: skip


def peer_fold(plan: object, arm: str, fold: int, seed: int, verbose: int) -> dict[str, object]:
    """One fold of one arm, twice: the plain seed script (inputs / 255 outside the model, the seed's Sequential,
    `model.fit`) and the pipeline's own fold training (`train_fold`, what the study stage runs)."""
    import mlflow
    import numpy as np
    from plain import plain_fit, plain_model

    from cnnlab.tracking.epochs import EpochsToMlflow
    from cnnlab.training.fit import train_fold

    recipe = plan.arms[arm]
    train_index, val_index = plan.folds[fold - 1]
    train, val = (plan.x[train_index], plan.y[train_index]), (plan.x[val_index], plan.y[val_index])
    scale = 1 / np.float32(255)
    started = time.perf_counter()
    model = plain_model(recipe, train[0].shape[1:], seed)
    plain = plain_fit(model, (train[0] * scale, train[1]), (val[0] * scale, val[1]), recipe, seed, verbose=verbose)
    plain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"{plan.study_id}/{arm}/fold{fold}"):
        final, _, _ = train_fold(recipe, train, val, len(plan.classes), seed, [EpochsToMlflow()], verbose)
    return {"arm": arm, "fold": fold, "seed": seed, "epochs": recipe.epochs, "train_samples": len(train[1]),
            "plain": {"val_accuracy": plain["val_accuracy"][-1], "val_loss": plain["val_loss"][-1],
                      "train_accuracy": plain["accuracy"][-1], "curve": plain["val_accuracy"],
                      "seconds": plain_seconds},
            "pipeline": {"val_accuracy": final["val_accuracy"], "val_loss": final["val_loss"],
                         "train_accuracy": final["accuracy"], "seconds": time.perf_counter() - started}}  # fmt: skip


def peer_rows(figures: list[dict]) -> list[list[str]]:
    """One row per arm and fold, then each arm's mean over its folds."""
    rows, arms = [], {}
    for f in figures:
        plain, pipeline = f["plain"], f["pipeline"]
        rows.append([f["arm"], str(f["fold"]), str(f["seed"]), f"{plain['val_accuracy']:.2%}",
                     f"{pipeline['val_accuracy']:.2%}",
                     f"{100 * (pipeline['val_accuracy'] - plain['val_accuracy']):+.2f} pp",
                     f"{plain['train_accuracy']:.2%}", f"{pipeline['train_accuracy']:.2%}", f"{plain['seconds']:.0f}",
                     f"{pipeline['seconds']:.0f}"])  # fmt: skip
        arms.setdefault(f["arm"], []).append(f)
    for arm, folds in arms.items():
        plain = statistics.mean(f["plain"]["val_accuracy"] for f in folds)
        pipeline = statistics.mean(f["pipeline"]["val_accuracy"] for f in folds)
        rows.append([f"**{arm} mean**", f"{len(folds)} folds", "", f"{plain:.2%}", f"{pipeline:.2%}",
                     f"{100 * (pipeline - plain):+.2f} pp", "", "", "", ""])  # fmt: skip
    return rows


def peer(args: argparse.Namespace) -> None:
    from cnnlab.pipeline import stage
    from cnnlab.params import load_params

    stage.setup_logging()
    project = Path(args.project).resolve()
    params = load_params(project / "params.yaml")
    if args.budget:
        params = params.model_copy(update={"budget": args.budget})
    kind = "ablation" if args.study in params.ablation else "crossval"
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        plan, _ = scratch_plan(project, params, args.study, kind, Path(tmp))
        unknown = sorted(set(args.arms or []) - set(plan.arms))
        if unknown or any(not 1 <= f <= len(plan.folds) for f in args.folds):
            raise SystemExit(f"{args.study} has arms {', '.join(plan.arms)} and folds 1-{len(plan.folds)}; "
                             f"asked for arms {', '.join(args.arms or [])} and folds {args.folds}")  # fmt: skip
        if args.epochs:
            plan.arms = {arm: r.model_copy(update={"epochs": args.epochs}) for arm, r in plan.arms.items()}
        from plain import seed_layers

        for recipe in plan.arms.values():
            seed_layers(recipe)  # a model or option the plain script lacks stops here, before any training
        figures = []
        for arm in args.arms or list(plan.arms):
            for fold in args.folds:
                figures.append(peer_fold(plan, arm, fold, params.seed + fold, args.verbose))  # the study's seeds
                f = figures[-1]
                print(f"{args.study} {arm} fold {fold}: plain {f['plain']['val_accuracy']:.4f}, "
                      f"pipeline {f['pipeline']['val_accuracy']:.4f}", flush=True)  # fmt: skip
    print(markdown(PEER_HEADER, peer_rows(figures)))
    budget = params.study_budget(args.study)
    print(f"\nsaved {save(args, {'study': args.study, 'budget': budget, 'folds': figures})}")


# ---- ray: a study's trainings here, one at a time, then as Ray tasks on loopback clusters of 1 and 2 nodes ----


def ray_params(project: Path, args: argparse.Namespace) -> tuple[str, dict]:
    """The project's params with the study on a small budget of its own (Fashion-MNIST, the sizes asked)."""
    import yaml

    raw = yaml.safe_load((project / "params.yaml").read_text())
    kind = "ablation" if args.study in raw.get("ablation", {}) else "crossval"
    if args.study not in raw.get(kind, {}):
        raise SystemExit(f"{args.study} is no crossval or ablation study of {project / 'params.yaml'}")
    study = raw[kind][args.study]
    quick = study.setdefault("budgets", {}).get("quick") or {}
    sizes = {"dataset": "fashion_mnist", "epochs": args.epochs, "train_samples": args.images, "k": args.folds}
    study["budgets"]["quick"] = quick | sizes | ({"batch_size": args.batch_size} if args.batch_size else {})
    study["budget"] = "quick"
    return kind, raw


def prepared_source(project: Path, raw: dict, scratch: Path) -> Path:
    """A folder whose data/prepared holds Fashion-MNIST: the project when it has it prepared, else a scratch one
    where the download and preprocess stages ran (from the data mirror where there is one)."""
    import yaml

    if (project / "data" / "prepared" / "fashion_mnist" / "meta.json").is_file():
        return project
    folder = scratch / "data-project"
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = dict(os.environ, **mirrors(project), MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}")
    for stage in ("download", "preprocess"):
        wall, _ = run_measured([sys.executable, str(HERE.parent / "stages" / f"{stage}.py"), "fashion_mnist"], folder,
                               env)  # fmt: skip
        print(f"fashion_mnist {stage}: {wall:.1f} s (not part of the figures)", flush=True)
    return folder


def ray_way(source: Path, params: object, study_id: str, kind: str, folder: Path, uri: str, tasks: object,
            nodes: dict[str, str], reference: list | None) -> dict:  # fmt: skip
    """The study from scratch in `folder` (its own ledger), here (`tasks` None) or as Ray tasks on `nodes` (Ray
    node id: name); the way's figures."""
    import mlflow
    import ray_ways

    from cnnlab.workflows.ray_cluster import NODE_TAG

    folder.mkdir()
    plan, paths = scratch_plan(source, params, study_id, kind, folder, uri)
    run, arrivals, (started, ended) = ray_ways.timed_study(plan, params, paths, tasks)
    client = mlflow.MlflowClient()

    def node_of(score: object) -> str:  # the node each fold run is tagged with on Ray
        return nodes[client.get_run(score.run_id).data.tags[NODE_TAG]] if tasks else "here"

    found = ray_ways.trainings(arrivals, started, node_of)
    way = f"Ray, {len(nodes)} node{'s' if len(nodes) > 1 else ''}" if tasks else "local, one at a time"
    after_last = ended - max(at for at, _ in arrivals)
    figures = ray_ways.way_figures(way, len(nodes), run, found, after_last, reference)
    print(f"{way}: {run.trained} trainings in {run.wall_seconds:.1f} s, same scores as local: "
          f"{figures['same_scores_as_local']}", flush=True)  # fmt: skip
    return figures


def ray_study(args: argparse.Namespace) -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise SystemExit("`run.py ray` needs Ray: `pip install 'cnnlab[ray]'`") from None
    import loopback_ray
    import ray_ways

    from cnnlab.params import parse_params
    from cnnlab.pipeline import stage
    from cnnlab.tracking.server import mlflow_server

    if min(args.nodes) < 1 or args.folds < 2:
        raise SystemExit("--nodes counts from 1, --folds from 2")
    stage.setup_logging()  # the study's progress lines
    project = Path(args.project).resolve()
    kind, raw = ray_params(project, args)
    params = parse_params(raw)
    tasks = params.study(args.study).ray  # what each training asks of the cluster (one CPU by default)
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        scratch = Path(tmp)
        source = prepared_source(project, raw, scratch)
        # One MLflow server for every way: Ray's workers log to it from their own processes, and the local way
        # pays the same HTTP calls. One server process: a few calls per training.
        with mlflow_server(f"sqlite:///{scratch / 'mlflow.db'}", scratch / "artifacts", "127.0.0.1",
                           loopback_ray.free_port(), scratch / "mlflow.log", workers=1) as uri:  # fmt: skip
            ways = [ray_way(source, params, args.study, kind, scratch / "local", uri, None, {}, None)]
            counts = sorted(set(args.nodes))
            # One cluster, grown node by node: each way is a new driver, hence a new job with fresh workers
            with loopback_ray.loopback_cluster(counts[0]) as cluster, loopback_ray.driver_env(cluster.address):
                for count in counts:
                    while len(cluster.nodes) < count:
                        cluster.add()
                    loopback_ray.node_ids(cluster.address, cluster.nodes)
                    names = {node.node_id: node.name for node in cluster.nodes}
                    ways.append(ray_way(source, params, args.study, kind, scratch / f"ray-{count}", uri, tasks,
                                        names, ways[0]["scores"]))  # fmt: skip
    print(markdown(ray_ways.WAYS_HEADER, [ray_ways.way_row(w) for w in ways]))
    overheads = ray_ways.overheads(ways)
    print("\n" + markdown(ray_ways.OVERHEAD_HEADER, [ray_ways.overhead_row(o) for o in overheads]))
    budget = raw[kind][args.study]["budgets"]["quick"]
    print(f"\n{args.study}: {ways[0]['trainings']} trainings a way, each {args.epochs} epoch(s) on "
          f"{ways[0]['train_samples']} images")  # fmt: skip
    print(f"\nsaved {save(args, {'study': args.study, 'budget': budget, 'ways': ways, 'overheads': overheads})}")


# ---- data: download + preprocess of each data set, as the stage processes DVC runs ----


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def data(args: argparse.Namespace) -> None:
    project = Path(args.project).resolve()
    if not os.environ.get("CNNLAB_DATA_MIRROR"):
        print("note: CNNLAB_DATA_MIRROR is not set: the data sets come from params' sources (maybe online)")
    rows, figures = [], []
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        scratch = Path(tmp)
        shutil.copy(project / "params.yaml", scratch / "params.yaml")
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{scratch / 'mlflow.db'}")
        for name in args.datasets:
            for stage in ("download", "preprocess"):
                wall, peak = run_measured([sys.executable, str(project / "stages" / f"{stage}.py"), name], scratch, env)
                rows.append([name, stage, f"{wall:.1f}", f"{peak:,.0f}"])
                figures.append({"dataset": name, "stage": stage, "seconds": wall, "peak_mib": peak})
                print(f"{name} {stage}: {wall:.1f} s, peak {peak:,.0f} MiB", flush=True)
    total, peak = sum(f["seconds"] for f in figures), max(f["peak_mib"] for f in figures)
    rows.append(["all", "download + preprocess", f"{total:.1f}", f"{peak:,.0f} (largest)"])
    print(markdown(["data set", "stage", "wall s", "peak MiB"], rows))
    print(f"\nsaved {save(args, {'stages': figures, 'total_seconds': total, 'peak_mib': peak})}")


# ---- noop: `dvc repro` when everything is up to date ----


def noop_seconds(
    project: Path, dvc: str, repeat: int, env: dict[str, str] | None = None, targets: Sequence[str] = ()
) -> list[float]:
    """Wall seconds of `repeat` runs of `dvc repro [targets]` in a project that is up to date."""
    seconds = []
    for i in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([dvc, "repro", *targets], cwd=project, capture_output=True, text=True, env=env)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0 or "up to date" not in done.stdout:
            sys.exit(f"`dvc repro` in {project} had work to do or failed; run it once first:\n{done.stdout[-2000:]}")
        print(f"no-op run {i + 1}: {seconds[-1]:.2f} s", flush=True)
    return seconds


def noop(args: argparse.Namespace) -> None:
    project = Path(args.project).resolve()
    dvc = shutil.which("dvc") or sys.exit("dvc not found: activate the project's environment")
    seconds = noop_seconds(project, dvc, args.repeat)
    print(markdown(["runs", "fastest s", "slowest s"], [[len(seconds), f"{min(seconds):.2f}", f"{max(seconds):.2f}"]]))
    print(f"\nsaved {save(args, {'project': str(project), 'seconds': seconds})}")


# ---- pipeline: a fresh quick `dvc repro` in a scratch clone, time per stage ----


def mirrors(project: Path) -> dict[str, str]:
    """The offline data and weights mirrors: the environment's, else ../shared beside the project (as quickstart)."""
    found = {}
    for variable, folder in (("CNNLAB_DATA_MIRROR", "datasets"), ("CNNLAB_WEIGHTS_MIRROR", "weights")):
        beside = project.parent / "shared" / folder
        if value := os.environ.get(variable) or (str(beside) if beside.is_dir() else ""):
            found[variable] = value
    return found


def scratch_clone(project: Path, scratch: Path, commit: str | None) -> Path:
    clone = scratch / "main"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    if commit:
        subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
    return clone


def warm_up(clone: Path, bin_dir: Path, env: dict[str, str]) -> float | None:
    """As the quick start does: `cnnlab warm` readies the stage worker and the MLflow store before `dvc repro`
    (at a commit that has the command); its seconds."""
    if not (clone / "src" / "cnnlab" / "cli" / "warmup.py").is_file():
        print("no `cnnlab warm` at this commit: the first stage starts the stage worker", flush=True)
        return None
    started = time.perf_counter()
    subprocess.run([str(bin_dir / "cnnlab"), "warm"], cwd=clone, env=env, check=True)
    return time.perf_counter() - started


def pipeline(args: argparse.Namespace) -> None:
    import stage_times

    project = Path(args.project).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-pipeline-"))
    clone = scratch_clone(project, scratch, args.commit)
    print(f"scratch clone: {clone}", flush=True)
    figures: dict[str, object] = {"commit": subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()}  # fmt: skip
    bin_dir = Path(sys.executable).parent
    if args.setup:
        started = time.perf_counter()
        subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
        figures["setup_seconds"] = time.perf_counter() - started
        bin_dir = clone / ".venv" / "bin"
        print(f"setup: {figures['setup_seconds']:.0f} s", flush=True)
    probes = scratch / "probes"
    probes.mkdir()
    env = dict(os.environ, **mirrors(project), CNNLAB_PROBE_DIR=str(probes),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(clone / "src"), str(HERE / "probe")]))  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store, as a newcomer's
    dvc = str(bin_dir / "dvc")
    figures["warm_seconds"] = warm_up(clone, bin_dir, env)
    marks, ended = stage_times.timed_repro([dvc, "repro", *args.targets], clone, env, scratch / "repro.log")
    times = stage_times.stage_times(marks, ended, stage_times.read_probes(probes))
    figures["repro_seconds"] = ended - marks[0][1] if marks else 0.0
    figures["noop_seconds"] = noop_seconds(clone, dvc, args.noop, env, args.targets)
    figures.update(limits=stage_times.limits(times), stages=stage_times.to_json(times), clone=str(clone))
    print(markdown(stage_times.KIND_HEADER, stage_times.by_kind(times)))
    print("\n" + ", ".join(f"{key} {value:.1f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in stage_times.limits(times).items()))  # fmt: skip
    if not args.keep:
        shutil.rmtree(scratch)
    print(f"\nsaved {save(args, figures)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=".", help="the cnnlab project (params.yaml, data/prepared)")
    parser.add_argument("--results", default=str(HERE / "results"), help="folder for the JSON of figures")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("training", help="the pipeline's training against the plain seed script")
    train.add_argument("--experiments", nargs="+", default=["F1"])
    train.add_argument("--budget", choices=["quick", "full", "speed"], help="default: params.yaml's")
    train.add_argument("--epochs", type=int, help="override the recipe's epochs")
    train.add_argument("--train-samples", type=int, help="train on the first N images only")
    train.add_argument("--target", type=float, help="test accuracy to time (default: per experiment)")
    train.add_argument("--verbose", type=int, default=2, help="fit's verbose for both arms")
    train.add_argument("--steps-per-execution", type=int, help="the pipeline's (default: the recipe's)")
    train.add_argument(
        "--precision", choices=["float32", "mixed_bfloat16", "auto"], help="the pipeline's (default: the recipe's)"
    )
    train.add_argument(
        "--arms",
        nargs="+",
        choices=["plain", "pipeline"],
        default=["plain", "pipeline"],
        help="which arms to run, in this order",
    )
    train.add_argument("--seeds", nargs="+", type=int, help="initial-weight seeds (default: params.yaml's seed)")
    studies = commands.add_parser("study", help="a study's trainings one at a time against several at once")
    studies.add_argument("--study", default="C4", help="a crossval or ablation id of params.yaml")
    studies.add_argument("--budget", choices=["quick", "full", "speed"], help="default: params.yaml's")
    studies.add_argument("--parallel", nargs="+", type=int, default=[1, 2], help="trainings at once, one run each")
    peers = commands.add_parser("peer", help="a study arm's folds trained by the plain seed script and the pipeline")
    peers.add_argument("--study", default="C3", help="a crossval or ablation id of params.yaml")
    peers.add_argument("--arms", nargs="+", help="arms (ablation: cells) to train (default: all)")
    peers.add_argument("--folds", nargs="+", type=int, default=[1, 2], help="folds, numbered from 1")
    peers.add_argument("--budget", choices=["quick", "full", "speed"], help="default: params.yaml's")
    peers.add_argument("--epochs", type=int, help="override the study's epochs")
    peers.add_argument("--verbose", type=int, default=2, help="fit's verbose for both arms")
    rays = commands.add_parser("ray", help="a study's trainings here against Ray tasks on loopback nodes")
    rays.add_argument("--study", default="C4", help="a crossval or ablation id of params.yaml")
    rays.add_argument("--nodes", nargs="+", type=int, default=[1, 2], help="clusters of this many nodes, 1 CPU each")
    rays.add_argument("--images", type=int, default=1200, help="Fashion-MNIST training images the folds are cut from")
    rays.add_argument("--folds", type=int, default=3, help="k: each training fits on (k-1)/k of the images")
    rays.add_argument("--epochs", type=int, default=2)
    rays.add_argument("--batch-size", type=int, help="default: the study's")
    datasets = commands.add_parser("data", help="download + preprocess, as stage processes")
    datasets.add_argument("--datasets", nargs="+", default=["fashion_mnist", "mnist", "cifar10", "cats_vs_dogs"])
    repro = commands.add_parser("noop", help="`dvc repro` with nothing to do")
    repro.add_argument("--repeat", type=int, default=3)
    whole = commands.add_parser("pipeline", help="a fresh `dvc repro` in a scratch clone, timed per stage")
    whole.add_argument("targets", nargs="*", help="stages to reproduce (default: the whole pipeline)")
    whole.add_argument("--commit", help="the commit to clone (default: the project's HEAD)")
    whole.add_argument("--setup", action="store_true", help="run scripts/setup.sh in the clone first, and time it")
    whole.add_argument("--noop", type=int, default=3, help="no-op `dvc repro` runs timed afterwards")
    whole.add_argument("--keep", action="store_true", help="keep the scratch clone (its metrics, lock, mlruns)")
    args = parser.parse_args(argv)
    run = {"training": training, "study": study, "peer": peer, "ray": ray_study, "data": data, "noop": noop,
           "pipeline": pipeline}  # fmt: skip
    run[args.command](args)


if __name__ == "__main__":
    main()
