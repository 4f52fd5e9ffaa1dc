"""Training's progress output: Keras' progress bar on a terminal, one line per epoch in a log or a pipe (where the
redrawn bar would leave its every frame)."""

from __future__ import annotations

import io
import sys

import keras
import numpy as np
import pytest

from cnnlab.training.fit import fit, progress_verbosity
from helpers.training import recipe

BAR = "━"  # Keras' progress bar


class Stdout(io.StringIO):
    """Standard output captured, a terminal or not."""

    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def train_printing_to(stream: Stdout, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two epochs of three steps of a tiny model, printed to `stream`; what was printed."""
    x = np.random.default_rng(0).uniform(0, 255, (24, 4, 4, 1)).astype("float32")
    y = np.arange(24) % 3
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    monkeypatch.setattr(sys, "stdout", stream)
    fit(model, recipe("F0", epochs=2, batch_size=8, budgets={}), (x, y), (x[:6], y[:6]), 3, seed=0)
    monkeypatch.undo()
    return stream.getvalue()


def test_a_terminal_gets_the_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = train_printing_to(Stdout(terminal=True), monkeypatch)
    assert BAR in printed and "\r" in printed and "Epoch 2/2" in printed


def test_a_log_gets_one_line_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = train_printing_to(Stdout(terminal=False), monkeypatch)
    assert BAR not in printed and "\r" not in printed and "\b" not in printed
    epochs = [line for line in printed.splitlines() if "/step" in line]
    assert len(epochs) == 2 and all(line.startswith("3/3 - ") and "val_accuracy" in line for line in epochs)


def test_the_verbosity_follows_standard_output(monkeypatch: pytest.MonkeyPatch) -> None:
    for stream, verbose in ((Stdout(terminal=True), 1), (Stdout(terminal=False), 2), (None, 2)):
        monkeypatch.setattr(sys, "stdout", stream)
        assert progress_verbosity() == verbose
