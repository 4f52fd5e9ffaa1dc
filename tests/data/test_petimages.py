"""Cats vs dogs from a PetImages archive: the deterministic cut, its record, and the download from a loopback
HTTP server (a small archive the test builds; nothing is downloaded from the internet)."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.catalog.datasets import DATASETS, PETIMAGES_ZIP, DatasetSpec
from cnnlab.data import petimages
from cnnlab.data.download import DOWNLOADS, ChecksumError, Source, candidate_sources, fetch
from cnnlab.data.prepare import read_raw
from cnnlab.params import parse_params
from cnnlab.pipeline.stage import Paths
from cnnlab.util.files import sha256_file
from helpers.project import ROOT, load_stage

CATS = DATASETS["cats_vs_dogs"]
SMALL_SPLITS = {"train": 2, "validation": 1, "test": 1}  # 4 readable images per class


def colour(number: int) -> tuple[int, int, int]:
    """A colour that tells which archive file an image of the cut came from."""
    return (number * 9 % 256, 255 - number * 5 % 256, 40)


def jpeg(number: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    fill = colour(number) if mode == "RGB" else 90
    Image.new(mode, size, fill).save(buffer, format="JPEG")
    return buffer.getvalue()


def png16() -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (20, 20), 40000).save(buffer, format="PNG")
    return buffer.getvalue()


# Numbers out of lexical order (2 before 10): the cut of 4 per class takes cats 1, 2, 3, 10 and dogs 0, 7, 8, 30.
CAT_FILES = {
    1: jpeg(1),
    2: jpeg(2, (25, 50)),
    3: jpeg(3, mode="L"),  # greyscale: converted to RGB and counted
    4: b"",  # empty
    5: b"\xff\xd8\xff\xe0 not a jpeg at all",  # corrupt
    6: png16(),  # 16-bit greyscale PNG under a .jpg name: not convertible to RGB
    10: jpeg(10),
    11: jpeg(11),  # beyond the cut
    20: jpeg(20),
}
DOG_FILES = {0: jpeg(0), 7: jpeg(7), 8: jpeg(8), 9: jpeg(9)[:-200], 30: jpeg(30), 100: jpeg(100)}  # 9: truncated
TAKEN = {"cats": [1, 2, 3, 10], "dogs": [0, 7, 8, 30]}
SKIPPED = {"PetImages/Cat/4.jpg", "PetImages/Cat/5.jpg", "PetImages/Cat/6.jpg", "PetImages/Dog/9.jpg"}


def petimages_zip(path: Path) -> Path:
    """A small archive laid out as Microsoft's: PetImages/{Cat,Dog}/<N>.jpg, in the zip's own (unsorted) order."""
    with zipfile.ZipFile(path, "w") as archive:
        for folder, files in (("Cat", CAT_FILES), ("Dog", DOG_FILES)):
            for number in sorted(files, key=str):  # lexical order in the zip: the cut must not rely on it
                archive.writestr(f"PetImages/{folder}/{number}.jpg", files[number])
            archive.writestr(f"PetImages/{folder}/Thumbs.db", b"not an image of the data set")
    return path


def with_archive(spec: DatasetSpec, archive: Path) -> DatasetSpec:
    """`spec` with the test archive's digest and size in place of the real archive's."""
    online = dataclasses.replace(
        spec.layouts[1],
        files={PETIMAGES_ZIP: frozenset({sha256_file(archive)})},
        sizes={PETIMAGES_ZIP: archive.stat().st_size},
    )
    return dataclasses.replace(spec, layouts=(spec.layouts[0], online))


@pytest.fixture
def small_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(petimages, "SPLITS", SMALL_SPLITS)


def cut_contents(cut_zip: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """<split>/<class> -> (number, pixels) of each image of the cut, in the zip's order."""
    found: dict[str, list[tuple[int, np.ndarray]]] = {}
    with zipfile.ZipFile(cut_zip) as archive:
        for name in archive.namelist():
            _, split, cls, file = name.split("/")
            with Image.open(io.BytesIO(archive.read(name))) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                found.setdefault(f"{split}/{cls}", []).append((int(file.split(".")[1]), np.asarray(img)))
    return found


def test_the_cut_takes_the_first_readable_images_in_numeric_order(tmp_path: Path) -> None:
    archive = petimages_zip(tmp_path / PETIMAGES_ZIP)
    cut = petimages.make_cut(archive, tmp_path / "cut.zip", SMALL_SPLITS)
    contents = cut_contents(tmp_path / "cut.zip")
    for cls, numbers in TAKEN.items():
        assert [n for n, _ in contents[f"train/{cls}"]] == numbers[:2]
        assert [n for n, _ in contents[f"validation/{cls}"]] == numbers[2:3]
        assert [n for n, _ in contents[f"test/{cls}"]] == numbers[3:]
    assert {entry["file"] for entry in cut.skipped} == SKIPPED  # read before the cut was full; 11, 20, 100 unread
    reasons = {entry["file"]: entry["reason"] for entry in cut.skipped}
    assert reasons["PetImages/Cat/4.jpg"] == "empty file"
    assert reasons["PetImages/Cat/5.jpg"].startswith("unreadable")
    assert reasons["PetImages/Cat/6.jpg"] == "has mode I;16, not convertible to RGB"
    assert "truncated" in reasons["PetImages/Dog/9.jpg"].lower()
    assert cut.greyscale == ["PetImages/Cat/3.jpg"]
    assert cut.summary() == {
        "images_per_class": SMALL_SPLITS,
        "image_size": [200, 200],
        "skipped": 4,
        "greyscale_converted": 1,
    }


