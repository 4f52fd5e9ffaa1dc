"""A `dvc repro`'s time per stage: wall time from DVC's own output, the split inside from the probe's records.

A stage's wall time runs from DVC's "Running stage" line for it to the next one (the last: to the end of the
repro), so it holds process start, imports and DVC's own work before and after the command. Compute is the
time in the probe's compute phases; everything else is outside compute.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from probe.sitecustomize import COMPUTE

RUNNING = re.compile(r"^Running stage '([^']+)'")
# Outside-compute parts shown as columns; the rest of the process's time is "other" (the stage's own Python).
PARTS = ("import", "params", "load", "mlflow", "save")
# Stages whose whole work is data handling and writing: the issue holds their overhead to a tighter limit.
LIGHT_KINDS = ("download", "preprocess", "report")


@dataclass
class StageTime:
    stage: str
    wall: float
    compute: float = 0.0
    process: float = 0.0  # the stage command's own life, start to exit
    parts: dict[str, float] = field(default_factory=dict)
    warm: bool = False  # run by a warm worker (no imports to wait for)

    @property
    def kind(self) -> str:
        return self.stage.split("@", 1)[0]

    @property
    def outside(self) -> float:
        return self.wall - self.compute

    @property
    def other(self) -> float:
        """Outside compute but in none of the parts: the stage's own Python (building models, writing files)."""
        return self.outside - self.dvc - sum(self.parts.values())

    @property
    def dvc(self) -> float:
        """DVC's own work around the command: checking deps, hashing and caching outputs, the lock file."""
        return max(self.wall - self.process, 0.0)


Marks = list[tuple[str, float]]  # (stage, when DVC started it)


def timed_repro(command: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[Marks, float]:
    """Run `dvc repro`, echo and keep its output, and note when each stage started; returns those and the end."""
    marks: Marks = []
    with (
        log.open("w") as out,
        subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as child,
    ):
        assert child.stdout is not None
        for line in child.stdout:
            now = time.time()
            out.write(line)
            if found := RUNNING.match(line):
                marks.append((found.group(1), now))
                print(f"{time.strftime('%H:%M:%S')} {found.group(1)}", flush=True)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {child.returncode}); its output is in {log}")
    return marks, time.time()


def read_probes(folder: Path) -> dict[str, dict]:
    """Each stage's record: its command's process, from its start to its exit, with the phases of the
    process that ran the stage's code (the same one, or the warm worker's fork that stood in for it)."""
    stages: dict[str, dict] = {}
    for record in (json.loads(path.read_text()) for path in folder.glob("*.json")):
        seen = stages.setdefault(record["stage"], record)
        if seen is not record:
            seen["started"] = min(seen["started"], record["started"])
            seen["ended"] = max(seen["ended"], record["ended"])
            seen["entered"] = seen["entered"] or record["entered"]
            seen["warm"] = seen["warm"] or record["warm"]
            for phase, spent in record["seconds"].items():
                seen["seconds"][phase] = seen["seconds"].get(phase, 0.0) + spent
    return stages


def stage_times(marks: Marks, ended: float, probes: dict[str, dict]) -> list[StageTime]:
    ends = [t for _, t in marks[1:]] + [ended]
    times = []
    for (stage, started), until in zip(marks, ends, strict=True):
        row = StageTime(stage, until - started)
        if probe := probes.get(stage):
            spent = probe["seconds"]
            row.compute = sum(spent.get(phase, 0.0) for phase in COMPUTE)
            row.process = probe["ended"] - probe["started"]
            row.warm = probe["warm"]
            entered = probe["entered"] or probe["ended"]
            row.parts = {"import": entered - probe["started"]}
            row.parts.update({part: spent.get(part, 0.0) for part in PARTS[1:]})
        times.append(row)
    return times


def _sum(rows: Iterable[StageTime], value: str) -> float:
    return sum(getattr(row, value) for row in rows)


def by_kind(times: list[StageTime]) -> list[list[str]]:
    """Markdown rows: per stage kind, then all stages."""
    kinds = sorted({t.kind for t in times}, key=lambda kind: [t.kind for t in times].index(kind))
    groups = [(kind, [t for t in times if t.kind == kind]) for kind in kinds] + [("**all**", times)]
    rows = []
    for kind, group in groups:
        outside = [t.outside for t in group]
        parts = [f"{sum(t.parts.get(part, 0.0) for t in group):.0f}" for part in PARTS]
        rows.append(
            [kind, str(len(group)), f"{_sum(group, 'wall'):.0f}", f"{_sum(group, 'compute'):.0f}",
             f"{sum(outside):.0f}", f"{statistics.median(outside):.1f}", f"{max(outside):.1f}",
             *parts, f"{_sum(group, 'other'):.0f}", f"{_sum(group, 'dvc'):.0f}"]
        )  # fmt: skip
    return rows


KIND_HEADER = ["stage kind", "stages", "wall s", "compute s", "outside s", "outside median s", "outside max s",
               *(f"{part} s" for part in PARTS), "other s", "DVC s"]  # fmt: skip


def limits(times: list[StageTime]) -> dict[str, object]:
    """The figures the issue bounds: median and largest overhead, and the light stages' largest."""
    outside = [t.outside for t in times]
    light = [t.outside for t in times if t.kind in LIGHT_KINDS]
    worst = max(times, key=lambda t: t.outside)
    return {
        "stages": len(times),
        "wall_seconds": _sum(times, "wall"),
        "outside_median": statistics.median(outside),
        "outside_max": worst.outside,
        "outside_max_stage": worst.stage,
        "light_outside_max": max(light, default=0.0),
        "warm_stages": sum(t.warm for t in times),
    }


def to_json(times: list[StageTime]) -> list[dict]:
    return [{**asdict(t), "outside": t.outside, "other": t.other, "dvc": t.dvc} for t in times]
