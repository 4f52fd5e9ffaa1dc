"""Reading params.yaml and turning validation errors into messages that name the key, what was found and
what is allowed, so a typo costs a second, not an hour of training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from cnnlab.params.base import ParamsError
from cnnlab.params.root import Params


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema section that holds the key at `location` (walking through dict[str, Section] entries)."""
    model: Any = Params
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


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if not where:  # cross-key checks name their keys themselves
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section = _model_at(_schema_path(error["loc"][:-1]))
        allowed = f"; allowed keys: {', '.join(section.model_fields)}" if section else ""
        return f"{where}: unknown key (a typo?){allowed}"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}{shown}"


def _schema_path(location: tuple[Any, ...]) -> tuple[Any, ...]:
    """A validation error's location without the names of dict entries (experiment ids, data set names)."""
    path: list[Any] = []
    model: Any = Params
    for part in location:
        if model is None:
            break
        if part in getattr(model, "model_fields", {}):
            path.append(part)
            model = _model_at(tuple(path))
        # else: a dict key such as an experiment id; the section below it is the dict's value type
    return tuple(path)


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source} is not valid:\n  {lines}") from None


# libyaml's parser where PyYAML was built with it: a tenth of the pure-Python parser's time on params.yaml
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    """A YAML file's data (safe types only); yaml.YAMLError when it is not valid YAML."""
    return yaml.load(path.read_text(), Loader=_SafeLoader)


def load_params(path: Path | str = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root or pass the path to params.yaml")
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of keys, got {type(raw).__name__}")
    return parse_params(raw, str(path))
