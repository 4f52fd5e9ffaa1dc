"""The benchmark harness runs both arms on the same data and recipe, and measures the data stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.project import ROOT, prepared_project

HARNESS = ROOT / "benchmarks" / "run.py"


def harness(args: list[str], env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=900, env=env or dict(os.environ)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = Path(done.stdout.strip().splitlines()[-1].removeprefix("saved "))
    return {"stdout": done.stdout, **json.loads(saved.read_text())}


@pytest.mark.slow
def test_training_benchmark_times_both_arms_on_the_same_recipe(tmp_path: Path, fashion: dict) -> None:
    prepared_project(tmp_path, fashion, lambda p: None, train_size=4000, test_size=1000)
    out = harness(["--project", str(tmp_path), "--results", str(tmp_path / "results"), "training",
                   "--experiments", "F1", "--epochs", "2", "--verbose", "0", "--precision", "float32"])  # fmt: skip
    plain, pipeline = out["results"]
    assert (plain["arm"], pipeline["arm"]) == ("plain", "pipeline")
    for arm in (plain, pipeline):
        assert arm["train_images"] == 2800  # the recipe's own 30% validation split held out, as the train stage does
        assert len(arm["epoch_seconds"]) == len(arm["test_accuracy"]) == 2
        assert arm["final_test_accuracy"] > 0.6  # chance is 0.1
        assert arm["images_per_second"] > 0 and arm["peak_host_mib"] > 100
    # The same network, data and recipe: the two arms learn alike.
    assert abs(plain["final_test_accuracy"] - pipeline["final_test_accuracy"]) < 0.05
    assert "| F1 | plain | 42 | 2800 | 2 |" in out["stdout"] and "speed-up per epoch" in out["stdout"]
    assert out["machine"]["backend"] and out["machine"]["versions"]["keras"]


@pytest.mark.slow
def test_speed_budget_benchmark_runs_the_pipeline_over_seeds(tmp_path: Path, fashion: dict) -> None:
    def smaller_batches(raw: dict) -> None:
        # Enough steps on 4,000 images for batch norm's moving averages (momentum 0.99) to forget their start
        raw["experiments"]["F1"]["budgets"]["speed"]["batch_size"] = 32

    prepared_project(tmp_path, fashion, smaller_batches, train_size=4000, test_size=1000)
    out = harness(["--project", str(tmp_path), "--results", str(tmp_path / "results"), "training", "--budget",
                   "speed", "--experiments", "F1", "--epochs", "4", "--arms", "pipeline", "--seeds", "1", "2",
                   "--target", "0.5", "--verbose", "0"])  # fmt: skip
    runs = out["results"]
    assert [(r["arm"], r["seed"]) for r in runs] == [("pipeline", 1), ("pipeline", 2)]
    assert all(r["train_images"] == 4000 for r in runs)  # the speed recipe trains on all of train, tests on test
    assert all(r["final_test_accuracy"] > 0.6 for r in runs)  # batch norm, batch 512, cosine: still learning
    assert runs[0]["test_accuracy"] != runs[1]["test_accuracy"]  # the seeds differ
    assert "| F1 | pipeline | 2 |" in out["stdout"] and "2 of 2 (50.0%)" in out["stdout"]


def test_data_benchmark_runs_the_stages_within_the_memory_limit(tmp_path: Path, mirror: Path) -> None:
    env = dict(os.environ, CNNLAB_DATA_MIRROR=str(mirror))
    out = harness(["--results", str(tmp_path), "data", "--datasets", "mnist"], env)
    assert [(s["dataset"], s["stage"]) for s in out["stages"]] == [("mnist", "download"), ("mnist", "preprocess")]
    assert 0 < out["peak_mib"] < 3 * 1024  # issue 9: under 3 GiB
    assert "| all | download + preprocess |" in out["stdout"]


@pytest.mark.slow
def test_study_benchmark_runs_the_folds_one_and_two_at_once(tmp_path: Path, fashion: dict) -> None:
    def tiny_ablation(raw: dict) -> None:
        raw["ablation"]["C4"]["design"] = ["augmentation"]  # random batches, drawn in each process alike
        raw["ablation"]["C4"]["budgets"]["quick"] = {"dataset": "fashion_mnist", "epochs": 2, "batch_size": 16, "k": 2}

    prepared_project(tmp_path, fashion, tiny_ablation, train_size=400, test_size=100)
    out = harness(["--project", str(tmp_path), "--results", str(tmp_path / "results"), "study", "--study", "C4",
                   "--parallel", "1", "2"])  # fmt: skip
    one, two = out["runs"]
    assert (one["parallel"], two["parallel"]) == (1, 2)
    assert two["scores"] == one["scores"] and two["same_scores_as_first"]
    assert [s[:2] for s in one["scores"]] == [["0", 1], ["0", 2], ["1", 1], ["1", 2]]
    assert np.mean(list(one["cell_accuracy"].values())) > 0.3  # chance is 0.1
    assert "| C4 | 2 | 4 |" in out["stdout"] and "speed-up of 2 at once over 1" in out["stdout"]
    assert not (tmp_path / "folds").exists()  # the project's own ledger is not touched


@pytest.mark.slow
def test_peer_check_trains_a_study_arm_both_ways_on_the_same_folds(tmp_path: Path, fashion: dict) -> None:
    def small_crossval(raw: dict) -> None:
        quick = {"dataset": "fashion_mnist", "epochs": 2, "batch_size": 32, "k": 3}  # 64 steps a training
        raw["crossval"]["C3"]["budgets"]["quick"] = quick

    prepared_project(tmp_path, fashion, small_crossval, train_size=1500, test_size=100)
    out = harness(["--project", str(tmp_path), "--results", str(tmp_path / "results"), "peer", "--study", "C3",
                   "--arms", "no_dropout", "--folds", "1", "3", "--verbose", "0"])  # fmt: skip
    folds = out["folds"]
    assert [(f["arm"], f["fold"], f["seed"]) for f in folds] == [("no_dropout", 1, 43), ("no_dropout", 3, 45)]
    for f in folds:
        assert f["train_samples"] == 1000 and f["epochs"] == 2  # the fold's training part: 2 of 3 folds
        assert len(f["plain"]["curve"]) == 2
        for arm in ("plain", "pipeline"):
            assert f[arm]["val_accuracy"] > 0.6  # chance is 0.1
        # The same network, fold, seed and recipe: the seed script and the pipeline learn alike.
        assert abs(f["plain"]["val_accuracy"] - f["pipeline"]["val_accuracy"]) < 0.08
    assert "| **no_dropout mean** | 2 folds |" in out["stdout"]
    assert not (tmp_path / "folds").exists()  # the project's own study ledger is not touched


def test_peer_check_refuses_an_unknown_arm_before_training(tmp_path: Path, fashion: dict) -> None:
    def small_crossval(raw: dict) -> None:
        raw["crossval"]["C3"]["budgets"]["quick"] = {"dataset": "fashion_mnist", "epochs": 1, "k": 3}

    prepared_project(tmp_path, fashion, small_crossval, train_size=300, test_size=100)
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--project", str(tmp_path), "--results", str(tmp_path), "peer", "--study",
         "C3", "--arms", "no_such_arm"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "C3 has arms no_dropout, dropout and folds 1-3" in done.stderr
    assert "Epoch" not in done.stdout


PROBE_SCRIPT = """
import numpy as np, keras
from cnnlab.data import prepare
x = np.random.default_rng(0).random((64, 4)).astype("float32"); y = (x[:, 0] > 0.5).astype("int32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y))
model.predict(x, verbose=0)
prepare.save_split(OUT / "split.npz", (x, y))
import multiprocessing, time  # a study's folds on worker processes: the stage waits for their scores
with multiprocessing.get_context("fork").Pool(2) as pool:
    list(pool.imap_unordered(time.sleep, [0.4, 0.4]))
"""


def test_probe_times_each_phase_once_in_a_stage_process(tmp_path: Path) -> None:
    (tmp_path / "stage.py").write_text(f"from pathlib import Path\nOUT = Path({str(tmp_path)!r})\n{PROBE_SCRIPT}")
    env = dict(os.environ, DVC_STAGE="train@X", CNNLAB_PROBE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks" / "probe")]))  # fmt: skip
    subprocess.run([sys.executable, str(tmp_path / "stage.py")], env=env, check=True, timeout=300)
    [record] = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    spent = record["seconds"]
    assert record["stage"] == "train@X" and record["entered"] is None  # stage.run was not called
    assert spent["fit"] > 0 and spent["predict"] > 0 and spent["data"] > 0
    assert 0.35 < spent["workers"] < 5  # the two side by side count once
    # Exclusive time: fit's validation passes count once, so the phases never add up to more than the process
    assert sum(spent.values()) <= record["ended"] - record["started"] + 0.02  # /proc's start: 10 ms ticks
    # Without DVC_STAGE (DVC's own process, any other Python) the probe does nothing
    env.pop("DVC_STAGE")
    for path in tmp_path.glob("*.json"):
        path.unlink()
    subprocess.run([sys.executable, "-c", "import cnnlab.data.prepare"], env=env, check=True, timeout=120)
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_pipeline_benchmark_times_each_stage_of_a_fresh_clone(tmp_path: Path, mirror: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.fail("benchmarks/run.py pipeline clones the project: run the tests in a git checkout")
    env = dict(os.environ, CNNLAB_DATA_MIRROR=str(mirror))
    out = harness(["--project", str(ROOT), "--results", str(tmp_path), "pipeline", "preprocess@mnist", "--noop", "1"],
                  env)  # fmt: skip
    stages = {s["stage"]: s for s in out["stages"]}
    assert list(stages) == ["download@mnist", "preprocess@mnist"]
    for s in stages.values():
        assert 0 < s["process"] <= s["wall"]  # DVC's own work around the command is part of the wall time
        assert s["parts"]["import"] > 0 and s["parts"]["mlflow"] > 0
        assert s["outside"] == pytest.approx(s["wall"] - s["compute"])
    # After `cnnlab warm` every stage runs in the warm worker, the first one too
    assert out["warm_seconds"] > 0 and all(s["warm"] for s in stages.values()) and out["limits"]["warm_stages"] == 2
    assert stages["preprocess@mnist"]["compute"] > 0  # reading and writing 70,000 images is the stage's work
    assert len(out["noop_seconds"]) == 1 and out["limits"]["stages"] == 2
    assert "| preprocess | 1 |" in out["stdout"] and "| **all** | 2 |" in out["stdout"]
    assert not Path(out["clone"]).exists()  # the scratch clone is removed unless --keep


@pytest.mark.slow
def test_ray_benchmark_trains_a_study_here_then_on_one_and_two_loopback_nodes(tmp_path: Path, fashion: dict) -> None:
    prepared_project(tmp_path, fashion, lambda raw: None, train_size=300, test_size=50)
    out = harness(["--project", str(tmp_path), "--results", str(tmp_path / "results"), "ray", "--study", "C3",
                   "--nodes", "1", "2", "--folds", "2", "--images", "200", "--epochs", "1"])  # fmt: skip
    ways = out["ways"]
    assert [(w["way"], w["nodes"]) for w in ways] == [("local, one at a time", 0), ("Ray, 1 node", 1),
                                                       ("Ray, 2 nodes", 2)]  # fmt: skip
    local = ways[0]
    assert [s[:2] for s in local["scores"]] == [["no_dropout", 1], ["no_dropout", 2], ["dropout", 1], ["dropout", 2]]
    for way in ways:
        assert way["trainings"] == len(way["trainings_detail"]) == 4 and way["train_samples"] == 100
        assert way["scores"] == local["scores"] and way["same_scores_as_local"]  # same folds, same seeds
        assert way["trainings_per_minute"] > 0 and way["wall_seconds"] > 0
        # Between two scores of a node lies a whole training there: at least its fit
        assert all(0 < t["fit_seconds"] <= t["seconds"] for t in way["trainings_detail"])
        assert way["first_seconds"] > 0 and way["later_seconds"] > 0
    assert local["trainings_per_node"] == {"here": 4} and ways[1]["trainings_per_node"] == {"head": 4}
    assert set(ways[2]["trainings_per_node"]) == {"head", "node2"}  # both nodes trained
    assert [o["nodes"] for o in out["overheads"]] == [1, 2] and out["overheads"][0]["later_seconds"] is not None
    assert "| Ray, 2 nodes | 2 | 4 |" in out["stdout"] and "| 1 node |" in out["stdout"]
    sizes = {"dataset": "fashion_mnist", "epochs": 1, "train_samples": 200, "k": 2}
    assert {key: out["budget"][key] for key in sizes} == sizes  # the study's budget, as asked
    assert not (tmp_path / "folds").exists()  # the project's own ledger is not touched