def test_the_cut_is_resized_as_the_mirrors_copies_and_keeps_each_images_colours(tmp_path: Path) -> None:
    archive = petimages_zip(tmp_path / PETIMAGES_ZIP)
    petimages.make_cut(archive, tmp_path / "cut.zip", SMALL_SPLITS)
    with zipfile.ZipFile(tmp_path / "cut.zip") as cut:
        assert cut.namelist()[0] == "cats_vs_dogs/train/cats/cat.00001.jpg"  # the mirror's folders and classes
    for place, images in cut_contents(tmp_path / "cut.zip").items():
        for number, pixels in images:
            assert pixels.shape == (200, 200, 3), place
            expected = (90, 90, 90) if number == 3 and place.endswith("cats") else colour(number)
            assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - expected).max() < 4, (place, number)


def test_the_cut_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    archive = petimages_zip(tmp_path / PETIMAGES_ZIP)
    petimages.make_cut(archive, tmp_path / "a.zip", SMALL_SPLITS)
    petimages.make_cut(archive, tmp_path / "b.zip", SMALL_SPLITS)
    assert sha256_file(tmp_path / "a.zip") == sha256_file(tmp_path / "b.zip")


def test_an_archive_short_of_readable_images_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = petimages_zip(tmp_path / PETIMAGES_ZIP)
    (tmp_path / "out").mkdir()
    with pytest.raises(petimages.PetImagesError, match=r"PetImages/Dog/ holds 5 readable images, the cut needs 6"):
        petimages.make_cut(archive, tmp_path / "out" / "cut.zip", {"train": 4, "validation": 1, "test": 1})
    assert list((tmp_path / "out").iterdir()) == []


def test_online_cats_vs_dogs_is_cut_recorded_and_read_by_preprocess(http_folder, small_cut, tmp_path: Path) -> None:
    folder, url = http_folder
    spec = with_archive(CATS, petimages_zip(folder / PETIMAGES_ZIP))
    raw = tmp_path / "data" / "raw"
    fetched = fetch(spec, candidate_sources(spec, online_base=url), raw / "cats_vs_dogs")
    assert (fetched.source, fetched.location, fetched.format) == ("online", url, "petimages-cut")
    assert sorted(p.name for p in (raw / "cats_vs_dogs").iterdir()) == ["cats_vs_dogs_petimages.zip"]
    assert fetched.files == {
        "cats_vs_dogs_petimages.zip": sha256_file(raw / "cats_vs_dogs" / "cats_vs_dogs_petimages.zip")
    }
    assert {entry["file"] for entry in fetched.refused} == SKIPPED
    record = fetched.to_dict()
    assert record["cut"] == {
        "archive": PETIMAGES_ZIP,
        "sha256": sha256_file(folder / PETIMAGES_ZIP),
        "images_per_class": SMALL_SPLITS,
        "image_size": [200, 200],
        "skipped": 4,
        "greyscale_converted": 1,
    }
    assert (raw / DOWNLOADS / PETIMAGES_ZIP).is_file()  # kept outside the DVC-tracked folder: no second download
    (raw / "cats_vs_dogs.source.json").write_text(json.dumps(record))
    prepared = read_raw("cats_vs_dogs", raw / "cats_vs_dogs", fetched.format)
    assert prepared.classes == ["cats", "dogs"]
    assert {split: (x.shape, y.tolist()) for split, (x, y) in prepared.splits.items()} == {
        "train": ((4, 150, 150, 3), [0, 0, 1, 1]),
        "val": ((2, 150, 150, 3), [0, 1]),
        "test": ((2, 150, 150, 3), [0, 1]),
    }


def test_preprocess_refuses_a_cut_changed_after_the_download(http_folder, small_cut, tmp_path: Path) -> None:
    folder, url = http_folder
    spec = with_archive(CATS, petimages_zip(folder / PETIMAGES_ZIP))
    raw = tmp_path / "raw"
    fetched = fetch(spec, [Source("online", url)], raw / "cats_vs_dogs")
    (raw / "cats_vs_dogs.source.json").write_text(json.dumps(fetched.to_dict()))
    with open(raw / "cats_vs_dogs" / "cats_vs_dogs_petimages.zip", "ab") as cut:
        cut.write(b"\0")
    with pytest.raises(
        ChecksumError, match=r"cats_vs_dogs_petimages\.zip \(recorded in .*cats_vs_dogs\.source\.json\)"
    ):
        read_raw("cats_vs_dogs", raw / "cats_vs_dogs", fetched.format)


