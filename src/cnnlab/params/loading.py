"""Reading params.yaml: a missing file, bad YAML or an invalid key fails at once with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cnnlab.params.base import ParamsError
from cnnlab.params.messages import describe
from cnnlab.params.root import Params


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = "\n  ".join(describe(e, Params) for e in exc.errors())
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
