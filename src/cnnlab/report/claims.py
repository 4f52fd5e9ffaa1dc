"""claims.yaml: what each seed claims, the only numbers in the report that the pipeline did not measure."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from cnnlab.params import ParamsError, Strict, read_yaml


class Claim(Strict):
    seed: str
    metric: Literal["test_accuracy", "val_accuracy"] = "test_accuracy"
    claim: float | None = None  # None: the seed's claim is qualitative
    text: str
    params: int | None = None
    note: str = ""


class StudyClaim(Strict):
    seed: str
    text: str
    arms: dict[str, float] = Field(default_factory=dict)  # arm (or cell) -> the seed's mean over its folds
    note: str = ""


class Claims(Strict):
    experiments: dict[str, Claim]
    studies: dict[str, StudyClaim] = Field(default_factory=dict)  # optional: a study of your own needs none
    transfer: dict[str, Claim] = Field(default_factory=dict)  # transfer recipes (the seeds' own backbones)
    data_notes: dict[str, dict[str, str]] = Field(default_factory=dict)  # data set -> source format -> note
    seed_mistakes: list[str] = Field(default_factory=list)


def load_claims(path: Path) -> Claims:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the report compares against the seeds' claims listed there")
    try:
        return Claims.model_validate(read_yaml(path))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path} is not valid: {exc}") from None
