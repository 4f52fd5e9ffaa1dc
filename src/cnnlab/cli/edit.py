"""`cnnlab add-data` and `cnnlab add-experiment`: a folder or zip of your own images, and an experiment on it, added
to params.yaml (comments and order kept, validated before the file is replaced)."""

from __future__ import annotations

import argparse
import copy
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cnnlab.catalog.datasets import DATASETS
from cnnlab.catalog.networks import MODELS
from cnnlab.cli.folders import survey_lines
from cnnlab.data.errors import DataFormatError
from cnnlab.data.layouts import CLASS_LAYOUT, unsafe_name
from cnnlab.data.loaders import GREYSCALE_MODES
from cnnlab.data.survey import survey
from cnnlab.params import CustomDataset, CustomSplit, Params, ParamsError
from cnnlab.params.editing import ParamsEditor

LONGEST_SIDE = 128  # an image size chosen for you keeps the images' shape, at most this many pixels a side
DEFAULT_EPOCHS, QUICK_EPOCHS = 10, 3  # a new recipe from a zoo network: its epochs, and on the quick budget


def _taken(params: Params) -> set[str]:
    """Every id params.yaml uses: model files, metrics folders and DVC stages are named after them."""
    return {*params.datasets, *params.data.custom, *DATASETS, *params.experiments, *params.crossval,
            *params.ablation, *params.tune, *params.finetune.recipes, *params.detect.jobs}  # fmt: skip


def _check_zip(path: Path) -> None:
    """A zip is read in place, never extracted; still, an entry that names a place outside it is refused."""
    with zipfile.ZipFile(path) as archive:
        bad = [name for name in archive.namelist() if unsafe_name(name)]
    if bad:
        raise DataFormatError(
            f"{path}: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} with an absolute path or '..' "
            f"({', '.join(bad[:3])}); zip the folder again from inside it (cd folder && zip -r ../data.zip .)"
        )


