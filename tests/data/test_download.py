"""Sources in priority order, sha256 checks, clear errors, and the online path against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import socket
from pathlib import Path

import mlflow
import pytest
import yaml

from cnnlab.catalog.datasets import DATASETS, IDX_NAMES, DatasetSpec
from cnnlab.data import progress
from cnnlab.data.download import MIRROR_ENV, ChecksumError, DataUnavailableError, Source, candidate_sources, fetch
from cnnlab.params import parse_params
from cnnlab.pipeline.stage import Paths
from helpers.project import ROOT, load_stage

FASHION, MNIST = DATASETS["fashion_mnist"], DATASETS["mnist"]


def test_sources_are_tried_in_the_documented_order(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = candidate_sources(FASHION, path=Path("/p"), mirror=Path("/m"), debian_dir=Path("/d"), online=True)
    assert [s.kind for s in sources] == ["path", "mirror", "debian", "online"]
    assert sources[1].location == "/m/fashion_mnist"
    monkeypatch.setenv(MIRROR_ENV, "/env-mirror")
    assert candidate_sources(MNIST, mirror=Path("/m"))[0] == Source("mirror", "/env-mirror/mnist")
    # Debian ships Fashion-MNIST only; every data set has an online source (cats vs dogs: the PetImages archive)
    assert "debian" not in [s.kind for s in candidate_sources(MNIST, debian_dir=Path("/d"))]
    assert [s.kind for s in candidate_sources(DATASETS["cats_vs_dogs"], online=True)] == ["mirror", "online"]
    assert all(spec.online is not None for spec in DATASETS.values())


def test_mirror_copy_is_verified_and_recorded(mirror: Path, tmp_path: Path) -> None:
    fetched = fetch(MNIST, [Source("mirror", str(mirror / "mnist"))], tmp_path / "raw")
    assert fetched.source == "mirror" and fetched.format == "idx-gz"
    assert sorted(fetched.files) == sorted(IDX_NAMES)
    assert all((tmp_path / "raw" / name).is_file() for name in IDX_NAMES)


def test_first_source_that_has_the_files_wins(fashion_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    fetched = fetch(FASHION, [Source("path", str(empty)), Source("debian", str(fashion_dir))], tmp_path / "raw")
    assert fetched.source == "debian"


def test_checksum_mismatch_names_the_file(mirror: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    shutil.copytree(mirror / "mnist", fake)
    (fake / "t10k-labels-idx1-ubyte.gz").chmod(0o644)
    (fake / "t10k-labels-idx1-ubyte.gz").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz"):
        fetch(MNIST, [Source("mirror", str(fake))], tmp_path / "raw")


def test_no_source_names_every_source_tried(tmp_path: Path) -> None:
    sources = [
        Source("path", str(tmp_path / "nowhere")),
        Source("mirror", str(tmp_path / "mirror" / "mnist")),
        Source("online", "http://127.0.0.1:9/"),
    ]
    with pytest.raises(DataUnavailableError) as error:
        fetch(MNIST, sources, tmp_path / "raw")
    message = str(error.value)
    for source in sources:
        assert source.location in message
    assert "data.paths.mnist" in message and MIRROR_ENV in message
    assert message.endswith("To run the stages of the other data sets anyway: `dvc repro --keep-going`.")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket closes


def test_unreachable_cats_vs_dogs_says_where_to_get_the_archive(tmp_path: Path) -> None:
    spec = DATASETS["cats_vs_dogs"]
    with pytest.raises(DataUnavailableError) as error:
        fetch(spec, candidate_sources(spec, online_base=f"http://127.0.0.1:{closed_port()}/"), tmp_path / "raw")
    message = str(error.value)
    assert "Connection refused" in message and "check the network connection" in message
    assert f"{spec.online_base}kagglecatsanddogs_5340.zip yourself" in message
    assert "data.paths.cats_vs_dogs" in message and "data.online_base.cats_vs_dogs" in message
    assert "`dvc repro --keep-going`" in message
    with pytest.raises(DataUnavailableError, match=r"turn downloads on \(data\.online: true"):
        fetch(spec, candidate_sources(spec, online=False), tmp_path / "raw")


def test_online_download_from_a_local_http_server(fashion_dir: Path, http_folder, tmp_path: Path) -> None:
    served, url = http_folder
    for name in IDX_NAMES:
        shutil.copy(fashion_dir / name, served / name)
    fetched = fetch(FASHION, candidate_sources(FASHION, online_base=url, debian_dir=None), tmp_path / "raw")
    assert fetched.source == "online" and fetched.location == url
    assert all((tmp_path / "raw" / name).stat().st_size == (fashion_dir / name).stat().st_size for name in IDX_NAMES)


def served_bytes(served: Path, size: int) -> DatasetSpec:
    """A file of `size` bytes served as MNIST's mnist.npz, and MNIST's spec accepting exactly those bytes."""
    data = bytes(range(256)) * (size // 256)
    (served / "mnist.npz").write_bytes(data)
    layout = dataclasses.replace(MNIST.layouts[1], files={"mnist.npz": frozenset({hashlib.sha256(data).hexdigest()})})
    return dataclasses.replace(MNIST, layouts=(MNIST.layouts[0], layout))


def test_a_download_off_a_terminal_logs_every_tenth(http_folder, tmp_path: Path, caplog, monkeypatch) -> None:
    served, url = http_folder
    spec = served_bytes(served, 5 << 20)  # five blocks of 1 MiB
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="cnnlab.download"):
        fetch(spec, [Source("online", url)], tmp_path / "raw")
    lines = [r.getMessage() for r in caplog.records if "mnist.npz:" in r.getMessage()]
    assert lines == [f"  mnist.npz: {p}% of 5.2 MB" for p in (20, 40, 60, 80, 100)]


def test_a_download_on_a_terminal_shows_a_bar(http_folder, tmp_path: Path, capsys, monkeypatch) -> None:
    served, url = http_folder
    spec = served_bytes(served, 3 << 20)
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    fetch(spec, [Source("online", url)], tmp_path / "raw")
    bar = capsys.readouterr().err
    assert "mnist.npz: 100%" in bar and "3.00M/3.00M" in bar


def test_online_download_with_wrong_bytes_fails_and_leaves_nothing(http_folder, tmp_path: Path) -> None:
    served, url = http_folder
    (served / "mnist.npz").write_bytes(b"not the real mnist.npz")
    with pytest.raises(ChecksumError) as error:
        fetch(MNIST, [Source("online", url)], tmp_path / "raw")
    assert f"{url}mnist.npz" in str(error.value) and str(tmp_path / "raw" / "mnist.npz") in str(error.value)
    assert list((tmp_path / "raw").iterdir()) == []  # no partial or temporary file left


def test_download_stage_fetches_one_data_set_and_records_its_source(mirror: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    load_stage("download").main(parse_params(raw), Paths(tmp_path), "mnist")
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == ["mnist", "mnist.source.json"]
    record = yaml.safe_load((tmp_path / "data" / "raw" / "mnist.source.json").read_text())
    assert record["source"] == "mirror" and record["location"] == str(mirror / "mnist")
    run = mlflow.search_runs(experiment_names=["cnnlab"]).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.source"] == f"mirror: {mirror / 'mnist'}"
    assert run["tags.mlflow.runName"] == "download@mnist" and run["tags.dataset"] == "mnist"


def test_failed_download_stage_marks_its_run_failed(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["online"] = False
    with pytest.raises(DataUnavailableError):
        load_stage("download").main(parse_params(raw), Paths(tmp_path), "mnist")
    runs = mlflow.search_runs(experiment_names=["cnnlab"])
    assert runs["status"].tolist() == ["FAILED"] and runs["tags.mlflow.runName"].tolist() == ["download@mnist"]
