"""A user's folder in either layout: which one it has, the seeded and stratified split of `<class>/<image>`,
greyscale and colour converted and counted, and the header-only survey `cnnlab check` prints."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.errors import DataFormatError
from cnnlab.data.layouts import CLASS_LAYOUT, SPLIT_LAYOUT, classify, draw_splits
from cnnlab.data.loaders import load_image_folder
from cnnlab.data.survey import survey
from cnnlab.params import CustomDataset, CustomSplit, ImageLimits
from helpers.images import png

RED, BLUE = png((255, 0, 0)), png((0, 0, 255))


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def class_tree(per_class: int = 10) -> dict[str, bytes]:
    """`<class>/<image>`: reds and blues, two of the blues greyscale, one broken file and a note."""
    files = {f"red/{i:02d}.png": RED for i in range(per_class)}
    files |= {f"blue/{i:02d}.png": BLUE if i >= 2 else png(90, mode="L") for i in range(per_class)}
    return files | {"red/broken.png": b"not a png", "notes.txt": b"my images"}


def test_the_layout_is_read_from_the_names_inside_a_top_folder_or_not() -> None:
    split = classify(["pets/train/cat/a.png", "pets/test/dog/b.jpg", "pets/val/dog/c.png"], "pets.zip")
    assert split.layout == SPLIT_LAYOUT and not split.errors
    assert [(s, c) for _, s, c in split.images] == [("test", "dog"), ("train", "cat"), ("val", "dog")]
    for names in (["cat/a.png", "dog/b.png"], ["pets/cat/a.png", "pets/dog/b.png"], ["a/b/cat/1.png", "a/b/dog/2.png"]):
        found = classify([*names, "README.md", "__MACOSX/pets/cat/._a.png"], "x")
        assert found.layout == CLASS_LAYOUT and not found.errors, names
        assert [(s, c) for _, s, c in found.images] == [(None, "cat"), (None, "dog")]
        assert len(found.ignored) == 2  # the note and the Mac's metadata are not images


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["train/cat/a.png", "dog/b.png"], "mixes the two layouts: train/cat/a.png is in a split folder, dog/b.png"),
        (["cat/a.png", "b.png"], "b.png is in no class folder"),
        (["cat/a.png", "dog/x/y/b.png"], "dog/x/y/b.png is 3 folders deep"),
        (["pets/train/a.png", "pets/dog/b.png"], "pets/train is named like a split but holds images"),
        (["notes.txt"], "no readable images found"),
    ],
)
def test_a_folder_that_fits_neither_layout_is_an_error_that_names_the_fix(names: list[str], expected: str) -> None:
    found = classify(names, "mine")
    assert any(expected in error for error in found.errors), found.errors
    assert "<class>/<image>" in " ".join(found.errors) or "no readable" in expected


def test_entries_with_absolute_or_parent_paths_are_refused_unread() -> None:
    found = classify(["cat/a.png", "dog/b.png", "../evil/cat/c.png", "/etc/cat/d.png", "C:/x/cat/e.png"], "z")
    assert [entry["file"] for entry in found.refused] == ["../evil/cat/c.png", "/etc/cat/d.png", "C:/x/cat/e.png"]
    assert [name for name, _, _ in found.images] == ["cat/a.png", "dog/b.png"]


def test_the_split_is_stratified_seeded_and_of_the_fractions_asked() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    split = CustomSplit(test=0.2, validation=0.1, seed=7)
    names = draw_splits(labels, ["a", "b", "c"], split, "mine")
    for part, share in (("test", 0.2), ("val", 0.1), ("train", 0.7)):
        counts = np.bincount(labels[names == part], minlength=3)
        np.testing.assert_allclose(counts, share * np.array([50, 30, 20]), atol=1)  # every class keeps its share
    assert (draw_splits(labels, ["a", "b", "c"], split, "mine") == names).all()  # same seed, same split
    other = draw_splits(labels, ["a", "b", "c"], split.model_copy(update={"seed": 8}), "mine")
    assert (other != names).any()
    no_val = draw_splits(labels, ["a", "b", "c"], CustomSplit(test=0.25, validation=0), "mine")
    assert set(no_val) == {"train", "test"}  # each experiment then holds out its own validation


def test_too_few_images_for_the_split_names_the_class_and_the_fix() -> None:
    with pytest.raises(DataFormatError, match=r"class 'b' has 3 image\(s\).*at least 5.*data\.custom"):
        draw_splits(np.repeat([0, 1], [20, 3]), ["a", "b"], CustomSplit(test=0.2, validation=0), "mine")
    with pytest.raises(DataFormatError, match="one class only"):
        draw_splits(np.zeros(20, int), ["a"], CustomSplit(), "mine")
    with pytest.raises(ValueError, match="must be below 1"):
        CustomSplit(test=0.5, validation=0.5)


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_class_folder_is_split_and_its_greyscale_images_converted_and_counted(tmp_path: Path, as_zip: bool) -> None:
    folder = write(tmp_path / "mine", class_tree())
    source = folder
    if as_zip:
        source = tmp_path / "mine.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for name, data in class_tree().items():
                archive.writestr(f"mine/{name}", data)
    split = CustomSplit(test=0.2, validation=0.2, seed=1)
    result = load_image_folder(source, (8, 8), 3, resize=True, workers=1, split=split)
    assert result.layout == CLASS_LAYOUT and result.classes == ["blue", "red"]
    assert {s: np.bincount(y).tolist() for s, (_, y) in result.splits.items()} == {
        "train": [6, 6], "val": [2, 2], "test": [2, 2]
    }  # fmt: skip
    assert [Path(c["file"]).name for c in result.converted] == ["00.png", "01.png"]
    assert {c["conversion"] for c in result.converted} == {"greyscale to colour"}
    assert [Path(s["file"]).name for s in result.skipped] == ["broken.png"]
    x = np.concatenate([x for x, _ in result.splits.values()])
    assert x.shape[1:] == (8, 8, 3) and [90, 90, 90] in x.reshape(-1, 3).tolist()
    again = load_image_folder(source, (8, 8), 3, resize=True, workers=1, split=split)
    assert all(
        (again.splits[s][1] == y).all() and (again.splits[s][0] == x).all() for s, (x, y) in result.splits.items()
    )


def test_a_greyscale_set_converts_colour_images_and_counts_them(tmp_path: Path) -> None:
    source = write(tmp_path / "mine", {**class_tree(), "blue/rgba.png": png((0, 0, 255, 255), mode="RGBA")})
    result = load_image_folder(source, (8, 8), 1, resize=True, workers=1, split=CustomSplit(test=0.2, validation=0))
    assert next(iter(result.splits.values()))[0].shape[1:] == (8, 8, 1)
    assert len(result.converted) == 19 and {c["conversion"] for c in result.converted} == {"colour to greyscale"}


def test_a_class_folder_without_split_fractions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"needs split fractions \(data\.custom\.<name>\.split\)"):
        load_image_folder(write(tmp_path / "mine", class_tree()), (8, 8), 3, workers=1)
    with pytest.raises(DataFormatError, match="mixes the two layouts"):
        load_image_folder(write(tmp_path / "mixed", {"train/a/1.png": RED, "b/2.png": BLUE}), (8, 8), workers=1)


def test_the_survey_reads_headers_only_and_counts_what_preprocess_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "mine", class_tree())
    custom = CustomDataset(path=source, image_size=(8, 8), channels=3, split=CustomSplit(test=0.2, validation=0.2))
    loaded = load_image_folder(source, (8, 8), 3, resize=True, workers=1, split=custom.split)

    def no_decoding(*args: object) -> None:
        raise AssertionError("the survey decoded an image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    found = survey("mine", custom, ImageLimits())
    assert not found.errors and found.layout == CLASS_LAYOUT and found.classes == loaded.classes
    assert found.counts == {s: np.bincount(loaded.splits[s][1]).tolist() for s in ("train", "val", "test")}
    assert found.converted() == {"greyscale to colour": 2} and found.converted(1) == {"colour to greyscale": 18}
    assert [Path(s["file"]).name for s in found.skipped] == ["broken.png"] and found.ignored == ["notes.txt"]
    assert found.sizes == {(8, 8): 20}


def test_the_survey_names_what_to_fix(tmp_path: Path) -> None:
    def errors(files: dict[str, bytes], split: CustomSplit | None = None) -> str:
        custom = CustomDataset(path=write(tmp_path / str(len(list(tmp_path.iterdir()))), files), image_size=(8, 8),
                               split=split or CustomSplit())  # fmt: skip
        return " ".join(survey("mine", custom, ImageLimits()).errors)

    assert "no test split" in errors({"train/a/1.png": RED, "train/b/1.png": BLUE})
    assert "class 'b' has no training image" in errors(
        {"train/a/1.png": RED, "test/b/1.png": BLUE, "test/a/2.png": RED}
    )
    assert "class 'b' has 2 image(s)" in errors(
        {**{f"a/{i}.png": RED for i in range(10)}, "b/1.png": RED, "b/2.png": RED}
    )
    missing = survey("gone", CustomDataset(path=tmp_path / "nowhere", image_size=(8, 8)), ImageLimits())
    assert "data.custom.gone.path" in missing.errors[0] and "does not exist" in missing.errors[0]


def test_a_listing_of_a_large_data_set_takes_linear_time() -> None:
    """CIFAR-10 lists 60,000 files: a check per name against the whole list (quadratic) took two minutes."""
    folders = [f"cifar10/{split}/{cls}" for split in ("train", "test") for cls in "abcde"]
    names = [f"{folder}/{i:05d}.jpg" for folder in folders for i in range(8_000)]
    started = time.perf_counter()
    found = classify([*names, "cifar10/README.txt"], "x")
    assert time.perf_counter() - started < 10  # about 1 s; the quadratic version, hours
    assert len(found.images) == 80_000 and found.ignored == ["cifar10/README.txt"]
