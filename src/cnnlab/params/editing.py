"""Adding entries to params.yaml with every comment, every other line and the order of keys kept.

A new entry is spliced into the text where a person would type it (after the last entry of its section), found
from ruamel.yaml's round-trip positions; the spliced text must then read back as exactly the intended data. Where
a section's style leaves no safe place to splice (a non-empty one-line `{...}` mapping), the document goes
through ruamel.yaml's round trip instead, which keeps comments and order but may re-wrap long one-line mappings.
The result is validated as params before the file is replaced, in one rename: an error leaves it untouched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from cnnlab.params.base import ParamsError
from cnnlab.params.loading import parse_params
from cnnlab.params.root import Params
from cnnlab.util.files import atomic_path

Path_ = tuple[str, ...]  # keys from the top of the document to a section


def _round_trip() -> YAML:
    loader = YAML()  # round-trip: keeps comments, order, quoting and flow style
    loader.preserve_quotes = True
    loader.width = 4096
    loader.indent(mapping=2, sequence=4, offset=2)
    loader.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return loader


def _at(data: Any, path: Path_) -> Any:
    for key in path:
        data = data[key]
    return data


def _offset(lines: list[str], line: int, col: int) -> int:
    return sum(len(text) for text in lines[:line]) + col


def _block(key: str, value: Any, indent: int) -> list[str]:
    """`key: value` as YAML lines at `indent`, collections of scalars on one line as params.yaml writes them."""
    text = yaml.safe_dump({key: value}, default_flow_style=None, sort_keys=False, allow_unicode=True, width=120)
    return [" " * indent + line + "\n" for line in text.splitlines()]


def _end_of_entry(lines: list[str], line: int, col: int) -> int:
    """The last line of the mapping entry whose key is at (line, col): its deeper lines, not comments after it."""
    end = line
    for i in range(line + 1, len(lines)):
        stripped = lines[i].strip()
        depth = len(lines[i]) - len(lines[i].lstrip())
        if stripped and depth <= col and not stripped.startswith("#"):
            break
        if stripped and depth > col:
            end = i
    return end


def _splice_item(text: str, path: Path_, item: str) -> str | None:
    """`text` with `item` appended to the list at `path`, or None where the list's style has no safe place."""
    lines = text.splitlines(keepends=True)
    doc = _round_trip().load(text)
    parent, seq = _at(doc, path[:-1]), _at(doc, path)
    if not isinstance(seq, CommentedSeq) or any(isinstance(v, dict | list) for v in seq):
        return None
    if not seq:  # `key: []`
        line, col = parent.lc.value(path[-1])
        start = _offset(lines, line, col)
        return text[:start] + text[start:].replace("[]", f"[{item}]", 1) if text[start:].startswith("[]") else None
    line, col = seq.lc.item(len(seq) - 1)
    if seq.fa.flow_style():
        start = _offset(lines, line, col)
        close = text.find("]", start)
        return None if close < 0 else text[:close] + f", {item}" + text[close:]
    lines.insert(line + 1, lines[line][:col] + item + "\n")  # a block item: `- name`, as the last one is indented
    return "".join(lines)


def _splice_entry(text: str, path: Path_, key: str, value: Any) -> str | None:
    """`text` with `key: value` added at the end of the mapping at `path`, or None where its style has no safe
    place for it."""
    lines = text.splitlines(keepends=True)
    doc = _round_trip().load(text)
    parent, mapping = _at(doc, path[:-1]), _at(doc, path)
    if not isinstance(mapping, CommentedMap):
        return None
    if not mapping:  # `key: {}`, perhaps with a comment after it: the braces go, the entry follows in block style
        line, col = parent.lc.value(path[-1])
        if not lines[line][col:].startswith("{}"):
            return None
        rest = lines[line][col + 2 :]  # a comment after the braces keeps its column
        lines[line] = lines[line][:col] + "  " + rest if rest.strip() else lines[line][:col].rstrip() + "\n"
        indent = parent.lc.key(path[-1])[1] + 2
        return "".join([*lines[: line + 1], *_block(key, value, indent), *lines[line + 1 :]])
    if mapping.fa.flow_style():
        return None
    last = list(mapping)[-1]
    line, col = mapping.lc.key(last)
    end = _end_of_entry(lines, line, col)
    if not lines[end].endswith("\n"):
        lines[end] += "\n"
    return "".join([*lines[: end + 1], *_block(key, value, col), *lines[end + 1 :]])


class ParamsEditor:
    """params.yaml's text and data, with entries added one at a time; `write` validates and saves them."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ParamsError(f"{path} not found: run from the project root or pass --params")
        self.path = path
        self.text = path.read_text()
        self.data: dict[str, Any] = yaml.safe_load(self.text)

    def append_item(self, path: Path_, item: str) -> None:
        """Append the scalar `item` to the list at `path` (`datasets`)."""
        _at(self.data, path).append(item)
        self._apply(_splice_item(self.text, path, item), lambda doc: _at(doc, path).append(item))

    def add_entry(self, path: Path_, key: str, value: dict[str, Any]) -> None:
        """Add `key: value` at the end of the mapping at `path` (`experiments`, `data.custom`)."""
        section = _at(self.data, path)
        if key in section:
            raise ParamsError(f"{'.'.join(path)}.{key} exists already; choose another name")
        section[key] = value
        self._apply(_splice_entry(self.text, path, key, value), lambda doc: _at(doc, path).update({key: value}))

    def _apply(self, spliced: str | None, change: Any) -> None:
        if spliced is not None and yaml.safe_load(spliced) == self.data:
            self.text = spliced
            return
        loader = _round_trip()  # no safe splice: the whole document through ruamel.yaml's round trip
        doc = loader.load(self.text)
        change(doc)
        out = io.StringIO()
        loader.dump(doc, out)
        if yaml.safe_load(out.getvalue()) != self.data:
            raise ParamsError(f"{self.path}: could not add the entry without changing other values; edit it by hand")
        self.text = out.getvalue()

    def params(self) -> Params:
        """The edited params, validated as the pipeline validates them."""
        return parse_params(self.data, str(self.path))

    def write(self) -> Params:
        """Validate, then replace the file in one rename; nothing is written on error."""
        params = self.params()
        with atomic_path(self.path) as tmp:
            tmp.write_text(self.text)
        return params
