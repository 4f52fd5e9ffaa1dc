"""Image files made to hurt: decompression bombs, huge images, zip bombs and symbolic links are refused and
reported, before their pixels or bytes are read."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from cnnlab.data import loaders
from cnnlab.data.download import ChecksumError
from cnnlab.data.prepare import read_raw
from cnnlab.params import ImageLimits, parse_params
from cnnlab.pipeline.stage import Paths
from helpers.images import black_png, bomb_png, image_tree, own_data_params, own_tree
from helpers.project import ROOT, load_stage


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def skipped_reasons(result: loaders.ImageFolderResult) -> dict[str, str]:
    return {Path(entry["file"]).name: entry["reason"] for entry in result.skipped}


def test_a_65_byte_decompression_bomb_is_skipped_and_listed(tmp_path: Path) -> None:
    assert len(bomb_png()) == 65
    source = write(tmp_path / "pets", {**image_tree(), "train/cat/bomb.png": bomb_png()})
    result = loaders.load_image_folder(source, (8, 8), resize=True, workers=1)
    assert "more than 40 megapixels" in skipped_reasons(result)["bomb.png"]
    assert len(result.splits["train"][1]) == 4  # the other readable training images are all there


def test_preprocess_counts_and_lists_a_bomb_in_meta_json(tmp_path: Path) -> None:
    source = write(tmp_path / "pets", {**own_tree(), "train/dog/bomb.png": bomb_png()})
    params, paths = parse_params(own_data_params(source)), Paths(tmp_path / "project")
    load_stage("download").main(params, paths, "pets")
    load_stage("preprocess").main(params, paths, "pets")
    meta = json.loads((paths.prepared("pets") / "meta.json").read_text())
    assert meta["skipped_count"] == 2  # the bomb, and own_tree's corrupt file (its greyscale one is converted)
    assert any(entry["file"].endswith("bomb.png") and "megapixels" in entry["reason"] for entry in meta["skipped"])


def test_predict_refuses_a_bomb_with_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnlab.cli import main as cli

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.save(tmp_path / "tiny.keras")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    assert cli(["predict", str(tmp_path / "tiny.keras"), str(tmp_path / "bomb.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png" in err and "megapixels" in err and "Traceback" not in err


# Linux: writing 5 to clear_refs resets the peak resident size (VmHWM) to the current one, so the imports'
# own peak does not hide the decoder's.
PEAK_RSS = """
import sys
from pathlib import Path
from cnnlab.data import loaders

def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

data = Path(sys.argv[1]).read_bytes()
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS:")
outcome = loaders._decode(data, (32, 32), 1, True, float(sys.argv[2]))
print(type(outcome).__name__, (kib("VmHWM:") - before) // 1024)
"""


def peak_growth_mib(image: Path, megapixels: float) -> tuple[str, int]:
    """What decoding `image` under a `megapixels` limit returns, and how much it raised the peak memory (MiB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(image), str(megapixels)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return out[0], int(out[1])


def test_a_90_megapixel_image_is_refused_from_its_header_without_memory(tmp_path: Path) -> None:
    huge = black_png(tmp_path / "huge.png", 9500, 9500)  # 90.25 megapixels, 88 KB on disk
    kind, growth = peak_growth_mib(huge, 40)
    assert kind == "str" and growth < 20
    kind, growth = peak_growth_mib(huge, 100)  # under a higher limit it is decoded: the probe sees that
    assert kind == "tuple" and growth > 80  # (the image, its colour conversion)


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_members_over_the_size_or_ratio_limit_are_skipped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_of(tmp_path / "pets.zip", {
        **image_tree(),
        "train/cat/zeros.png": bytes(1 << 20),  # 1 MiB that deflates to about 1 KB
        "train/dog/noise.png": os.urandom(3 << 20),  # 3 MiB that do not compress
    })  # fmt: skip
    read = []
    reader = zipfile.ZipFile.read
    monkeypatch.setattr(
        zipfile.ZipFile, "read", lambda self, name, *a: read.append(str(name)) or reader(self, name, *a)
    )
    limits = ImageLimits(max_member_mib=2, max_compression_ratio=100)
    result = loaders.load_image_folder(archive, (8, 8), resize=True, workers=1, limits=limits)
    reasons = skipped_reasons(result)
    assert "(data.limits.max_compression_ratio)" in reasons["zeros.png"]
    assert "3.0 MiB, over the limit of 2" in reasons["noise.png"]
    assert not [name for name in read if "zeros" in name or "noise" in name]
    assert len(result.splits["train"][1]) == 4  # image_tree()'s three colour images and its greyscale one


def test_the_limits_have_their_documented_defaults() -> None:
    limits = parse_params(own_data_params(Path("pets"))).data.limits
    assert (limits.max_megapixels, limits.max_member_mib, limits.max_compression_ratio) == (40, 64, 100)


def test_symbolic_links_are_refused_reported_and_never_copied(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    outside = write(tmp_path / "elsewhere", {"cat/x.png": image_tree()["train/cat/a.png"]})
    source = write(tmp_path / "pets", own_tree())
    (source / "train" / "cat" / "passwd.png").symlink_to(secret)
    (source / "train" / "more").symlink_to(outside, target_is_directory=True)

    result = loaders.load_image_folder(source, (8, 8), resize=True, workers=1)
    reasons = {entry["file"]: entry["reason"] for entry in result.skipped}
    assert "symbolic link" in reasons[str(Path("train/cat/passwd.png"))]
    assert "symbolic link" in reasons[str(Path("train/more"))]

    params, paths = parse_params(own_data_params(source)), Paths(tmp_path / "project")
    load_stage("download").main(params, paths, "pets")
    copied = paths.raw / "pets"
    assert not (copied / "train" / "cat" / "passwd.png").exists() and not (copied / "train" / "more").exists()
    assert not any("root:x" in p.read_text(errors="ignore") for p in copied.rglob("*") if p.is_file())
    record = json.loads(paths.source_record("pets").read_text())
    assert {entry["file"] for entry in record["refused"]} == {str(Path("train/cat/passwd.png")), "train/more"}


class Planted:
    """Unpickling this runs `Path.touch` on a file: what a hostile pickle could do with any callable."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.target,))


def cifar_archive(path: Path, batch: object) -> Path:
    """A cifar-10-python.tar.gz whose every batch pickles `batch`."""
    payload = pickle.dumps(batch, protocol=4)  # bytes as opcodes, as Python 2's pickles of the real archive
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_a_tampered_cifar_archive_fails_its_checksum_before_anything_is_unpickled(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    raw = tmp_path / "raw"
    raw.mkdir()
    cifar_archive(raw / "cifar-10-python.tar.gz", {b"data": Planted(planted), b"labels": []})
    with pytest.raises(ChecksumError, match=r"cifar-10-python\.tar\.gz"):
        read_raw("cifar10", raw, "cifar-python")
    assert not planted.exists()


def test_the_cifar_reader_builds_arrays_and_refuses_any_other_callable(tmp_path: Path) -> None:
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    good = cifar_archive(tmp_path / "good.tar.gz", {b"data": images, b"labels": [3, 7], b"filenames": [b"a", b"b"]})
    assert loaders.load_cifar_python(good)["test"][1].tolist() == [3, 7]
    planted = tmp_path / "planted"
    hostile = cifar_archive(tmp_path / "hostile.tar.gz", {b"data": Planted(planted), b"labels": []})
    with pytest.raises(loaders.DataFormatError, match=r"pathlib.*touch.*refused"):
        loaders.load_cifar_python(hostile)
    assert not planted.exists()
