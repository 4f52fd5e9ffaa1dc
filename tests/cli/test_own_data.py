"""`cnnlab add-data`, `cnnlab add-experiment` and what `cnnlab check` says about your own image folders."""

from __future__ import annotations

import itertools
import shutil
import zipfile
from pathlib import Path

import pytest

from cnnlab.cli import main as cli
from cnnlab.params import load_params
from helpers.images import png
from helpers.project import ROOT
from helpers.shapes import shapes_zip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with the project's params.yaml and claims.yaml."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("params.yaml", "claims.yaml"):
        shutil.copy(ROOT / name, folder / name)
    return folder


def run(project: Path, *args: str) -> int:
    return cli(["--params", str(project / "params.yaml"), *args])


def test_add_data_surveys_a_zip_and_declares_it(project: Path, capsys: pytest.CaptureFixture) -> None:
    shapes_zip(project / "shapes.zip")
    assert run(project, "add-data", "shapes", str(project / "shapes.zip")) == 0
    out = capsys.readouterr().out
    assert "shapes: " in out and "(<class>/<image>)" in out and "2 classes: disc, square" in out
    assert "train     56 images (disc 28, square 28)" in out and "test      16 images (disc 8, square 8)" in out
    assert "4 image(s) will be converted greyscale to colour" in out
    assert "shapes/square/corrupt.png: unreadable" in out and "not images: shapes/README.txt" in out
    assert "images resized to 32x32, 3 channel(s) (chosen from the images" in out
    params = load_params(project / "params.yaml")
    custom = params.data.custom["shapes"]
    assert params.datasets[-1] == "shapes" and str(custom.path) == "shapes.zip"  # inside the project: relative
    assert (custom.image_size, custom.channels, custom.split.seed) == ((32, 32), 3, params.seed)


def test_add_data_takes_a_size_and_channels_and_a_folder_with_split_folders(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "pets"
    for name in ("train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/dog/4.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png((200, 0, 0), size=(40, 20)))
    assert run(project, "add-data", "pets", str(folder), "--image-size", "16", "16", "--channels", "1") == 0
    assert "4 image(s) will be converted colour to greyscale" in capsys.readouterr().out
    raw = (project / "params.yaml").read_text()
    lines = raw[raw.index("\n    pets:") + 1 :].splitlines()[1:]
    entry = "\n".join(itertools.takewhile(lambda line: line.startswith("      "), lines))  # the pets entry
    assert f"path: {folder}" in entry and "split" not in entry  # outside the project: absolute; split folders kept
    custom = load_params(project / "params.yaml").data.custom["pets"]
    assert (custom.image_size, custom.channels) == ((16, 16), 1)


@pytest.mark.parametrize(
    ("name", "entries", "expected"),
    [
        ("mnist", {}, "'mnist' is taken already"),
        ("evil", {"../outside/disc/x.png": png(0, "L")}, "with an absolute path or '..' (../outside/disc/x.png)"),
        ("mixed", {"shapes/train/disc/x.png": png(0, "L")}, "cannot be used as it is"),
    ],
)
def test_add_data_refuses_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture, name: str, entries: dict, expected: str
) -> None:
    before = (project / "params.yaml").read_text()
    assert run(project, "add-data", name, str(shapes_zip(project / "data.zip", per_class=5, extra=entries))) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    if name == "mixed":
        assert "mixes the two layouts" in captured.out and "every one as <class>/<image>" in captured.out
    assert (project / "params.yaml").read_text() == before


def test_add_experiment_copies_a_recipe_or_starts_one_for_a_zoo_network(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run(project, "add-data", "shapes", str(shapes_zip(project / "shapes.zip"))) == 0
    assert run(project, "add-experiment", "MINE", "--data", "shapes", "--model", "M1") == 0
    assert "run it: dvc repro evaluate@MINE" in capsys.readouterr().out
    assert run(project, "add-experiment", "NEW", "--data", "shapes", "--model", "CNN", "--epochs", "4") == 0
    params = load_params(project / "params.yaml")
    mine, m1 = params.experiments["MINE"], params.experiments["M1"]
    assert (mine.dataset, mine.model, mine.optimizer, mine.batch_size) == ("shapes", "M1", m1.optimizer, 64)
    assert m1.loss == "categorical_crossentropy" and mine.loss is None  # chosen again from the class count
    assert mine.budgets == m1.budgets and "M1's recipe on shapes" in mine.description
    assert params.recipe("NEW").epochs == 4 and params.experiments["NEW"].recipe("full").epochs == 4
    assert list(params.experiments)[-2:] == ["MINE", "NEW"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["F1", "--data", "shapes", "--model", "F1"], "'F1' is taken already"),
        (["X", "--data", "nothing", "--model", "F1"], "add yours with `cnnlab add-data NAME PATH`"),
        (["X", "--data", "shapes", "--model", "resnet"], "neither an experiment id"),
        (["9X", "--data", "shapes", "--model", "F1"], "'9X' is not a valid id"),
    ],
)
def test_add_experiment_refuses_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    assert run(project, "add-data", "shapes", str(shapes_zip(project / "shapes.zip"))) == 0
    before = (project / "params.yaml").read_text()
    assert run(project, "add-experiment", *args) == 2
    assert expected in capsys.readouterr().err
    assert (project / "params.yaml").read_text() == before


def test_check_shows_your_folders_and_experiments_and_fails_on_a_broken_folder(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run(project, "add-data", "shapes", str(shapes_zip(project / "shapes.zip"))) == 0
    assert run(project, "add-experiment", "MINE", "--data", "shapes", "--model", "F1") == 0
    capsys.readouterr()
    assert run(project, "check") == 0
    out = capsys.readouterr().out
    assert "your experiments (no claim in claims.yaml; the report lists them apart): MINE" in out
    assert "val        8 images (disc 4, square 4)" in out and "1 file(s) will be skipped:" in out
    with zipfile.ZipFile(project / "shapes.zip", "a") as archive:  # the folder changes after add-data
        archive.writestr("shapes/loose.png", png(0, "L"))
    assert run(project, "check") == 2
    captured = capsys.readouterr()
    assert "shapes/loose.png is in no class folder; put each image in a folder named after its class" in captured.out
    assert "1 problem(s) in your data sets" in captured.err  # one line: the other images are in class folders
