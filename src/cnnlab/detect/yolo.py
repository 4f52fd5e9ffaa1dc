"""Object detection with a Darknet YOLO model through OpenCV's DNN module (seed 004, program 6-12).

The seed's recipe: `blobFromImage(img, 1/256, (448, 448), swapRB=True)`, the outputs of the unconnected
layers (YOLOv3's yolo_82, yolo_94 and yolo_106), each row `[cx, cy, w, h, objectness, class scores...]` in
fractions of the image; a row is a candidate when its best class score exceeds the score threshold, and
non-maximum suppression (`NMSBoxes`) keeps the best of boxes that overlap by more than the NMS threshold.

OpenCV's [yolo] layer has already multiplied each class probability by the objectness and set scores at or
below the layer's own `thresh` (0.2 unless the cfg says otherwise) to zero: a score threshold below that
finds nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from cnnlab.detect.darknet import DarknetFileError, check_pair, read_names
from cnnlab.params import DetectSettings
from cnnlab.tracking.runs import safe_metric_name
from cnnlab.util.files import write_json, write_with
from cnnlab.util.images import ImageTooLarge, opened

log = logging.getLogger(__name__)
Box = tuple[int, int, int, int]  # x, y (top-left corner), width, height in the image's pixels
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: Box  # x, y (top-left corner), width, height in the image's pixels

    def as_json(self) -> dict:
        return {"class": self.label, "class_id": self.class_id, "score": self.score, "box": list(self.box)}


@dataclass(frozen=True)
class Detector:
    """A Darknet model loaded into OpenCV, its class names and the settings to run it with."""

    net: cv2.dnn.Net
    names: list[str]
    settings: DetectSettings

    @classmethod
    def load(cls, cfg: Path, weights: Path, names: Path, settings: DetectSettings) -> Detector:
        sections = check_pair(cfg, weights)
        labels = read_names(names, sections)
        try:
            net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as exc:
            raise DarknetFileError(
                f"OpenCV could not build the model from {cfg.name} and {weights.name}: {exc}"
            ) from None
        return cls(net, labels, settings)

    def outputs(self, image: np.ndarray) -> list[np.ndarray]:
        """The raw rows of every detection layer for one BGR image."""
        size = (self.settings.input_size, self.settings.input_size)
        blob = cv2.dnn.blobFromImage(image, self.settings.scale, size, swapRB=True, crop=False)
        self.net.setInput(blob)
        return list(self.net.forward(self.net.getUnconnectedOutLayersNames()))

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        boxes, scores, class_ids = candidates(self.outputs(image), width, height, self.settings.score_threshold)
        kept = suppress(boxes, scores, self.settings.score_threshold, self.settings.nms_threshold)
        return [Detection(self.names[class_ids[i]], class_ids[i], scores[i], boxes[i]) for i in kept]


def candidates(
    outputs: Sequence[np.ndarray], width: int, height: int, threshold: float
) -> tuple[list[Box], list[float], list[int]]:
    """Rows whose best class score exceeds `threshold`, as pixel boxes (the seed's integer arithmetic)."""
    rows = np.concatenate([np.asarray(o).reshape(-1, o.shape[-1]) for o in outputs])
    class_ids = rows[:, 5:].argmax(axis=1)
    best = rows[np.arange(len(rows)), 5 + class_ids]
    keep = best > threshold
    boxes, scores, ids = [], [], []
    for row, class_id, score in zip(rows[keep], class_ids[keep], best[keep], strict=True):
        center_x, center_y = int(row[0] * width), int(row[1] * height)
        w, h = int(row[2] * width), int(row[3] * height)
        boxes.append((int(center_x - w / 2), int(center_y - h / 2), w, h))
        scores.append(float(score))
        ids.append(int(class_id))
    return boxes, scores, ids


def suppress(boxes: list[Box], scores: list[float], threshold: float, overlap: float) -> list[int]:
    """Indexes NMSBoxes keeps, best score first."""
    if not boxes:
        return []
    return [int(i) for i in np.asarray(cv2.dnn.NMSBoxes(boxes, scores, threshold, overlap)).flatten()]


def class_colours(count: int) -> np.ndarray:
    """One BGR colour per class, the same on every run (the seed draws new random ones each time)."""
    return np.random.default_rng(0).uniform(0, 255, size=(count, 3))


def draw(image: np.ndarray, detections: list[Detection], colours: np.ndarray) -> np.ndarray:
    """A copy of the image with each detection's box and `label score` drawn in its class's colour."""
    drawn = image.copy()
    for d in detections:
        x, y, w, h = d.box
        colour = tuple(float(c) for c in colours[d.class_id])
        cv2.rectangle(drawn, (x, y), (x + w, y + h), colour, 2)
        cv2.putText(drawn, f"{d.label} {d.score:.3f}", (x, max(y - 6, 12)), cv2.FONT_HERSHEY_PLAIN, 1.2, colour, 2)
    return drawn


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DarknetFileError(f"image {path} not found")
    try:
        with opened(path):  # the header's size first: a decompression bomb is never handed to OpenCV
            pass
    except ImageTooLarge as exc:
        raise DarknetFileError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, ValueError):
        pass  # a format Pillow does not read: OpenCV's own size limit applies
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DarknetFileError(f"{path} is not an image OpenCV can read (JPEG, PNG, BMP, TIFF, WebP)")
    return image


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The images named, folders expanded to the images in them (sorted); none at all is an error."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    if not found:
        raise DarknetFileError(f"no images in {', '.join(str(p) for p in paths)}")
    return found


def output_names(images: list[Path]) -> list[str]:
    """A distinct file name for each drawn image (two inputs may share a name in different folders)."""
    names, seen = [], set()
    for path in images:
        name, n = f"{path.stem}.jpg", 1
        while name in seen:
            n += 1
            name = f"{path.stem}-{n}.jpg"
        seen.add(name)
        names.append(name)
    return names


def detect_images(detector: Detector, images: list[Path], out: Path) -> dict:
    """Detect in every image (all read first, so a bad one stops the run before any work); write the drawn
    images and detections.json into `out`; return what the JSON holds."""
    pictures = [read_image(p) for p in images]
    colours = class_colours(len(detector.names))
    results = []
    for path, picture, name in zip(images, pictures, output_names(images), strict=True):
        found = detector.detect(picture)
        encoded = cv2.imencode(".jpg", draw(picture, found, colours))[1]
        write_with(out / name, partial(Path.write_bytes, data=encoded.tobytes()))
        results.append({"image": str(path), "drawn": name, "width": picture.shape[1], "height": picture.shape[0],
                        "detections": [d.as_json() for d in found]})  # fmt: skip
        summary = ", ".join(f"{d.label} {d.score:.1%}" for d in found) or "nothing"
        log.info("%s: %s", path, summary)
    report = {"settings": detector.settings.model_dump(), "classes": len(detector.names), "images": results}
    write_json(out / "detections.json", report)
    return report


def summary_metrics(report: dict) -> dict[str, float]:
    """Counts for MLflow: images, detections, detections per class, the mean score."""
    found = [d for image in report["images"] for d in image["detections"]]
    metrics = {"images": float(len(report["images"])), "detections": float(len(found))}
    if found:
        metrics["mean_score"] = float(np.mean([d["score"] for d in found]))
    for label in sorted({d["class"] for d in found}):
        metrics[f"detections_{safe_metric_name(label)}"] = float(sum(d["class"] == label for d in found))
    return metrics
