"""What every params.yaml section is built from: the strict model, budgets and the shared value types."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from cnnlab.util.errors import UserError

# Strict: YAML `true` or "3" is not silently taken for an integer.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
Budget = Literal["quick", "full", "speed"]
# The dtype policy a model trains in ("auto": mixed bfloat16 where the hardware computes it, see training/precision.py)
Precision = Literal["float32", "mixed_bfloat16", "auto"]
Loss = Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"]
BUDGETS: tuple[str, ...] = ("quick", "full", "speed")
# Ids of experiments, studies, searches, recipes, detect jobs and data sets name files (models/<id>.keras, data/raw/
# <id>/) and DVC stages (train@<id>): a letter first, then nothing that a path or a shell command could read as syntax.
TARGET_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
FILL_MODES = Literal["nearest", "constant", "reflect", "wrap"]


class ParamsError(UserError, ValueError):
    """params.yaml is missing, unreadable or holds a value the pipeline cannot run."""


class Strict(BaseModel):
    # A mistyped key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class WithBudgets(Strict):
    """A section with `budgets`: per budget, the keys it changes (unset keys keep the section's value)."""

    budgets: dict[Budget, Any] = {}

    def apply_budget(self, budget: Budget) -> Self:
        """A copy with `budget`'s changes applied (train_samples is not a key of the section: see below)."""
        override = self.budgets.get(budget)
        if override is None:
            return self
        # Attributes, not model_dump(): a nested section (an optimizer) stays a model.
        values = {k: getattr(override, k) for k in type(override).model_fields if k != "train_samples"}
        return self.model_copy(update={k: v for k, v in values.items() if v is not None})

    def train_samples(self, budget: str) -> int | None:
        """How many training images `budget` keeps (a stratified subset), or None for all."""
        override = self.budgets.get(budget)  # type: ignore[call-overload]
        return override.train_samples if override else None


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; nested mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_ids(where: str, ids: Iterable[str]) -> None:
    """Every id in `ids` (the keys of params section `where`) is one TARGET_ID accepts."""
    for name in ids:
        if not TARGET_ID.match(str(name)):
            raise ValueError(
                f"{where}: {name!r} is not a valid id; an id starts with a letter and holds only letters, digits, "
                "'_', '.' and '-' (it becomes a file name and part of a DVC stage name)"
            )


def check_run_list(where: str, kind: str, run: list[str], defined: dict[str, Any]) -> None:
    """A `run` list (the ids `dvc repro` runs) may only name ids its section defines."""
    unknown = [name for name in run if name not in defined]
    if unknown:
        raise ValueError(f"{where}: no {kind} {', '.join(unknown)}; allowed: {', '.join(defined)}")
