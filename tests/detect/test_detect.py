"""`cnnlab detect` on a tiny Darknet model written here: OpenCV runs it for real, and its detections are checked
against boxes worked out by hand from the model's weights (decoding, score threshold, non-maximum suppression).

The model: 448x448 input, a 64x64 max pool (a 7x7 grid of cells), a 1x1 convolution to 2 anchors x (4 box
values, objectness, 2 classes), a [yolo] layer. The test images are 64x64 cells of one colour each, so each
cell's pooled input is its colour / 256 and every output is a hand-computable function of it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import yaml

from cnnlab.cli import main as cnnlab
from cnnlab.detect.darknet import DarknetFileError, check_pair, read_cfg, read_names, weight_count
from cnnlab.detect.yolo import Detector
from cnnlab.params import DetectSettings, ParamsError, parse_params
from helpers.images import bomb_png
from helpers.project import ROOT, copy_project, run

GRID, CELL, CLASSES = 7, 64, 2
ANCHORS = [(192, 192), (96, 160)]  # pixels of the 448 input
NAMES = ["redthing", "bluething"]

TINY_CFG = f"""[net]
width=448
height=448
channels=3

[maxpool]
size={CELL}
stride={CELL}
padding=0

[convolutional]
filters={len(ANCHORS) * (5 + CLASSES)}
size=1
stride=1
pad=0
activation=linear

