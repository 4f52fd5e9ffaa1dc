"""What `run.py ray` measures of one study run (one "way": here, or on a Ray cluster of some nodes): when each
training's score came back and on which node, and the way's figures.

Each node trains one training at a time (one CPU each), so the time between two scores from the same node is
one training there, everything included: on Ray the task's scheduling, its arguments from the object store, its
MLflow run and its result back; the first on a node (timed from the start of the study's trainings, after its
arms' runs opened) also connecting to the cluster, the images to the object store, and the start of a fresh
worker and its imports. The training itself (`fit`) is what the score records as its seconds. After the last
score the study closes its arms' runs and, on Ray, disconnects.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Training:
    """One training as the study saw it come back."""

    arm: str
    fold: int
    node: str
    seconds: float  # since the node's previous score (the first: since the study started)
    fit_seconds: float  # the training itself, as its score records it
    first_on_node: bool


def timed_study(
    plan: Any, params: Any, paths: Any, tasks: Any
) -> tuple[Any, list[tuple[float, Any]], tuple[float, float]]:
    """Run the study (one training at a time here when `tasks` is None, else as Ray tasks): its StudyRun, each
    score with the time it came back, and the times the trainings started and the study ended."""
    arrivals: list[tuple[float, Any]] = []
    record = plan.ledger.record

    def timed(score: Any) -> None:  # the study records each score the moment it comes back
        arrivals.append((time.perf_counter(), score))
        record(score)

    plan.ledger.record = timed
    with plan.parent_run(params, paths, {}):
        started = time.perf_counter()
        run = plan.train_all(params.seed, 1, tasks)
        ended = time.perf_counter()  # the arms' runs closed; on Ray, the driver disconnected
    return run, arrivals, (started, ended)


def trainings(arrivals: list[tuple[float, Any]], started: float, node_of: Callable[[Any], str]) -> list[Training]:
    last: dict[str, float] = {}
    found = []
    for at, score in sorted(arrivals, key=lambda arrival: arrival[0]):
        node = node_of(score)
        found.append(Training(score.arm, score.fold, node, at - last.get(node, started), score.seconds,
                              node not in last))  # fmt: skip
        last[node] = at
    return found


def outcome(scores: list[Any]) -> list[list[Any]]:
    """What a training's score is, without its timing and run id (JSON-ready)."""
    return [[s.arm, s.fold, s.val_accuracy, s.val_loss, s.train_accuracy, s.epochs] for s in scores]


def mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def way_figures(
    way: str, nodes: int, run: Any, found: list[Training], after_last: float, local: list | None
) -> dict[str, Any]:
    """The way's wall time and rate, its first and later trainings' mean times, the time from the last score to
    the study's end, and whether its scores are those of the local way (`local`: its outcome; None for the local
    way itself)."""
    first = [t for t in found if t.first_on_node]
    later = [t for t in found if not t.first_on_node]
    per_node: dict[str, int] = {}
    for t in found:
        per_node[t.node] = per_node.get(t.node, 0) + 1
    scores = outcome(run.scores)
    return {
        "way": way,
        "nodes": nodes,
        "wall_seconds": run.wall_seconds,
        "trainings": run.trained,
        "train_samples": run.scores[0].train_samples,
        "trainings_per_minute": run.trainings_per_minute,
        "trainings_per_node": per_node,
        "first_seconds": mean([t.seconds for t in first]),
        "first_fit_seconds": mean([t.fit_seconds for t in first]),
        "later_seconds": mean([t.seconds for t in later]),
        "later_fit_seconds": mean([t.fit_seconds for t in later]),
        "later_outside_fit_seconds": mean([t.seconds - t.fit_seconds for t in later]),
        "after_last_seconds": after_last,
        "trainings_detail": [asdict(t) for t in found],
        "scores": scores,
        "same_scores_as_local": local is None or scores == local,
    }


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def overheads(ways: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Ray way against the local one: a later training's extra time (and the part of it outside the fit),
    and the first training's (connecting, the images to the object store, a fresh worker and its imports)."""
    local = ways[0]
    return [
        {
            "nodes": w["nodes"],
            "later_seconds": difference(w["later_seconds"], local["later_seconds"]),
            "later_outside_fit_seconds": difference(w["later_outside_fit_seconds"], local["later_outside_fit_seconds"]),
            "later_fit_seconds": difference(w["later_fit_seconds"], local["later_fit_seconds"]),
            "first_seconds": difference(w["first_seconds"], local["first_seconds"]),
            "after_last_seconds": w["after_last_seconds"] - local["after_last_seconds"],
        }
        for w in ways[1:]
    ]


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


WAYS_HEADER = ["way", "nodes", "trainings", "wall s", "trainings/min", "first training s", "later trainings s",
               "later fit s", "later outside fit s", "after the last s", "trainings per node",
               "scores as local"]  # fmt: skip
OVERHEAD_HEADER = ["Ray on", "later training s (Ray - local)", "outside the fit s", "in the fit s",
                   "first training s (Ray - local)", "after the last s (Ray - local)"]  # fmt: skip


def way_row(w: dict[str, Any]) -> list[str]:
    per_node = ", ".join(f"{node} {count}" for node, count in w["trainings_per_node"].items())
    return [w["way"], str(w["nodes"] or "-"), str(w["trainings"]), f"{w['wall_seconds']:.1f}",
            f"{w['trainings_per_minute']:.2f}", seconds(w["first_seconds"]), seconds(w["later_seconds"]),
            seconds(w["later_fit_seconds"]), seconds(w["later_outside_fit_seconds"]),
            seconds(w["after_last_seconds"]), per_node,
            "yes" if w["same_scores_as_local"] else "NO"]  # fmt: skip


def overhead_row(o: dict[str, Any]) -> list[str]:
    return [f"{o['nodes']} node{'s' if o['nodes'] > 1 else ''}", signed(o["later_seconds"]),
            signed(o["later_outside_fit_seconds"]), signed(o["later_fit_seconds"]),
            signed(o["first_seconds"]), signed(o["after_last_seconds"])]  # fmt: skip