def _stored_path(path: Path, root: Path) -> str:
    """The path params.yaml records: relative to the project root when inside it, else absolute."""
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def _image_size(sizes: Counter[tuple[int, int]]) -> tuple[int, int]:
    """The most common (height, width), scaled down to LONGEST_SIDE on its longer side."""
    (height, width), _ = sizes.most_common(1)[0]
    scale = min(1.0, LONGEST_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def add_data(args: argparse.Namespace) -> int:
    """Survey the folder or zip, refuse it if the pipeline could not use it, then declare it in params.yaml."""
    editor = ParamsEditor(Path(args.params))
    params, root = editor.params(), Path(args.params).resolve().parent
    if args.name in _taken(params):
        raise ParamsError(f"{args.name!r} is taken already (a data set or an id of params.yaml); choose another name")
    source = Path(args.path)
    if not source.is_dir() and not zipfile.is_zipfile(source):
        raise DataFormatError(
            f"{source}: neither a folder nor a zip file; give the folder of your images or a zip of it"
        )
    if source.is_file():
        _check_zip(source)
    try:
        split = CustomSplit(test=args.test, validation=args.validation, seed=params.seed)
    except ValidationError as exc:
        raise ParamsError(f"--test {args.test:g} --validation {args.validation:g}: {exc.errors()[0]['msg']}") from None
    provisional = CustomDataset(path=source, image_size=tuple(args.image_size or (1, 1)), channels=args.channels or 3,
                                split=split)  # fmt: skip
    found = survey(args.name, provisional, params.data.limits)
    if not found.errors and not found.sizes:
        found.errors.append(f"{source}: no usable image")
    if found.errors:
        print("\n".join(survey_lines(found)))
        raise DataFormatError(f"{source} cannot be used as it is: fix the error(s) above, then run add-data again")
    found.channels = args.channels or (1 if all(mode in GREYSCALE_MODES for mode in found.modes) else 3)
    size = tuple(args.image_size) if args.image_size else _image_size(found.sizes)
    entry: dict[str, Any] = {"path": _stored_path(source, root), "image_size": list(size), "channels": found.channels}
    if found.layout == CLASS_LAYOUT:
        entry["split"] = split.model_dump()
    editor.add_entry(("data", "custom"), args.name, entry)
    editor.append_item(("datasets",), args.name)
    editor.write()
    print("\n".join(survey_lines(found)))
    print(f"added data set {args.name} to {args.params}: images resized to {size[0]}x{size[1]}, {found.channels} "
          f"channel(s){'' if args.image_size else ' (chosen from the images; --image-size H W sets it)'}")  # fmt: skip
    print(f"next: cnnlab add-experiment <ID> --data {args.name} --model F1")
    return 0


def _recipe(params: Params, editor: ParamsEditor, model: str, name: str) -> dict[str, Any]:
    """An experiment's recipe copied (data set, description, loss and own budget left out), or a new one for a
    network of the zoo."""
    if model in params.experiments:
        recipe = copy.deepcopy(editor.data["experiments"][model])
        for key in ("description", "dataset", "loss", "budget"):  # the loss is chosen again from the class count
            recipe.pop(key, None)
        return {"description": f"{model}'s recipe on {name}", **recipe}
    if model in MODELS:
        return {"description": f"network {model} on {name}", "model": model, "validation": 0.2,
                "epochs": DEFAULT_EPOCHS, "budgets": {"quick": {"epochs": QUICK_EPOCHS}}}  # fmt: skip
    raise ParamsError(
        f"--model {model}: neither an experiment id ({', '.join(params.experiments)}) nor a network of the zoo "
        f"({', '.join(MODELS)})"
    )


def add_experiment(args: argparse.Namespace) -> int:
    """Declare an experiment on a data set, its recipe copied from an experiment or new for a zoo network."""
    editor = ParamsEditor(Path(args.params))
    params = editor.params()
    if args.id in _taken(params):
        raise ParamsError(f"{args.id!r} is taken already (an id or data set of params.yaml); choose another id")
    if args.data not in params.datasets:
        raise ParamsError(f"--data {args.data}: no such data set in `datasets` ({', '.join(params.datasets)}); "
                          "add yours with `cnnlab add-data NAME PATH`")  # fmt: skip
    recipe = _recipe(params, editor, args.model, args.data)
    recipe = {"description": args.description or recipe.pop("description"), "dataset": args.data, **recipe}
    if args.epochs:
        recipe["epochs"] = args.epochs
        for override in recipe.get("budgets", {}).values():
            override.pop("epochs", None)
    editor.add_entry(("experiments",), args.id, recipe)
    edited = editor.write()
    registered = f"; evaluate registers it as cnnlab-{args.id}" if edited.mlflow.register_model else ""
    print(f"added experiment {args.id} to {args.params}: {recipe['model']} on {args.data}, "
          f"{edited.recipe(args.id).epochs} epochs on the {edited.budget_of(args.id)} budget{registered}")  # fmt: skip
    print(f"run it: dvc repro evaluate@{args.id}")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a fraction from 0 to below 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a number of epochs, 1 or more")
    return value


def register(commands: Any) -> None:
    """Add the two commands to `cnnlab`'s subcommands."""
    data = commands.add_parser("add-data", help="declare a folder or zip of your own images as a data set")
    data.add_argument("name", help="the data set's name (letters, digits, _ . -; a letter first)")
    data.add_argument("path", help="a folder (or .zip, read in place) of <class>/<image> or <split>/<class>/<image>")
    data.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"), help="resize to H x W (default: "
                      f"the most common size, at most {LONGEST_SIDE} a side)")  # fmt: skip
    data.add_argument("--channels", type=int, choices=(1, 3), help="1: greyscale, 3: colour (default: the images')")
    data.add_argument("--test", type=_fraction, default=CustomSplit().test, help="<class>/<image>: test fraction")
    data.add_argument("--validation", type=_fraction, default=CustomSplit().validation,
                      help="<class>/<image>: validation fraction (0: each experiment holds out its own)")  # fmt: skip
    data.set_defaults(run=add_data)
    experiment = commands.add_parser("add-experiment", help="declare an experiment on a data set")
    experiment.add_argument("id", help="the experiment's id (letters, digits, _ . -; a letter first)")
    experiment.add_argument("--data", required=True, help="a data set of `datasets` (yours from add-data)")
    experiment.add_argument("--model", required=True, help="an experiment id to copy the recipe of, or a zoo network")
    experiment.add_argument("--epochs", type=_positive, help="train this many epochs on every budget")
    experiment.add_argument("--description", help="one line for `cnnlab list` and the report")
    experiment.set_defaults(run=add_experiment)
