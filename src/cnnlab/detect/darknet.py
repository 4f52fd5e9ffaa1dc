"""Darknet model files: what a `.cfg` declares and whether a `.weights` file holds exactly what it needs.

OpenCV's importer reads a `.weights` file that is too short or too long without a word and then detects
garbage, so the pair is checked here first, from the layer shapes the cfg declares.
"""

from __future__ import annotations

import builtins
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.util.errors import UserError


class DarknetFileError(UserError, ValueError):
    """A cfg, weights or names file that cannot make a working detector, with what to do about it."""


@dataclass
class Section:
    kind: str  # net, convolutional, route, yolo, ...
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def int(self, key: str, default: builtins.int, least: builtins.int | None = None) -> builtins.int:
        """Option `key` as a whole number (`default` when absent), at least `least` if given."""
        try:
            value = int(self.options.get(key, default))
        except ValueError:
            raise DarknetFileError(
                f"line {self.line}: [{self.kind}] {key}={self.options[key]} is not a number"
            ) from None
        if least is not None and value < least:
            raise DarknetFileError(f"line {self.line}: [{self.kind}] {key}={value}; it must be at least {least}")
        return value

    def layer_refs(self, index: builtins.int, count: builtins.int) -> list[builtins.int]:
        """A [route]'s `layers=`, as indices of earlier layers (Darknet counts negative ones back from here)."""
        refs = []
        for raw in self.options.get("layers", "").split(","):
            if not raw.strip():
                continue
            try:
                value = int(raw)
            except ValueError:
                raise DarknetFileError(f"line {self.line}: [route] layers={raw.strip()} is not a number") from None
            target = index + value if value < 0 else value
            if not 0 <= target < index or target >= count:
                raise DarknetFileError(
                    f"line {self.line}: [route] layers={value} names no earlier layer (this is layer {index})"
                )
            refs.append(target)
        if not refs:
            raise DarknetFileError(f"line {self.line}: [route] has no layers=")
        return refs


def read_cfg(path: Path) -> list[Section]:
    """The sections of a Darknet cfg in order, `[net]` first."""
    if not path.is_file():
        raise DarknetFileError(f"cfg file {path} not found: pass the model's .cfg (for YOLOv3, yolov3.cfg)")
    sections: list[Section] = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            sections.append(Section(line[1:-1].strip().lower(), line=number))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise DarknetFileError(f"{path}, line {number}: {raw.strip()!r} is not a Darknet cfg line; is it a cfg?")
    if not sections or sections[0].kind not in ("net", "network"):
        raise DarknetFileError(f"{path} does not start with a [net] section: it is not a Darknet cfg")
    return sections


def class_counts(sections: list[Section]) -> set[int]:
    """The `classes=` of every detection layer ([yolo] or [region])."""
    return {s.int("classes", 80) for s in sections if s.kind in ("yolo", "region")}


# Layers without weights that keep their input's channels.
SAME_CHANNELS = {"maxpool", "avgpool", "upsample", "shortcut", "dropout", "yolo", "region", "reorg", "scale_channels"}


KNOWN = {"convolutional", "route", *SAME_CHANNELS}


def _groups(section: Section, channels: int) -> int:
    groups = section.int("groups", 1, least=1)
    if channels % groups:
        raise DarknetFileError(
            f"line {section.line}: [{section.kind}] groups={groups} does not divide {channels} channels"
        )
    return groups


def weight_count(sections: list[Section]) -> int:
    """How many float32 values the weights file must hold after its header, from the layers the cfg declares."""
    channels = [sections[0].int("channels", 3, least=1)]  # channels[i + 1]: the output of layer i
    total = 0
    for index, section in enumerate(sections[1:]):
        inputs = channels[-1]
        if section.kind == "convolutional":
            filters, size = section.int("filters", 1, least=1), section.int("size", 1, least=1)
            groups = _groups(section, inputs)
            batch_norm = section.int("batch_normalize", 0, least=0)
            total += filters * (4 if batch_norm else 1) + filters * (inputs // groups) * size * size
            channels.append(filters)
        elif section.kind == "route":
            picked = sum(channels[ref + 1] for ref in section.layer_refs(index, len(channels) - 1))
            channels.append(picked // _groups(section, picked))
        elif section.kind in SAME_CHANNELS:
            if section.kind in ("yolo", "region"):
                section.int("classes", 80, least=1)
            channels.append(inputs)
        else:
            raise DarknetFileError(
                f"line {section.line}: [{section.kind}] is not a layer this detector reads; "
                f"known: {', '.join(sorted(KNOWN))}"
            )
    return total


def header_size(path: Path) -> int:
    """Darknet's header: major, minor, revision (int32) and the images seen (int64 from version 0.2 on)."""
    with path.open("rb") as f:
        head = f.read(12)
    if len(head) < 12:
        raise DarknetFileError(f"weights file {path} is {len(head)} bytes: too short for a Darknet header")
    major, minor, _ = struct.unpack("<3i", head)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return 12 + (8 if wide else 4)


def check_pair(cfg: Path, weights: Path) -> list[Section]:
    """The cfg's sections, once the weights file is known to hold exactly the values the cfg's layers need."""
    sections = read_cfg(cfg)
    if not weights.is_file():
        raise DarknetFileError(f"weights file {weights} not found: pass the .weights trained with {cfg.name}")
    needed = weight_count(sections)
    held, expected = weights.stat().st_size - header_size(weights), 4 * needed
    if held != expected:
        raise DarknetFileError(
            f"{weights.name} does not match {cfg.name}: the cfg's layers need {needed:,} weights "
            f"({expected:,} bytes after the header), the file holds {held:,} bytes; pass the weights "
            "trained with this cfg (yolov3.weights goes with yolov3.cfg, yolov3-tiny.weights with yolov3-tiny.cfg)"
        )
    return sections


def read_names(path: Path, sections: list[Section]) -> list[str]:
    """One class name per line, as many as the cfg's detection layers have classes."""
    if not path.is_file():
        raise DarknetFileError(f"names file {path} not found: pass the class names, one per line (coco.names)")
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not names:
        raise DarknetFileError(f"names file {path} is empty: it needs one class name per line (coco.names has 80)")
    counts = class_counts(sections)
    if counts and counts != {len(names)}:
        declared = ", ".join(str(c) for c in sorted(counts))
        raise DarknetFileError(
            f"{path.name} has {len(names)} names but the cfg's detection layers have classes={declared}: "
            "pass the names file that goes with this model"
        )
    return names
