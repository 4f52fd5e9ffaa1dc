"""IDX parsing, image folders and zips (with broken images), CIFAR's python batches."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import loaders
from cnnlab.data.loaders import (
    DataFormatError,
    load_cifar_python,
    load_idx,
    load_idx_folder,
    load_image_folder,
    load_mnist_npz,
)
from helpers.images import image_tree


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_round_trip(tmp_path: Path, compressed: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gzip.compress(idx_bytes(array)) if compressed else idx_bytes(array))
    loaded = load_idx(path)
    assert loaded.shape == (2, 3, 4)
    np.testing.assert_array_equal(loaded, array)


def test_idx_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(DataFormatError, match="bad magic"):
        load_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(idx_bytes(np.zeros((4, 2), np.uint8))[:-3])
    with pytest.raises(DataFormatError, match="header promises"):
        load_idx(short)


def test_real_mnist_idx_matches_the_official_order(mirror: Path) -> None:
    splits = load_idx_folder(mirror / "mnist")
    assert splits["train"][0].shape == (60000, 28, 28, 1)
    assert splits["test"][0].shape == (10000, 28, 28, 1)
    assert splits["train"][1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert splits["test"][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def check_tree_result(result, resized: bool) -> None:
    assert result.classes == ["cat", "dog"]
    x_train, y_train = result.splits["train"]
    assert x_train.shape == (4, 8, 8, 3) and x_train.dtype == np.uint8
    assert y_train.tolist() == [0, 0, 1, 1]  # grey.png is a dog, converted to colour
    assert x_train[0, 0, 0].tolist() == [255, 0, 0]
    assert x_train[3, 0, 0].tolist() == [128, 128, 128]
    reasons = {Path(s["file"]).name: s["reason"] for s in result.skipped}
    assert "unreadable" in reasons["broken.jpg"]
    assert "grey.png" not in reasons and "cmyk.jpg" not in reasons
    assert [(Path(c["file"]).name, c["conversion"]) for c in result.converted] == [("grey.png", "greyscale to colour")]
    if resized:
        assert len(result.splits["test"][1]) == 4 and "big.png" not in reasons
    else:
        assert len(result.splits["test"][1]) == 3 and "16x16" in reasons["big.png"]


def test_image_folder_skips_corrupt_images_and_converts_greyscale(tmp_path: Path) -> None:
    for name, data in image_tree().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    check_tree_result(load_image_folder(tmp_path, (8, 8), 3), resized=False)
    check_tree_result(load_image_folder(tmp_path, (8, 8), 3, resize=True), resized=True)


def test_image_zip_with_a_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in image_tree().items():
            zf.writestr(f"mydata/{name}", data)
    check_tree_result(load_image_folder(archive, (8, 8), 3), resized=False)


def test_image_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataFormatError, match="no readable images"):
        load_image_folder(tmp_path, (8, 8), 3)


def test_cifar_python_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = {}
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            images = rng.integers(0, 256, (3, 3 * 32 * 32), dtype=np.uint8)
            labels = rng.integers(0, 10, 3).tolist()
            batches[name] = (images, labels)
            payload = pickle.dumps({b"data": images, b"labels": labels})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    splits = load_cifar_python(archive)
    assert splits["train"][0].shape == (15, 32, 32, 3)
    assert splits["test"][0].shape == (3, 32, 32, 3)
    # channel-first rows become height x width x channel images
    first = batches["data_batch_1"][0][0]
    assert splits["train"][0][0, 0, 1].tolist() == [first[1], first[1024 + 1], first[2048 + 1]]
    assert splits["test"][1].tolist() == batches["test_batch"][1]


def test_keras_mnist_npz(tmp_path: Path) -> None:
    """The online MNIST layout: Keras' mnist.npz with x_train, y_train, x_test, y_test."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_train": np.arange(5),
        "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "y_test": np.arange(3),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    splits = load_mnist_npz(tmp_path / "mnist.npz")
    assert splits["train"][0].shape == (5, 28, 28, 1) and splits["test"][1].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(splits["train"][0][..., 0], arrays["x_train"])


def test_decoding_on_several_processes_gives_what_one_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in image_tree().items():
            zf.writestr(name, data)
    monkeypatch.setattr(loaders, "DECODE_CHUNK", 2)  # several chunks even for a handful of images
    alone = load_image_folder(archive, (8, 8), 3, resize=True, workers=1)
    shared = load_image_folder(archive, (8, 8), 3, resize=True, workers=2)
    check_tree_result(shared, resized=True)
    assert shared.classes == alone.classes and shared.skipped == alone.skipped
    for split, (x, y) in alone.splits.items():
        np.testing.assert_array_equal(shared.splits[split][0], x)
        np.testing.assert_array_equal(shared.splits[split][1], y)


@pytest.mark.parametrize("kind", ["sparse", "noisy"])
def test_saved_splits_load_back_exactly_compressed_or_not(tmp_path: Path, kind: str) -> None:
    from cnnlab.data.prepare import compresses, load_split, save_split

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
    if kind == "sparse":
        x[:, 4:, :, :] = 0  # mostly background, as MNIST: worth compressing
    assert compresses(x) == (kind == "sparse")
    y = rng.integers(0, 10, 50)
    digest = save_split(tmp_path / "train.npz", (x, y))
    loaded = load_split(tmp_path / "train.npz")
    np.testing.assert_array_equal(loaded[0], x)
    np.testing.assert_array_equal(loaded[1], y)
    assert save_split(tmp_path / "again.npz", (x, y)) == digest  # the same arrays, the same bytes
