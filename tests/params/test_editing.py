"""Entries added to params.yaml keep every comment and line that was there, in whatever style the file has, and
nothing is written when the result would not be valid params."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from cnnlab.params import ParamsError, load_params
from cnnlab.params.editing import ParamsEditor
from helpers.project import ROOT

SHAPES = {"path": "shapes.zip", "image_size": [32, 32], "channels": 3, "split": {"test": 0.2, "validation": 0.1}}
OWN = {"description": "mine", "dataset": "shapes", "model": "F1", "budgets": {"quick": {"epochs": 3}}}


def add_shapes(path: Path) -> ParamsEditor:
    editor = ParamsEditor(path)
    editor.add_entry(("data", "custom"), "shapes", SHAPES)
    editor.append_item(("datasets",), "shapes")
    editor.add_entry(("experiments",), "OWN", OWN)
    editor.write()
    return editor


def test_the_project_params_gain_entries_and_lose_no_line_or_comment(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    before = path.read_text().splitlines()
    add_shapes(path)
    after = path.read_text().splitlines()
    changed = [line for line in difflib.ndiff(before, after) if line[:1] in "+-"]
    removed = [line[2:] for line in changed if line.startswith("- ")]
    # Only two lines change in place: `datasets` gains a name, `custom: {}` opens; their comments stay.
    assert len(removed) == 2 and removed[0].startswith("datasets: [") and removed[1].startswith("  custom: {}")
    assert "# one download and one preprocess stage each" in next(line for line in after if line.startswith("datasets"))
    assert any(line.startswith("  custom:             # your own images") for line in after)
    assert sum(line.lstrip().startswith("#") for line in after) == sum(line.lstrip().startswith("#") for line in before)
    params = load_params(path)
    assert params.datasets[-1] == "shapes" and params.data.custom["shapes"].split.validation == 0.1
    assert list(params.experiments)[-1] == "OWN" and params.recipe("OWN").epochs == 3
    own_at = after.index("  OWN:")
    assert after[own_at - 1].startswith("      quick: {epochs: 3, model_options: {input_size: 75}")  # after D2
    assert after[own_at + 5] == "      quick: {epochs: 3}"  # a mapping of scalars on one line, as the file writes them


def test_a_file_in_block_style_is_edited_in_its_own_style(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["custom"] = {"mine": {"path": "x", "image_size": [8, 8]}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # `- name` lists, as tests' copies of the project write
    before = path.read_text()
    add_shapes(path)
    lines = path.read_text().splitlines()
    assert lines[lines.index("- cats_vs_dogs") + 1] == "- shapes"
    assert path.read_text().count("\n") - before.count("\n") == 12  # lines added, none changed
    assert set(load_params(path).data.custom) == {"mine", "shapes"}


def test_a_one_line_mapping_goes_through_the_round_trip_and_keeps_its_comments(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    text = (
        (ROOT / "params.yaml")
        .read_text()
        .replace("  custom: {}  ", "  custom: {mine: {path: x, image_size: [8, 8]}}  ")
    )
    path.write_text(text)
    add_shapes(path)
    assert "# your own images" in path.read_text() and "# Studies: the same experiment" in path.read_text()
    assert set(load_params(path).data.custom) == {"mine", "shapes"}


def test_an_existing_name_or_an_invalid_result_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    before = path.read_text()
    editor = ParamsEditor(path)
    with pytest.raises(ParamsError, match=r"experiments\.F1 exists already"):
        editor.add_entry(("experiments",), "F1", OWN)
    editor.add_entry(("experiments",), "OWN", OWN)  # its data set is in no `datasets`: not valid params
    with pytest.raises(ParamsError, match=r"experiments\.OWN\.dataset: data set 'shapes' is not in `datasets`"):
        editor.write()
    assert path.read_text() == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".params")]