@pytest.mark.parametrize("announced", ["published size", "other size"])
def test_a_tampered_archive_is_refused_and_nothing_is_kept(http_folder, tmp_path: Path, announced: str) -> None:
    folder, url = http_folder
    good = petimages_zip(tmp_path / "good.zip")
    spec = with_archive(CATS, good)
    tampered = bytearray(good.read_bytes())
    tampered[100] ^= 0xFF  # same size, other bytes
    (folder / PETIMAGES_ZIP).write_bytes(tampered if announced == "published size" else bytes(tampered) + b"extra")
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError) as error:
        fetch(spec, [Source("online", url)], raw / "cats_vs_dogs")
    assert f"{url}{PETIMAGES_ZIP}" in str(error.value)
    if announced == "other size":
        assert f"is {len(tampered) + 5} bytes, not the {len(tampered)}" in str(error.value)
    assert list((raw / "cats_vs_dogs").iterdir()) == [] and list((raw / DOWNLOADS).iterdir()) == []


def test_an_archive_in_a_local_folder_is_cut_without_a_copy(small_cut, tmp_path: Path) -> None:
    own = tmp_path / "downloaded"
    own.mkdir()
    spec = with_archive(CATS, petimages_zip(own / PETIMAGES_ZIP))
    raw = tmp_path / "raw" / "cats_vs_dogs"
    raw.mkdir(parents=True)
    (raw / "cats_vs_dogs_small.zip").write_bytes(b"a stale copy of the other layout")
    fetched = fetch(spec, candidate_sources(spec, path=own, online=False), raw)
    assert (fetched.source, fetched.location, fetched.format) == ("path", str(own), "petimages-cut")
    assert sorted(p.name for p in raw.iterdir()) == ["cats_vs_dogs_petimages.zip"]
    assert not (tmp_path / "raw" / DOWNLOADS).exists()


def test_the_mirror_still_comes_first_and_its_record_is_unchanged(mirror: Path, tmp_path: Path) -> None:
    sources = candidate_sources(CATS, mirror=mirror)
    assert [s.kind for s in sources] == ["mirror", "online"]
    assert sources[1].location == CATS.online_base and CATS.online is not None
    assert CATS.online_base + PETIMAGES_ZIP == (
        "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
    )
    fetched = fetch(CATS, sources, tmp_path / "raw" / "cats_vs_dogs")
    assert fetched.to_dict() == {
        "dataset": "cats_vs_dogs",
        "source": "mirror",
        "location": str(mirror / "cats_vs_dogs"),
        "format": "image-zip",
        "files": {"cats_vs_dogs_small.zip": "f0d9930c66ad1d3226b3a5772bc165303dd11fb60c3703d98f768556b71176ff"},
    }
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["cats_vs_dogs"]


def test_the_archive_is_pinned_to_its_published_size_and_sha256() -> None:
    (layout,) = [lay for lay in CATS.layouts if lay.format == petimages.ARCHIVE_FORMAT]
    assert layout is CATS.online and layout.cut == "cats_vs_dogs_petimages.zip"
    assert layout.files == {PETIMAGES_ZIP: {"b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9"}}
    assert layout.sizes == {PETIMAGES_ZIP: 824_887_076}


def test_download_and_preprocess_stages_record_the_cut(http_folder, small_cut, tmp_path: Path, monkeypatch) -> None:
    folder, url = http_folder
    monkeypatch.setitem(DATASETS, "cats_vs_dogs", with_archive(CATS, petimages_zip(folder / PETIMAGES_ZIP)))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["online_base"] = {"cats_vs_dogs": url}
    params, paths = parse_params(raw), Paths(tmp_path)
    load_stage("download").main(params, paths, "cats_vs_dogs")
    record = json.loads(paths.source_record("cats_vs_dogs").read_text())
    assert (record["source"], record["location"], record["format"]) == ("online", url, "petimages-cut")
    assert record["cut"]["skipped"] == 4 and {entry["file"] for entry in record["refused"]} == SKIPPED
    run = mlflow.search_runs(experiment_names=["cnnlab"]).iloc[0]
    assert run["tags.source"] == f"online: {url}" and run["tags.format"] == "petimages-cut"
    load_stage("preprocess").main(params, paths, "cats_vs_dogs")
    meta = json.loads((paths.prepared("cats_vs_dogs") / "meta.json").read_text())
    assert meta["counts"] == {"train": 4, "val": 2, "test": 2} and meta["image_shape"] == [150, 150, 3]
    assert meta["source"]["cut"]["archive"] == PETIMAGES_ZIP
