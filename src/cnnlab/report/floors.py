"""Quick-budget floors (params.yaml `quick_floors`): the results on the quick budget held to them, a table's
floor column, and the report's list of the ones below."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.params import FloorSection, Params
from cnnlab.report.cells import _percent
from cnnlab.report.text import plural


@dataclass(frozen=True)
class FloorCheck:
    """One quick-budget result held to its floor (params.yaml `quick_floors`)."""

    id: str  # the experiment, study, search or transfer recipe
    part: str  # a study's arm or cell, a search's "best trial" or "retrained"; "" where the id has one result
    metric: str
    value: float | None  # None: not measured yet
    floor: float

    @property
    def below(self) -> bool:
        return self.value is not None and self.value < self.floor

    def __str__(self) -> str:
        name = f"{self.id} {self.part}" if self.part else self.id
        return f"{name}: {self.metric} {_percent(self.value)}, floor {_floor_text(self.floor)}"


def quick_floor(params: Params, section: FloorSection, target: str, budget: str | None) -> float | None:
    """The floor of a result produced on `budget`: only quick-budget results are held to one."""
    return params.quick_floors.floor(section, target) if budget == "quick" else None


def _checks(
    params: Params, section: FloorSection, target: str, budget: str | None, results: list[tuple[str, str, float | None]]
) -> list[FloorCheck]:
    """`results` ((part, metric, value) each) held to `target`'s floor, if `budget` gives it one."""
    floor = quick_floor(params, section, target, budget)
    return [] if floor is None else [FloorCheck(target, part, metric, value, floor) for part, metric, value in results]


def _floor_text(floor: float) -> str:
    return f"{100 * floor:g}%"


def floor_cell(checks: list[FloorCheck]) -> str:
    """A table's floor column: the floor, marked where a result falls below it ("-" where none applies)."""
    if not checks:
        return "-"
    text = _floor_text(checks[0].floor)  # one id, one floor
    below = [c for c in checks if c.below]
    if not below:
        return text
    parts = f" ({', '.join(c.part for c in below)})" if len(checks) > 1 else ""
    return f"**below floor {text}**{parts}"


def floor_section(checks: list[FloorCheck]) -> str:
    """The quick-budget results below their floors, in one list (each table marks its own too)."""
    measured = [c for c in checks if c.value is not None]
    if not measured:
        return ""
    below = [c for c in measured if c.below]
    held = f"{plural(len(measured), 'quick-budget result')} held to their floors (`quick_floors` in params.yaml)"
    verdict = f"{len(below)} {'falls' if len(below) == 1 else 'fall'} below." if below else "all reach them."
    lines = ["## Quick-budget floors", "", f"{held}: {verdict}"]
    lines += ["", *(f"- **{c}**" for c in below)] if below else []
    return "\n".join(lines) + "\n"


def floor_metrics(checks: list[FloorCheck]) -> dict[str, float]:
    """For the report's MLflow run: how many quick-budget results were held to a floor, and how many fell below."""
    measured = [c for c in checks if c.value is not None]
    return {"quick_floor.checked": len(measured), "quick_floor.below": sum(c.below for c in measured)}