[yolo]
mask=0,1
anchors={", ".join(f"{w},{h}" for w, h in ANCHORS)}
classes={CLASSES}
num={len(ANCHORS)}
"""


def tiny_weights() -> tuple[np.ndarray, np.ndarray]:
    """Bias and 1x1 kernel (output, input channel R G B) of the convolution: per anchor, rows tx ty tw th obj c0 c1.

    Anchor 0 sees red things (objectness from R), anchor 1 blue ones (from B); green shifts the box centre right.
    """
    bias = np.zeros(len(ANCHORS) * 7, np.float32)
    kernel = np.zeros((len(ANCHORS) * 7, 3), np.float32)
    for anchor, colour in ((0, 0), (1, 2)):
        row = anchor * 7
        bias[row + 0], kernel[row + 0, 1] = -1.0, 2.0  # tx = 2 G - 1
        bias[row + 4], kernel[row + 4, colour] = -6.0, 12.0  # objectness logit = 12 (R or B) - 6
        kernel[row + 5] = [4.0, 0.0, -2.0]  # class 0 (red thing): 4 R - 2 B
        kernel[row + 6] = [-2.0, 0.0, 4.0]  # class 1 (blue thing): 4 B - 2 R
    return bias, kernel


def write_model(folder: Path, names: list[str] = NAMES) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cfg, weights, names_file = folder / "tiny.cfg", folder / "tiny.weights", folder / "tiny.names"
    cfg.write_text(TINY_CFG)
    bias, kernel = tiny_weights()
    header = struct.pack("<3iq", 0, 2, 0, 0)  # Darknet 0.2.0: major, minor, revision, images seen (int64)
    weights.write_bytes(header + bias.tobytes() + kernel.tobytes())  # no batch norm: biases, then the kernel
    names_file.write_text("\n".join(names) + "\n")
    return cfg, weights, names_file


# The scene: (grid row, grid column) -> BGR colour of that 64x64 cell; everything else black.
SCENE = {
    (1, 1): (0, 0, 255),  # bright red: a red thing
    (4, 4): (0, 0, 255),  # bright red beside ...
    (4, 5): (0, 0, 200),  # ... a dimmer red whose box overlaps it by IoU 0.5: suppressed at NMS 0.4
    (5, 1): (255, 0, 0),  # blue: a blue thing, anchor 1's tall box
    (2, 5): (0, 0, 128),  # half red: best score 0.44, under the 0.5 threshold
    (6, 3): (0, 255, 255),  # yellow (red and green): a red thing whose centre sits right of its cell's middle
}


def scene(scale: int = 1) -> np.ndarray:
    image = np.zeros((GRID * CELL, GRID * CELL, 3), np.uint8)
    for (row, col), bgr in SCENE.items():
        image[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = bgr
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def by_hand(size: int, threshold: float) -> list[tuple[str, float, tuple[int, int, int, int], tuple[int, int]]]:
    """Every candidate (label, score, pixel box, cell) of the scene drawn at `size` pixels, worked out from the
    weights with YOLOv3's decoding and the seed's integer arithmetic, before non-maximum suppression."""
    bias, kernel = tiny_weights()
    found = []
    for (row, col), (b, g, r) in SCENE.items():
        rgb = np.array([r, g, b]) / 256  # the blob: swapRB, scaled by 1/256
        logits = bias + kernel @ rgb
        for anchor, (anchor_w, anchor_h) in enumerate(ANCHORS):
            tx, ty, tw, th, obj, c0, c1 = logits[anchor * 7 : anchor * 7 + 7]
            scores = [sigmoid(obj) * sigmoid(c0), sigmoid(obj) * sigmoid(c1)]
            best = int(np.argmax(scores))
            if scores[best] <= threshold:
                continue
            cx, cy = (col + sigmoid(tx)) / GRID, (row + sigmoid(ty)) / GRID
            w, h = math.exp(tw) * anchor_w / 448, math.exp(th) * anchor_h / 448
            center_x, center_y, width, height = int(cx * size), int(cy * size), int(w * size), int(h * size)
            box = (int(center_x - width / 2), int(center_y - height / 2), width, height)
            found.append((NAMES[best], scores[best], box, (row, col)))
    return found


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_model(tmp_path / "model")


def detections(found: list) -> list[tuple[str, tuple[int, int, int, int]]]:
    return sorted((d.label, d.box) for d in found)


@pytest.mark.parametrize("scale", [1, 2])  # 448x448, and 896x896 (the blob resizes it; boxes are in its pixels)
def test_decoding_threshold_and_suppression_match_the_hand_computed_boxes(model, scale: int) -> None:
    detector = Detector.load(*model, DetectSettings())
    found = detector.detect(scene(scale))
    expected = by_hand(448 * scale, 0.5)
    cells = {c[3] for c in expected}
    assert cells == {(1, 1), (4, 4), (4, 5), (5, 1), (6, 3)}  # the half-red cell is under the threshold
    survivors = [c for c in expected if c[3] != (4, 5)]  # NMS keeps the brighter of the overlapping pair
    assert detections(found) == sorted((label, box) for label, _, box, _ in survivors)
    for d in found:
        hand = next(c for c in survivors if c[2] == d.box)
        assert d.score == pytest.approx(hand[1], abs=1e-5)
    assert {d.label for d in found} == {"redthing", "bluething"}
    yellow = next(c for c in survivors if c[3] == (6, 3))
    assert yellow[2][0] + yellow[2][2] / 2 > (3 + 0.5) * CELL * scale  # green moved its centre right (tx > 0)


def test_thresholds_are_options(model) -> None:
    lower = Detector.load(*model, DetectSettings(score_threshold=0.3)).detect(scene())
    assert (2, 5) in {c[3] for c in by_hand(448, 0.3)}
    assert len(lower) == len(by_hand(448, 0.3)) - 1  # the half-red cell now counts; the pair still loses one
    looser = Detector.load(*model, DetectSettings(nms_threshold=0.6)).detect(scene())
    assert len(looser) == 5  # IoU 0.5 is under 0.6: the dimmer red box survives too
    assert Detector.load(*model, DetectSettings(score_threshold=0.99)).detect(scene()) == []


def test_the_cli_writes_drawn_images_and_json(model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "street.png"), scene())
    cv2.imwrite(str(images / "empty.png"), np.zeros((300, 500, 3), np.uint8))
    cfg, weights, names = model
    out = tmp_path / "out"
    code = cnnlab(["detect", "--cfg", str(cfg), "--weights", str(weights), "--names", str(names), str(images),
                   "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "detections.json").read_text())
    assert [Path(i["image"]).name for i in report["images"]] == ["empty.png", "street.png"]
    assert report["images"][0]["detections"] == []
    street = report["images"][1]
    assert sorted((d["class"], tuple(d["box"])) for d in street["detections"]) == sorted(
        (label, box) for label, _, box, cell in by_hand(448, 0.5) if cell != (4, 5)
    )
    assert report["settings"]["input_size"] == 448 and report["settings"]["nms_threshold"] == 0.4
    drawn = cv2.imread(str(out / "street.jpg"))
    assert drawn.shape == (448, 448, 3) and (drawn != cv2.imread(str(images / "street.png"))).any()  # boxes drawn
    assert "redthing" in capsys.readouterr().out


THREE_CLASSES = TINY_CFG.replace("classes=2", "classes=3").replace("filters=14", "filters=16")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda cfg, w, n: cfg.unlink(), "cfg file .* not found"),
        (lambda cfg, w, n: w.write_bytes(w.read_bytes()[:-4]), r"tiny.weights does not match tiny.cfg: .* need 56 "),
        (lambda cfg, w, n: cfg.write_text(THREE_CLASSES), "does not match"),  # weights of another model
        (lambda cfg, w, n: n.write_text("\n\n"), "names file .* is empty"),
        (lambda cfg, w, n: n.write_text("one\ntwo\nthree\n"), "3 names but the cfg's detection layers have classes=2"),
        (lambda cfg, w, n: cfg.write_text("width=448\n"), "not a Darknet cfg"),
        (lambda cfg, w, n: w.write_bytes(b"\0" * 6), "too short for a Darknet header"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG + "[route]\nlayers=-99\n"), "layers=-99 names no earlier layer"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG + "[route]\nlayers=0,x\n"), "layers=x is not a number"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG + "[route]\nlayers=-1\ngroups=0\n"), "groups=0; it must be"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG + "[route]\nlayers=-1\ngroups=4\n"), "groups=4 does not divide"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG.replace("size=1\n", "size=0\n")), "size=0; it must be at least 1"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG + "[lstm]\noutput=4\n"), r"\[lstm\] is not a layer"),
        (lambda cfg, w, n: cfg.write_text(TINY_CFG.replace("classes=2", "classes=0")), "classes=0; it must be"),
    ],
)  # fmt: skip
def test_bad_model_files_are_clear_errors(model, spoil, message: str) -> None:
    spoil(*model)
    with pytest.raises(DarknetFileError, match=message):
        Detector.load(*model, DetectSettings())


def test_a_bad_image_or_option_stops_the_cli_before_any_output(
    model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "notes.jpg"
    cv2.imwrite(str(good), scene())
    bad.write_text("not an image")
    files = [f"--{k}={v}" for k, v in zip(("cfg", "weights", "names"), model, strict=True)]
    out = tmp_path / "out"
    assert cnnlab(["detect", *files, str(good), str(bad), "--out", str(out)]) == 2
    assert "notes.jpg is not an image OpenCV can read" in capsys.readouterr().err
    assert not out.exists()  # nothing written: the unreadable image was found before any detection
    assert cnnlab(["detect", *files, str(good), "--input-size", "400", "--out", str(out)]) == 2
    assert "--input-size: Value error, 400: YOLO's strides need a multiple of 32" in capsys.readouterr().err
    assert cnnlab(["detect", *files, str(tmp_path / "missing.jpg"), "--out", str(out)]) == 2
    assert "missing.jpg not found" in capsys.readouterr().err
    assert cnnlab(["detect", *files, str(good), "--input-size", "4096", "--out", str(out)]) == 2
    assert "--input-size: Input should be less than or equal to 2048" in capsys.readouterr().err
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    assert cnnlab(["detect", *files, str(good), str(tmp_path / "bomb.png"), "--out", str(out)]) == 2
    assert "bomb.png: its header promises more than 40 megapixels" in capsys.readouterr().err
    assert not out.exists()


def test_weight_count_of_a_yolov3_shaped_cfg(tmp_path: Path) -> None:
    """Routes, shortcuts, upsampling and batch norm counted as Darknet lays them out: YOLOv3's own cfg needs
    62,001,757 values (yolov3.weights is 248,007,048 bytes: a 20-byte header and 4 bytes a value)."""
    blocks = ["[net]\nchannels=3", conv(32, 3)]
    for filters, repeats in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):  # Darknet-53
        blocks.append(conv(filters, 3))
        blocks += [conv(filters // 2, 1), conv(filters, 3), "[shortcut]\nfrom=-3"] * repeats
    for width, route in ((512, 61), (256, 36), (128, None)):  # the three detection heads
        blocks += [conv(width, 1), conv(2 * width, 3)] * 3 + [conv(255, 1, batch_norm=False), "[yolo]\nclasses=80"]
        if route is not None:
            blocks += ["[route]\nlayers=-4", conv(width // 2, 1), "[upsample]\nstride=2", f"[route]\nlayers=-1,{route}"]
    cfg = tmp_path / "yolov3.cfg"
    cfg.write_text("\n\n".join(blocks) + "\n")
    sections = read_cfg(cfg)
    assert weight_count(sections) == 62_001_757
    names = tmp_path / "coco.names"
    names.write_text("\n".join(f"class{i}" for i in range(80)))
    assert len(read_names(names, sections)) == 80
    weights = tmp_path / "yolov3.weights"
    weights.write_bytes(struct.pack("<3iq", 0, 2, 0, 0) + b"\0" * 40)
    with pytest.raises(DarknetFileError, match="need 62,001,757 weights"):
        check_pair(cfg, weights)


def conv(filters: int, size: int, batch_norm: bool = True) -> str:
    return f"[convolutional]\nbatch_normalize={int(batch_norm)}\nfilters={filters}\nsize={size}\nstride=1\npad=1"


@pytest.mark.slow
def test_the_detect_stage_runs_under_dvc_and_logs_to_mlflow(tmp_path: Path) -> None:
    def tiny_job(params: dict) -> None:
        params["detect"] = {"run": ["tiny"], "jobs": {"tiny": {
            "cfg": "detect/tiny/tiny.cfg", "weights": "detect/tiny/tiny.weights", "names": "detect/tiny/tiny.names",
            "images": ["detect/tiny/images"]}}}  # fmt: skip

    env = copy_project(tmp_path, tiny_job)
    write_model(tmp_path / "detect" / "tiny")
    (tmp_path / "detect" / "tiny" / "images").mkdir()
    cv2.imwrite(str(tmp_path / "detect" / "tiny" / "images" / "street.png"), scene())
    run(["dvc", "repro", "detect@tiny"], tmp_path, env)
    report = json.loads((tmp_path / "detections" / "tiny" / "detections.json").read_text())
    assert len(report["images"][0]["detections"]) == 4
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cnnlab"], filter_string="tags.stage = 'detect'")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    one = runs.iloc[0]
    assert one["tags.detect_job"] == "tiny" and one["params.score_threshold"] == "0.5"
    assert one["metrics.detections"] == 4 and one["metrics.detections_redthing"] == 3
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(one["run_id"], "detections")}
    assert artifacts == {"detections/detections.json", "detections/street.jpg"}
    again = run(["dvc", "repro", "detect@tiny"], tmp_path, env)
    assert "didn't change, skipping" in again.stdout or "up to date" in again.stdout
    assert yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["detect@tiny"]["outs"]


def test_check_lists_the_detect_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cnnlab(["--params", str(ROOT / "params.yaml"), "check"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("yolov3"))
    assert "yolov3.cfg at 448, score > 0.5, NMS 0.4" in line and "not in detect.run" in line


def test_an_unknown_job_in_detect_run_is_refused() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["detect"]["run"] = ["yolov4"]
    with pytest.raises(ParamsError, match=r"detect\.run: no job yolov4; allowed: yolov3"):
        parse_params(raw)
