"""The `cnnlab` command: check params, list what is built in, open the MLflow UI, predict, detect objects, list a
model's layers, report, retrain as CI does, run grids of experiments and seeds."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from cnnlab.catalog.datasets import DATASETS
from cnnlab.catalog.networks import MODELS
from cnnlab.cli.edit import register as register_edits
from cnnlab.cli.folders import check_own_data
from cnnlab.cli.grid import register as register_grid
from cnnlab.cli.shell import add_version_and_completion
from cnnlab.cli.warmup import register as register_warm
from cnnlab.detect.darknet import DarknetFileError
from cnnlab.params import BUDGETS, DetectSettings, load_params
from cnnlab.report.chart import claims_chart
from cnnlab.report.claims import load_claims
from cnnlab.report.floors import floor_section
from cnnlab.report.rows import build_rows, markdown
from cnnlab.report.sections import floor_checks, search_section, study_section
from cnnlab.tracking.auth import PASSWORD_ENV
from cnnlab.tracking.runs import ARTIFACTS_DIR, tracking_uri, use_experiment
from cnnlab.tracking.uris import redact
from cnnlab.util.errors import UserError
from cnnlab.util.files import write_text
from cnnlab.workflows import ci_retrain as retraining


def check(args: argparse.Namespace) -> int:
    """Validate params.yaml (and claims.yaml), say what `dvc repro` would run, and look at your own image folders
    (exit 2 if one is unusable)."""
    params = load_params(args.params)
    claims = load_claims(Path(args.params).parent / "claims.yaml")
    print(f"params OK: data sets {', '.join(params.datasets)}; {len(params.experiments)} experiments:")
    for exp_id in params.experiments:
        target = params.target(exp_id)
        recipe, samples = params.recipe(exp_id), target.train_samples
        print(
            f"  {exp_id:10} {recipe.model:3} on {recipe.dataset:13} budget {target.budget:5} "
            f"{recipe.epochs:3} epochs, batch {recipe.batch_size:3}, {recipe.optimizer.name}"
            + (f", {samples:,} training images" if samples else "")
        )
    for kind, studies in (("crossval", params.crossval), ("ablation", params.ablation)):
        for study_id, study in studies.items():
            target = params.target(study_id)
            budget, samples = target.budget, target.train_samples
            arms, folds = params.study_arms(study_id), study.folds_for(budget)
            first = next(iter(arms.values()))
            print(
                f"  {study_id:10} {kind} of {study.experiment} on {first.dataset:13} budget {budget:5} "
                f"{len(arms)} arms x {folds.k} folds = {len(arms) * folds.k} trainings of {first.epochs} epochs"
                + (f", {samples:,} images" if samples else "")
            )
    for search_id in params.tune:
        target = params.target(search_id)
        search, budget, samples = params.search(search_id), target.budget, target.train_samples
        size = (f"up to {search.max_epochs} epochs (factor {search.factor})" if search.tuner == "hyperband"
                else f"{search.max_trials} trials of {search.max_epochs} epochs")  # fmt: skip
        print(
            f"  {search_id:10} {search.tuner} search on {search.dataset:13} budget {budget:5} {size}"
            + (f", {samples:,} images" if samples else "")
            + (f", stops after {search.max_minutes:g} min" if search.max_minutes else "")
        )
    for transfer_id in params.finetune.recipes:
        target = params.target(transfer_id)
        recipe, budget, samples = params.transfer(transfer_id), target.budget, target.train_samples
        phases = f"{recipe.epochs} + {recipe.fine_tune_epochs}" if recipe.mode == "finetune" else f"{recipe.epochs}"
        where = "" if transfer_id in params.finetune.run else " (not in finetune.run: `dvc repro` skips it)"
        print(
            f"  {transfer_id:10} {recipe.backbone.name} {recipe.mode} on {recipe.dataset:13} budget {budget:5} "
            f"{phases} epochs, weights {recipe.backbone.weights}"
            + (f", {samples:,} training images" if samples else "")
            + where
        )
    for job_id, job in params.detect.jobs.items():
        where = "" if job_id in params.detect.run else " (not in detect.run: `dvc repro` skips it)"
        print(f"  {job_id:10} detect with {job.cfg.name} at {job.input_size}, score > {job.score_threshold}, "
              f"NMS {job.nms_threshold}{where}")  # fmt: skip
    return check_own_data(params, claims, Path(args.params).resolve().parent)  # 2 if a folder of yours is unusable


def show(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    print("experiments:")
    for name, exp in params.experiments.items():
        print(f"  {name:10} {exp.model:3} on {exp.dataset:13} {exp.description}")
    print("models:   ", ", ".join(MODELS))
    print("data sets:", ", ".join([*DATASETS, *params.data.custom]))
    return 0


def ui(args: argparse.Namespace) -> int:
    """`mlflow ui` on this project's tracking store and artifact folder."""
    root = Path.cwd()
    experiment = use_experiment(load_params(args.params).mlflow.experiment_name, root)
    command = [sys.executable, "-m", "mlflow", "ui", "--default-artifact-root",
               (root / ARTIFACTS_DIR).resolve().as_uri(), "--port", str(args.port)]  # fmt: skip
    # The store's URI may hold a password: it goes in the environment (`ps` shows a command line to everyone)
    # and is printed without it.
    store = tracking_uri(root)
    print("starting:", " ".join(command), f"(backend store {redact(store)})")
    # MLflow 3 opens on its GenAI view; this address goes straight to the training runs.
    print(f"open http://127.0.0.1:{args.port}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    from cnnlab.tracking.server import JOBS_OFF

    return subprocess.call(command, env=JOBS_OFF | os.environ | {"MLFLOW_BACKEND_STORE_URI": store})


def predict(args: argparse.Namespace) -> int:
    """Top classes of each image, and optionally a bar chart of the first image's probabilities."""
    from cnnlab.nets.predict import predict
    from cnnlab.plots.predictions import probability_bars
    from cnnlab.workflows.serving import load_served

    served = load_served(args.model, Path.cwd())  # a card that does not fit fails before predicting
    classes = served.classes
    results = predict(served.model, [Path(p) for p in args.images], resize=args.resize)
    for result in results:
        ranked = ", ".join(f"{name} {p:.1%}" for name, p in result.top(classes, args.top))
        print(f"{result.path}: {ranked}")
    if args.chart:
        first = results[0]
        print("chart:", probability_bars(first.probabilities, classes, first.path.name, Path(args.chart)))
    return 0


def detect(args: argparse.Namespace) -> int:
    """Objects in images with a Darknet YOLO model through OpenCV: drawn images and detections.json in --out."""
    from cnnlab.detect.yolo import Detector, detect_images, image_files

    try:
        settings = DetectSettings(input_size=args.input_size, score_threshold=args.score_threshold,
                                  nms_threshold=args.nms_threshold)  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        raise DarknetFileError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    detector = Detector.load(Path(args.cfg), Path(args.weights), Path(args.names), settings)
    report = detect_images(detector, image_files([Path(p) for p in args.images]), Path(args.out))
    for image in report["images"]:
        found = ", ".join(f"{d['class']} {d['score']:.1%} at {d['box']}" for d in image["detections"])
        print(f"{image['image']}: {found or 'nothing above the threshold'}")
    print(f"drawn images and detections.json in {args.out}/")
    return 0


def layers(args: argparse.Namespace) -> int:
    """A trained model's layers with a backbone's, output shapes, and which ones `explain` can show."""
    from cnnlab.nets.cut import CONVOLUTIONS, last_map_layer, walk
    from cnnlab.workflows.serving import load_served

    model = load_served(args.model, Path.cwd()).model
    for owner, layer in walk(model):
        shape = layer.output.shape
        mark = "conv" if isinstance(layer, CONVOLUTIONS) else ""
        where = "" if owner is model else f"  (in {owner.name})"
        print(f"{layer.name:<28} {type(layer).__name__:<24} {shape!s:<22} {mark}{where}")
    try:
        print(f"Grad-CAM's default layer: {last_map_layer(model)}")
    except ValueError:
        print("no convolution: explain draws only the hand filters and the augmentation preview")
    return 0


def serve(args: argparse.Namespace) -> int:
    """A page and a JSON API on loopback that classify dropped images and show their Grad-CAM."""
    from cnnlab.workflows.serve_app import check_host, server
    from cnnlab.workflows.serving import load_served

    check_host(args.host)  # before the model loads
    running = server(load_served(args.model, Path.cwd()), args.host, args.port, args.max_upload_mb, args.top)
    print(f"serving {args.model} on http://{args.host}:{running.server_port}/ (API: POST /api/predict); Ctrl-C stops")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it stops
        running.serve_forever()
    return 0


def report(args: argparse.Namespace) -> int:
    """The reproduction table from any folder of metrics (an experiment's, another checkout's), as Markdown."""
    params = load_params(args.params)
    claims = load_claims(Path(args.params).parent / "claims.yaml")
    rows = build_rows(params, claims, Path(args.metrics))
    if args.measured_only:
        rows = [r for r in rows if r.test_accuracy is not None]
    studies = study_section(params, claims, Path(args.metrics), args.measured_only)
    searches = search_section(params, rows, Path(args.metrics))
    floors = floor_section(floor_checks(params, rows, Path(args.metrics)))
    text = markdown(rows, claims, args.title, sections=tuple(s for s in (studies, searches, floors) if s))
    if args.chart:
        print("wrote", claims_chart(rows, args.title, Path(args.chart)))
    if args.out:
        print("wrote", write_text(Path(args.out), text))
    else:
        print(text, end="")
    return 0


def tune(args: argparse.Namespace) -> int:
    """The tune stage outside DVC: what a distributed search's workers run (and its chief, if you like)."""
    from cnnlab.pipeline import stage
    from cnnlab.workflows import search

    stage.setup_logging()
    try:
        search.main(load_params(args.params), stage.Paths(Path.cwd().resolve()), args.search)
    except stage.USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def retrain(args: argparse.Namespace) -> int:
    """What the retrain workflow runs: pull, repro, push, the diff against a base revision, the promotions."""
    root = Path(args.params).resolve().parent
    try:
        outcome = retraining.retrain(root, base=args.base, budget=args.budget, targets=args.targets,
                                     remote_url=args.remote_url, pull=not args.no_pull, push=not args.no_push,
                                     register=not args.no_register, online_only=args.online_only)  # fmt: skip
    except retraining.StepFailed as exc:  # a failure, not bad input: exit 1, DVC's own output is above
        print(f"error: {exc}", file=sys.stderr)
        return 1
    retraining.publish(retraining.summary(outcome), Path(args.summary) if args.summary else None)
    if args.commit_to:
        committed = retraining.commit_results(root, args.commit_to, retraining.commit_message(outcome))
        print(f"committed the results on {args.commit_to}" if committed else "nothing to commit")
    return 0


def server(args: argparse.Namespace) -> int:
    """A team tracking server: mlflow server over PostgreSQL, until interrupted."""
    from cnnlab.tracking.auth import Logins, read_admin_password
    from cnnlab.tracking.server import serve

    folder = Path(args.folder)
    logins = None
    if args.auth:
        password = read_admin_password(Path(args.admin_password_file) if args.admin_password_file else None)
        logins = Logins(folder, args.admin_user, password)
    serve(folder, args.host, args.port, args.pg_port, args.backend_store_uri, logins=logins,
          allowed_hosts=args.allowed_hosts, workers=args.workers)  # fmt: skip
    return 0


MODEL_HELP = "an experiment id (models/<id>.keras), a .keras file, or an MLflow model URI (models:/cnnlab-F1@champion)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnlab", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="path to params.yaml")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="validate params.yaml").set_defaults(run=check)
    commands.add_parser("list", help="experiments, models and data sets").set_defaults(run=show)
    register_edits(commands)  # add-data, add-experiment
    register_warm(commands)  # warm
    ui_parser = commands.add_parser("ui", help="open the MLflow UI on this project's runs")
    ui_parser.add_argument("--port", type=int, default=5000)
    ui_parser.set_defaults(run=ui)
    predict_parser = commands.add_parser("predict", help="classify image files with a trained model")
    predict_parser.add_argument("model", help=MODEL_HELP)
    predict_parser.add_argument("images", nargs="+", help="image files")
    predict_parser.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict_parser.add_argument("--chart", help="save a bar chart of the first image's class probabilities here")
    predict_parser.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    predict_parser.set_defaults(run=predict)
    serve_parser = commands.add_parser("serve", help="a web page and JSON API on 127.0.0.1 that classify images")
    serve_parser.add_argument("model", help=MODEL_HELP)
    serve_parser.add_argument("--host", default="127.0.0.1", help="loopback only: the page has no login")
    serve_parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    serve_parser.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    serve_parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request (default 20 MB)")
    serve_parser.set_defaults(run=serve)
    detect_parser = commands.add_parser("detect", help="detect objects with a Darknet YOLO model (OpenCV DNN)")
    detect_parser.add_argument("--cfg", required=True, help="the model's Darknet cfg (yolov3.cfg)")
    detect_parser.add_argument("--weights", required=True, help="its trained weights (yolov3.weights)")
    detect_parser.add_argument("--names", required=True, help="its class names, one per line (coco.names)")
    detect_parser.add_argument("images", nargs="+", help="image files or folders of them")
    detect_parser.add_argument("--out", default="detections", help="folder for the drawn images and detections.json")
    detect_parser.add_argument("--input-size", type=int, default=448, help="the network's input side (default 448)")
    detect_parser.add_argument("--score-threshold", type=float, default=0.5, help="best class score above (0.5)")
    detect_parser.add_argument("--nms-threshold", type=float, default=0.4, help="NMS overlap (IoU) above which (0.4)")
    detect_parser.set_defaults(run=detect)
    layers_parser = commands.add_parser("layers", help="a trained model's layers (for params' explain section)")
    layers_parser.add_argument("model", help=MODEL_HELP)
    layers_parser.set_defaults(run=layers)
    tune_parser = commands.add_parser(
        "tune",
        help="run a search (tune@<id>); a worker or chief with KERASTUNER_TUNER_ID, _ORACLE_IP, _ORACLE_PORT set",
    )
    tune_parser.add_argument("search", help="a search id of params.yaml's `tune` section")
    tune_parser.set_defaults(run=tune)
    register_grid(commands)  # grid
    report_parser = commands.add_parser("report", help="the claims-vs-measured table from a folder of metrics")
    report_parser.add_argument("--metrics", default="metrics", help="folder of <id>/train.json, evaluate.json")
    report_parser.add_argument("--title", default="Reproduction of the seed experiments")
    report_parser.add_argument("--measured-only", action="store_true", help="leave out experiments not run")
    report_parser.add_argument("--out", help="write the Markdown here (default: print it)")
    report_parser.add_argument("--chart", help="also save the bar chart of measured accuracy against the claims here")
    report_parser.set_defaults(run=report)
    retrain_parser = commands.add_parser(
        "retrain", help="CI retraining: dvc pull, repro, push, metrics/params diff, Model Registry promotions"
    )
    retrain_parser.add_argument("targets", nargs="*", help="stages to reproduce (default: the whole pipeline)")
    retrain_parser.add_argument("--base", default="main", help="revision to diff metrics and params against")
    retrain_parser.add_argument("--budget", choices=BUDGETS, help="set params.yaml's budget first")
    retrain_parser.add_argument("--remote-url", help="DVC remote to use (kept in .dvc/config.local)")
    retrain_parser.add_argument("--no-pull", action="store_true", help="do not dvc pull first")
    retrain_parser.add_argument("--no-push", action="store_true", help="do not dvc push the new outputs")
    retrain_parser.add_argument(
        "--no-register", action="store_true", help="register and promote no model (sets mlflow.register_model: false)"
    )
    retrain_parser.add_argument(
        "--online-only", action="store_true", help="leave out the stages of data sets without an online source"
    )
    retrain_parser.add_argument("--summary", help="also write the Markdown summary to this file")
    retrain_parser.add_argument("--commit-to", metavar="BRANCH", help="commit dvc.lock and metrics on this branch")
    retrain_parser.set_defaults(run=retrain)
    server_parser = commands.add_parser(
        "server", help="a team MLflow tracking server: PostgreSQL backend store, proxied artifact root"
    )
    server_parser.add_argument("--folder", default="mlflow-server", help="its PostgreSQL cluster, artifacts, logs")
    server_parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on; any but loopback needs --auth (0.0.0.0: everywhere)"
    )
    server_parser.add_argument("--port", type=int, default=5000)
    server_parser.add_argument("--workers", type=int, help="mlflow server's worker processes (default: MLflow's, 4)")
    server_parser.add_argument("--pg-port", type=int, default=5433, help="port of the folder's PostgreSQL cluster")
    server_parser.add_argument(
        "--backend-store-uri",
        help="an existing database instead, without its password (postgresql+psycopg://user@host/db; the password "
        "in ?passfile=PATH, $PGPASSFILE or $PGPASSWORD)",
    )
    server_parser.add_argument(
        "--auth", action="store_true", help="require logins (MLflow's basic-auth app; other users get READ)"
    )
    server_parser.add_argument("--admin-user", default="admin", help="the admin's user name (default admin)")
    server_parser.add_argument(
        "--admin-password-file",
        metavar="PATH",
        help=f"the admin's password, needed on the first --auth start (or set ${PASSWORD_ENV}; never an argument)",
    )
    server_parser.add_argument(
        "--allowed-hosts",
        help="Host headers to accept as clients send them, comma-separated, * wildcards (mlflow.example.org:5000); "
        "default: localhost and private addresses",
    )
    server_parser.set_defaults(run=server)
    add_version_and_completion(parser, commands)
    args = parser.parse_args(argv)  # a usage error exits 2
    try:
        return args.run(args)
    except UserError as exc:  # bad input, a usage error too: one line, exit 2; any other error is a crash, exit 1
        print(f"error: {exc}", file=sys.stderr)
        return 2
