"""One training with the train step traced once (optimizer and metric variables built before `fit`) against
Keras' own deferred building (traced twice), for a few quick-budget recipes on Fashion-MNIST.

    python benchmarks/one_trace.py [--images 600] [--epochs 2] [--experiments C1 C5 F2 C5_BN]

Prints, per recipe: train-step traces and seconds both ways, and whether the histories and weights are equal.
TensorFlow backend only (the other backends build before tracing already).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from cnnlab.data.loaders import load_idx_folder
from cnnlab.data.splits import stratified_subsample
from cnnlab.params import parse_params
from cnnlab.training import backend
from cnnlab.training.fit import fit, seeded_model

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
traces = [0]
_step = TensorFlowTrainer.train_step


def _counted_step(self: TensorFlowTrainer, data: object) -> object:
    traces[0] += 1  # the Python body runs only while TensorFlow traces the step
    return _step(self, data)


def _subset(arrays: tuple[np.ndarray, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    keep = stratified_subsample(arrays[1], size, 0)
    return arrays[0][keep], arrays[1][keep]


def one_training(recipe: object, train: tuple, val: tuple, build: bool) -> tuple[dict, list, int, float]:
    built = backend.build_training_state
    if not build:
        backend.build_training_state = lambda *args: None  # type: ignore[assignment]
    traces[0] = 0
    started = time.perf_counter()
    try:
        result = fit(seeded_model(recipe, (28, 28, 1), 10, 3), recipe, train, val, 10, seed=3, verbose=0)
    finally:
        backend.build_training_state = built
    return result.history, result.model.get_weights(), traces[0], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--experiments", nargs="+", default=["C1", "C5", "F2", "C5_BN"])
    args = parser.parse_args()
    TensorFlowTrainer.train_step = _counted_step  # type: ignore[method-assign]
    fashion = load_idx_folder(FASHION)
    train, val = _subset(fashion["train"], args.images), _subset(fashion["test"], args.images // 2)
    print("| recipe | traces (deferred / built first) | seconds (deferred / built first) | same weights |")
    print("|---|---|---|---|")
    for exp_id in args.experiments:
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        quick = raw["experiments"][exp_id].get("budgets", {}).get("quick", {})
        raw["experiments"][exp_id].update(epochs=args.epochs, budgets={}, precision=quick.get("precision", "float32"))
        recipe = parse_params(raw).recipe(exp_id)
        deferred, first = one_training(recipe, train, val, False), one_training(recipe, train, val, True)
        weights = zip(deferred[1], first[1], strict=True)
        same = deferred[0] == first[0] and all(np.array_equal(a, b) for a, b in weights)
        print(f"| {exp_id} ({recipe.precision}) | {deferred[2]} / {first[2]} | {deferred[3]:.2f} / {first[3]:.2f} | "
              f"{'yes' if same else 'no'} |")  # fmt: skip


if __name__ == "__main__":
    main()
