"""download and preprocess on a user's own images (folder and zip), and a failed preprocess that keeps what it had."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest

from cnnlab.data.prepare import training_splits
from cnnlab.params import parse_params
from cnnlab.pipeline.stage import Paths
from cnnlab.util.files import sha256_file
from helpers.images import own_data_params, own_tree
from helpers.project import load_stage


def write_tree(folder: Path) -> Path:
    for name, data in own_tree().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def zip_tree(archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in own_tree().items():
            zf.writestr(f"pets/{name}", data)
    return archive


@pytest.mark.parametrize("as_zip", [False, True])
def test_own_images_go_through_download_and_preprocess(tmp_path: Path, as_zip: bool) -> None:
    source = zip_tree(tmp_path / "pets.zip") if as_zip else write_tree(tmp_path / "pets")
    project = tmp_path / "project"
    params, paths = parse_params(own_data_params(source)), Paths(project)
    load_stage("download").main(params, paths, "pets")
    load_stage("preprocess").main(params, paths, "pets")
    meta = json.loads((paths.prepared("pets") / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"]
    assert meta["image_shape"] == [8, 8, 3]
    assert meta["counts"] == {"train": 10, "test": 4}  # 10 readable training images, grey.png made colour
    train, val = training_splits(paths.prepared("pets"), 0.5, params.seed, stratify=True)
    assert (len(train[1]), len(val[1])) == (5, 5)  # the experiment holds out half, stratified
    assert sorted(Path(s["file"]).name for s in meta["skipped"]) == ["broken.jpg"]
    assert [(Path(c["file"]).name, c["conversion"]) for c in meta["converted"]] == [("grey.png", "greyscale to colour")]
    runs = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time ASC"])
    assert runs["tags.stage"].tolist() == ["download", "preprocess"]
    assert runs["tags.mlflow.runName"].tolist() == ["download@pets", "preprocess@pets"]
    assert runs["tags.dataset"].tolist() == ["pets", "pets"]
    assert runs["metrics.skipped_images"].tolist()[1] == 1
    assert runs["metrics.converted_images"].tolist()[1] == 1
    with np.load(paths.prepared("pets") / "test.npz") as test:
        assert test["x"].shape == (4, 8, 8, 3) and test["x"].dtype == np.uint8


def test_removed_own_images_disappear_from_the_copy(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "pets")
    params, paths = parse_params(own_data_params(source)), Paths(tmp_path / "project")
    load_stage("download").main(params, paths, "pets")
    (source / "train" / "dog" / "grey.png").unlink()
    load_stage("download").main(params, paths, "pets")
    assert not (paths.raw / "pets" / "train" / "dog" / "grey.png").exists()
    assert (paths.raw / "pets" / "train" / "cat" / "a.png").exists()


def test_failed_preprocess_keeps_the_previous_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params, paths = parse_params(own_data_params(write_tree(tmp_path / "pets"))), Paths(tmp_path / "project")
    load_stage("download").main(params, paths, "pets")
    preprocess = load_stage("preprocess")
    preprocess.main(params, paths, "pets")
    outputs = sorted(paths.prepared("pets").iterdir())
    before = {p: sha256_file(p) for p in outputs}

    def broken_split(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("cnnlab.workflows.preprocess.describe", broken_split)
    with pytest.raises(OSError, match="disk full"):
        preprocess.main(params, paths, "pets")
    assert {p: sha256_file(p) for p in sorted(paths.prepared("pets").iterdir())} == before
    assert not [p for p in paths.root.iterdir() if p.name.startswith(".staging-")]
    runs = mlflow.search_runs(experiment_names=["cnnlab"], order_by=["start_time ASC"])
    assert runs["status"].tolist() == ["FINISHED", "FINISHED", "FAILED"]


def test_own_images_without_a_test_split_fail_clearly(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "pets")
    for image in (source / "test").rglob("*.*"):
        image.unlink()
    params, paths = parse_params(own_data_params(source)), Paths(tmp_path / "project")
    load_stage("download").main(params, paths, "pets")
    with pytest.raises(ValueError, match="pets: no test split found"):
        load_stage("preprocess").main(params, paths, "pets")


def test_too_few_images_for_a_stratified_split_is_a_clear_error() -> None:
    from cnnlab.data.loaders import DataFormatError
    from cnnlab.data.prepare import Prepared, with_validation

    x = np.zeros((3, 8, 8, 3), np.uint8)
    tiny = Prepared({"train": (x, np.array([0, 0, 1])), "test": (x, np.array([0, 1, 1]))}, ["a", "b"])
    with pytest.raises(DataFormatError, match="a class has only 1 training image"):
        with_validation(tiny, 0.5, seed=0)
    assert "val" not in with_validation(tiny, "test", seed=0).splits


def test_every_error_class_of_the_project_is_a_user_error_shown_as_one_line() -> None:
    """Stages and commands show a UserError as one line (exit 2): an error class left out of it would end in
    a traceback. Classes named *Error are for users; the others (a search's time limit, a busy worker) are
    control flow."""
    import importlib
    import inspect

    from cnnlab.lineage.code_digest import SOURCE
    from cnnlab.util.errors import UserError

    errors = {}
    for path in SOURCE.rglob("*.py"):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        if parts[-1] == "__main__":  # runs the command
            continue
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for name, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == module.__name__ and name.endswith("Error"):
                errors[name] = value
    assert {"ParamsError", "DataUnavailableError", "DarknetFileError", "RetrainError", "ServerError"} <= errors.keys()
    assert [name for name, value in errors.items() if not issubclass(value, UserError)] == []
