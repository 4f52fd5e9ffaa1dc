"""Validation errors as messages that name the key, what was found and what is allowed, so a typo costs a
second, not an hour of training. Keys are named from `root`: the whole params.yaml, or a section validated on
its own (a study's arm as an experiment recipe, a search range)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel


def model_at(root: type[BaseModel], location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema section that holds the key at `location` (walking through dict[str, Section] entries)."""
    model: Any = root
    for part in location:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if annotation is None:
            return None
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        candidates = [annotation, *get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def schema_path(root: type[BaseModel], location: tuple[Any, ...]) -> tuple[Any, ...]:
    """A validation error's location without the names of dict entries (experiment ids, data set names)."""
    path: list[Any] = []
    model: Any = root
    for part in location:
        if model is None:
            break
        if part in getattr(model, "model_fields", {}):
            path.append(part)
            model = model_at(root, tuple(path))
        # else: a dict key such as an experiment id; the section below it is the dict's value type
    return tuple(path)


def describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error of validating `root` as one line."""
    where = ".".join(str(p) for p in error["loc"])
    if not where:  # cross-key checks name their keys themselves
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = model_at(root, schema_path(root, error["loc"][:-1]))
        allowed = f"; allowed keys: {', '.join(section.model_fields)}" if section else ""
        return f"{where}: unknown key (a typo?){allowed}"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{shown}"
