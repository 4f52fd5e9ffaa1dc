"""The reproduction report: what each seed claims (claims.yaml) beside what the pipeline measured (metrics/<id>/).

Every measured number comes from the metrics files the train and evaluate stages wrote; the
only numbers in claims.yaml are the seeds' own. Results on the quick budget are also held to their floors
(params.yaml `quick_floors`), and the ones below them are marked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError

from cnnlab.config import FloorSection, Params, ParamsError, Strict, read_yaml
from cnnlab.plots import _save, plt  # the report's figure lives here so that changing it retrains nothing


class Claim(Strict):
    seed: str
    metric: Literal["test_accuracy", "val_accuracy"] = "test_accuracy"
    claim: float | None = None  # None: the seed's claim is qualitative
    text: str
    params: int | None = None
    note: str = ""


class StudyClaim(Strict):
    seed: str
    text: str
    arms: dict[str, float] = Field(default_factory=dict)  # arm (or cell) -> the seed's mean over its folds
    note: str = ""


class Claims(Strict):
    experiments: dict[str, Claim]
    studies: dict[str, StudyClaim] = Field(default_factory=dict)  # optional: a study of your own needs none
    transfer: dict[str, Claim] = Field(default_factory=dict)  # transfer recipes (the seeds' own backbones)
    data_notes: dict[str, dict[str, str]] = Field(default_factory=dict)  # data set -> source format -> note
    seed_mistakes: list[str] = Field(default_factory=list)


def load_claims(path: Path) -> Claims:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the report compares against the seeds' claims listed there")
    try:
        return Claims.model_validate(read_yaml(path))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path} is not valid: {exc}") from None


@dataclass(frozen=True)
class FloorCheck:
    """One quick-budget result held to its floor (params.yaml `quick_floors`)."""

    id: str  # the experiment, study, search or transfer recipe
    part: str  # a study's arm or cell, a search's "best trial" or "retrained"; "" where the id has one result
    metric: str
    value: float | None  # None: not measured yet
    floor: float

    @property
    def below(self) -> bool:
        return self.value is not None and self.value < self.floor

    def __str__(self) -> str:
        name = f"{self.id} {self.part}" if self.part else self.id
        return f"{name}: {self.metric} {_percent(self.value)}, floor {_floor_text(self.floor)}"


def quick_floor(params: Params, section: FloorSection, target: str, budget: str | None) -> float | None:
    """The floor of a result produced on `budget`: only quick-budget results are held to one."""
    return params.quick_floors.floor(section, target) if budget == "quick" else None


def _checks(
    params: Params, section: FloorSection, target: str, budget: str | None, results: list[tuple[str, str, float | None]]
) -> list[FloorCheck]:
    """`results` ((part, metric, value) each) held to `target`'s floor, if `budget` gives it one."""
    floor = quick_floor(params, section, target, budget)
    return [] if floor is None else [FloorCheck(target, part, metric, value, floor) for part, metric, value in results]


@dataclass(frozen=True)
class Row:
    id: str
    seed: str
    claim_text: str
    metric: str
    claimed: float | None
    measured: float | None
    test_accuracy: float | None
    budget: str
    epochs: str
    train_samples: int | None
    train_seconds: float | None
    device: str
    params_claimed: int | None
    params_measured: int | None
    notes: str
    floor: float | None = None  # its quick-budget floor on test accuracy; None off the quick budget

    @property
    def floor_check(self) -> FloorCheck | None:
        return None if self.floor is None else FloorCheck(self.id, "", "test accuracy", self.test_accuracy, self.floor)

    @property
    def below_floor(self) -> bool:
        return self.floor_check is not None and self.floor_check.below

    @property
    def difference(self) -> float | None:
        """Measured minus claimed, in percentage points."""
        if self.claimed is None or self.measured is None:
            return None
        return round(100 * (self.measured - self.claimed), 2)


def _read(path: Path) -> dict:
    """A metrics file's contents; empty if the stage has not written it yet."""
    return json.loads(path.read_text()) if path.is_file() else {}


def _notes(claim: Claim, claims: Claims, train: dict) -> str:
    notes = [claim.note] if claim.note else []
    if not train:
        return " ".join([*notes, "Not run yet: `dvc repro` runs it."])
    data_note = claims.data_notes.get(train.get("dataset", ""), {}).get(train.get("data_format", ""))
    if data_note:
        notes.append(data_note)
    if claim.params is not None and claim.params != train["params"]:
        notes.append(f"Parameter count differs: the seed prints {claim.params:,}, our model has {train['params']:,}.")
    return " ".join(notes)


def build_rows(params: Params, claims: Claims, metrics_root: Path) -> list[Row]:
    """One row per registered experiment, in registry order; experiments without a claim are named in an error."""
    unclaimed = sorted(set(params.experiments) - set(claims.experiments))
    if unclaimed:
        raise ParamsError(
            f"claims.yaml has no entry for {', '.join(unclaimed)}: add what the seed claims (or text: none)"
        )
    rows = []
    for exp_id in params.experiments:
        claim = claims.experiments[exp_id]
        train = _read(metrics_root / exp_id / "train.json")
        evaluate = _read(metrics_root / exp_id / "evaluate.json")
        scores = {**train, **evaluate}
        rows.append(
            Row(
                id=exp_id,
                seed=claim.seed,
                claim_text=claim.text,
                metric=claim.metric,
                claimed=claim.claim,
                measured=scores.get(claim.metric),
                test_accuracy=scores.get("test_accuracy"),
                budget=train.get("budget", "-"),
                epochs=f"{train['kept_epoch']}/{train['epochs_run']}" if train else "-",
                train_samples=train.get("train_samples"),
                train_seconds=train.get("train_seconds"),
                device=train.get("device", "-"),
                params_claimed=claim.params,
                params_measured=train.get("params"),
                notes=_notes(claim, claims, train),
                floor=quick_floor(params, "experiments", exp_id, train.get("budget")),
            )
        )
    return rows


def table_row(cells: list[str]) -> str:
    """One Markdown table row ('|' inside a cell would split it, so it becomes '/')."""
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([table_row(header), "|" + "---|" * len(header), *(table_row(r) for r in rows)])


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f} pp"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _floor_text(floor: float) -> str:
    return f"{100 * floor:g}%"


def floor_cell(checks: list[FloorCheck]) -> str:
    """A table's floor column: the floor, marked where a result falls below it ("-" where none applies)."""
    if not checks:
        return "-"
    text = _floor_text(checks[0].floor)  # one id, one floor
    below = [c for c in checks if c.below]
    if not below:
        return text
    parts = f" ({', '.join(c.part for c in below)})" if len(checks) > 1 else ""
    return f"**below floor {text}**{parts}"


def _row_checks(row: Row) -> list[FloorCheck]:
    return [] if row.floor_check is None else [row.floor_check]


def markdown(rows: list[Row], claims: Claims, title: str, preface: str = "", sections: tuple[str, ...] = ()) -> str:
    header = [
        "id",
        "seed",
        "seed claims",
        "metric",
        "measured",
        "test acc.",
        "difference",
        "quick floor",
        "budget",
        "epochs kept/run",
        "train images",
        "train time",
        "device",
        "params seed / ours",
        "notes",
    ]
    lines = [f"# {title}", ""]
    if preface:
        lines += [preface, ""]
    lines += [table_row(header), "|" + "---|" * len(header)]
    for r in rows:
        params = f"{_count(r.params_claimed)} / {_count(r.params_measured)}"
        seconds = "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s"
        cells = [
            *(f"**{r.id}**", r.seed, r.claim_text, r.metric.replace("_accuracy", ""), _percent(r.measured)),
            *(_percent(r.test_accuracy), _signed(r.difference), floor_cell(_row_checks(r)), r.budget, r.epochs),
            _count(r.train_samples),
            *(seconds, r.device, params, r.notes),
        ]
        lines.append(table_row(cells))
    lines += [line for section in sections for line in ("", section.rstrip())]
    if claims.seed_mistakes:
        lines += ["", "## Mistakes in the seeds that we did not copy", ""]
        lines += [f"- {mistake}" for mistake in claims.seed_mistakes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    fields = [*asdict(rows[0]), "below_floor", "difference"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "below_floor": row.below_floor, "difference": row.difference})
    return buffer.getvalue()


def claims_chart(rows: list[Row], title: str, path: Path) -> Path:
    """Measured accuracy per experiment as bars, the seed's claim as a black tick (none where it is qualitative);
    a quick-budget bar below its floor is red."""
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    positions = np.arange(len(rows))
    heights = [np.nan if r.measured is None else 100 * r.measured for r in rows]
    colours = ["tab:red" if r.below_floor else "tab:blue" if r.budget == "full" else "tab:gray" for r in rows]
    ax.bar(positions, heights, color=colours, width=0.7)
    ticks = [(x, 100 * r.claimed) for x, r in zip(positions, rows, strict=True) if r.claimed is not None]
    if ticks:
        ax.scatter(*zip(*ticks, strict=True), marker="_", s=400, color="black", label="seed's claim", zorder=3)
        ax.legend(loc="lower right")
    ax.set_xticks(positions, [r.id for r in rows], rotation=45, ha="right")
    ax.set(ylim=(0, 100), ylabel="accuracy (%)", title=f"{title} (blue: full budget, grey: quick, red: below floor)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _interval_pp(entry: dict) -> str:
    low, high = entry.get("ci_low"), entry.get("ci_high")
    return "-" if low is None or high is None else f"[{100 * low:+.2f}, {100 * high:+.2f}] pp"


def seed_main_effects(claimed: dict[str, float], arms: dict[str, dict], design: list[str]) -> dict[str, float]:
    """Main effects computed from the seed's cell means, as ours are from our cells (all cells need a claim)."""
    if not design or set(arms) - set(claimed):
        return {}
    effects = {}
    for factor in design:
        on = [claimed[c] for c, a in arms.items() if factor in a["factors"].split("+")]
        off = [claimed[c] for c, a in arms.items() if factor not in a["factors"].split("+")]
        effects[factor] = float(np.mean(on) - np.mean(off))
    return effects


def _study_checks(params: Params, study_id: str, kind: FloorSection, found: dict) -> list[FloorCheck]:
    arms = [(arm, "mean fold accuracy", entry["mean"]) for arm, entry in found.get("arms", {}).items()]
    return _checks(params, kind, study_id, found.get("budget"), arms)


def _arms_table(found: dict, claimed: dict[str, float], checks: list[FloorCheck]) -> list[str]:
    header = ["arm", "seed's mean", "ours: mean ± std", "95% CI", "difference", "quick floor"]
    lines = [table_row(header), "|" + "---|" * len(header)]
    for arm, entry in found["arms"].items():
        seed_mean = claimed.get(arm)
        spread = "" if entry.get("std") is None else f" ± {100 * entry['std']:.2f}"
        interval = (
            "-" if entry.get("ci_low") is None else f"[{_percent(entry['ci_low'])}, {_percent(entry['ci_high'])}]"
        )
        comparable = seed_mean is not None and found["budget"] == "full"  # the quick budget runs other data
        difference = round(100 * (entry["mean"] - seed_mean), 2) if comparable else None
        lines.append(
            table_row([f"[{arm}] {entry['factors']}" if "factors" in entry else arm,
                  "-" if seed_mean is None else f"{seed_mean:.5f}", f"{_percent(entry['mean'])}{spread}", interval,
                  _signed(difference), floor_cell([c for c in checks if c.part == arm])])
        )  # fmt: skip
    return lines


def _comparison_lines(found: dict, claimed: dict[str, float]) -> list[str]:
    lines = []
    for c in found.get("comparisons", {}).values():
        first, second = c["first"], c["second"]
        seed = ""
        if first in claimed and second in claimed:
            seed = f"; the seed's means differ by {100 * (claimed[second] - claimed[first]):+.2f} pp"
        lines.append(
            f"- {second} vs {first}: {100 * c['mean_difference']:+.2f} pp {_interval_pp(c)}, paired t p = "
            f"{c['p_t']:.3g}, corrected t p = {c['p_t_corrected']:.3g}, Wilcoxon p = {c['p_wilcoxon']:.3g}, "
            f"d_z = {c['cohen_dz']:.2f}, better on {c['wins']} of {c['folds']} folds{seed}."
        )
    return lines


def _effect_lines(found: dict, claimed: dict[str, float]) -> list[str]:
    seed_effects = seed_main_effects(claimed, found["arms"], found.get("design", []))
    lines = []
    for term, e in found.get("effects", {}).items():
        if e["kind"] == "main":
            seed = f"; from the seed's cell means: {100 * seed_effects[term]:+.2f} pp" if term in seed_effects else ""
            lines.append(
                f"- main effect of {term}: {100 * e['effect']:+.2f} pp {_interval_pp(e)} (p = {e['p']:.3g}){seed}."
            )
    return lines


def _studies(params: Params) -> list[tuple[str, Literal["crossval", "ablation"]]]:
    """(id, kind) of every study; the kind names its params section and its metrics file."""
    return [*((i, "crossval") for i in params.crossval), *((i, "ablation") for i in params.ablation)]


def study_section(params: Params, claims: Claims, metrics_root: Path, measured_only: bool = False) -> str:
    """The studies' arms beside the seeds' means, their comparisons or main effects, and the seeds' notes."""
    studies = _studies(params)
    if measured_only:
        studies = [(i, kind) for i, kind in studies if (metrics_root / i / f"{kind}.json").is_file()]
    if not studies:
        return ""
    lines = ["## Cross-validation and ablation studies", ""]
    lines += [
        "Fold scores are accuracies on held-out folds of the training split. p-values are per comparison and per "
        "effect, not adjusted for multiple comparisons.",
        "",
    ]
    for study_id, kind in studies:
        claim = claims.studies.get(study_id)
        found = _read(metrics_root / study_id / f"{kind}.json")
        lines += [f"### {study_id} ({kind}{', seed ' + claim.seed if claim else ''})", ""]
        lines += [f"The seed: {claim.text}", ""] if claim else []
        if not found:
            lines += [f"Not run yet: `dvc repro {kind}@{study_id}` runs it.", ""]
            continue
        lines += [
            f"Ours: {found['model']} on {found['dataset']}, {found['k']} folds, {plural(found['epochs'], 'epoch')}, "
            f"{found['train_samples']:,} training images, budget `{found['budget']}`, device {found['device']}: "
            f"{found['trainings']} trainings, {found['train_seconds_all_folds']:.0f} s of training. "
            f"All tables: `reports/{study_id}/README.md`."
            + (
                " A quick-budget smoke run: the differences from the seed are left out."
                if found["budget"] != "full"
                else ""
            ),
            "",
        ]
        claimed = claim.arms if claim else {}
        checks = _study_checks(params, study_id, kind, found)
        lines += [*_arms_table(found, claimed, checks), "", *_comparison_lines(found, claimed)]
        lines += _effect_lines(found, claimed)
        lines += ["", claim.note, ""] if claim and claim.note else [""]
    return "\n".join(lines)


def _search_checks(params: Params, search_id: str, found: dict, trained: dict, tested: dict) -> list[FloorCheck]:
    """The best trial's validation accuracy (where it is the objective) and the retrained model's test accuracy."""
    results = [("retrained", "test accuracy", tested.get("test_accuracy"))]
    if found.get("objective") == "val_accuracy":
        results.insert(0, ("best trial", "validation accuracy", found["best_objective"]))
    # tune.json does not record its budget; the retrain of the same search (train.json) does
    budget = trained.get("budget") or params.search_budget(search_id)
    return _checks(params, "tune", search_id, budget, results)


def search_section(params: Params, rows: list[Row], metrics_root: Path) -> str:
    """Each search's best model, retrained and tested, beside the best test accuracy the seeds claim on its data."""
    if not params.tune:
        return ""
    header = ["search", "data set", "tuner", "trials (failed)", "best validation", "parameters", "test accuracy",
              "quick floor", "best seed claim on the data", "trial hours", "budget", "device"]  # fmt: skip
    lines = []
    for search_id, search in params.tune.items():
        found = _read(metrics_root / search_id / "tune.json")
        tested = _read(metrics_root / search_id / "evaluate.json")
        checks = _search_checks(params, search_id, found, _read(metrics_root / search_id / "train.json"), tested)
        same_data = [r for r in rows if r.claimed is not None and r.metric == "test_accuracy"
                     and params.recipe(r.id).dataset == search.dataset]  # fmt: skip
        top = max(same_data, key=lambda r: r.claimed or 0.0, default=None)
        if not found:
            lines.append([search_id, search.dataset, search.tuner, "not run yet", *["-"] * 8])
            continue
        lines.append([
            search_id, search.dataset, search.tuner, f"{found['trials']} ({found['failed']})",
            f"{found['best_objective']:.4f} {found['objective']}", _count(found["best_params"]),
            _percent(tested.get("test_accuracy")), floor_cell(checks),
            f"{_percent(top.claimed)} ({top.id})" if top else "-",
            f"{found['trial_hours']:.2f}", params.search_budget(search_id), found["device"],
        ])  # fmt: skip
    intro = (
        "Keras Tuner searches (`dvc repro tune@<id>`): trials are scored on a held-out part of the training "
        "split; the best is retrained on the whole training split (`retrain@<id>`) and tested once "
        "(`evaluate_tuned@<id>`). Every trial is a run in MLflow under its search's run."
    )
    return table_section("Hyperparameter searches", intro, header, lines)


def table_section(title: str, intro: str, header: list[str], lines: list[list[str]]) -> str:
    return "\n".join([f"## {title}", "", intro, "", markdown_table(header, lines), ""])


def _transfer_checks(params: Params, transfer_id: str, train: dict, tested: dict) -> list[FloorCheck]:
    results = [("", "test accuracy", tested.get("test_accuracy"))]
    return _checks(params, "finetune", transfer_id, train.get("budget"), results)


def transfer_section(params: Params, claims: Claims, rows: list[Row], metrics_root: Path) -> str:
    """Each transfer recipe the pipeline ran, beside the from-scratch experiments on the same data and the seeds'
    figures (which are for the seeds' own backbone)."""
    if not params.finetune.run:
        return ""
    header = ["id", "network", "mode", "data set", "train images", "epochs", "validation acc.", "test acc.",
              "quick floor", "seed claims", "train time", "budget", "device"]  # fmt: skip
    lines, datasets = [], set()
    for transfer_id in params.finetune.run:
        recipe = params.finetune.recipes[transfer_id]
        datasets.add(recipe.dataset)
        train, tested = (
            _read(metrics_root / transfer_id / "train.json"),
            _read(metrics_root / transfer_id / "evaluate.json"),
        )
        claim = claims.transfer.get(transfer_id)
        weights = recipe.backbone.weights if recipe.backbone.weights in (None, "imagenet") else "file"
        lines.append([
            f"**{transfer_id}**", f"{recipe.backbone.name} ({weights})", recipe.mode, recipe.dataset,
            _count(train.get("train_samples")), str(train.get("epochs_run", "-")), _percent(train.get("val_accuracy")),
            _percent(tested.get("test_accuracy")), floor_cell(_transfer_checks(params, transfer_id, train, tested)),
            f"{claim.text} ({claim.seed})" if claim else "-",
            f"{train['train_seconds']:.0f} s" if train else "not run yet",
            train.get("budget", "-"), train.get("device", "-"),
        ])  # fmt: skip
    for r in rows:
        if params.recipe(r.id).dataset in datasets:
            recipe = params.recipe(r.id)
            lines.append([
                r.id, recipe.model, "from scratch", recipe.dataset, _count(r.train_samples), r.epochs.split("/")[-1],
                _percent(r.measured if r.metric == "val_accuracy" else None), _percent(r.test_accuracy),
                floor_cell(_row_checks(r)), f"{r.claim_text} ({r.seed})",
                "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s", r.budget, r.device,
            ])  # fmt: skip
    intro = (
        "Transfer learning (`dvc repro finetune@<id>`, then `evaluate_finetuned@<id>`), beside the networks "
        "trained from scratch on the same data. The seeds' figures are for their own backbone (VGG16 on cats "
        "vs dogs); ours is the backbone named in the table."
    )
    return table_section("Transfer learning", intro, header, lines)


def floor_checks(params: Params, rows: list[Row], metrics_root: Path) -> list[FloorCheck]:
    """Every quick-budget result the report shows, held to its floor: experiments (`rows`), study arms and
    cells, searches and the transfer recipes the pipeline runs."""
    checks = [c for r in rows for c in _row_checks(r)]
    for study_id, kind in _studies(params):
        checks += _study_checks(params, study_id, kind, _read(metrics_root / study_id / f"{kind}.json"))
    for search_id in params.tune:
        found, trained, tested = (_read(metrics_root / search_id / f"{n}.json") for n in ("tune", "train", "evaluate"))
        checks += _search_checks(params, search_id, found, trained, tested)
    for transfer_id in params.finetune.run:
        train, tested = (_read(metrics_root / transfer_id / f"{n}.json") for n in ("train", "evaluate"))
        checks += _transfer_checks(params, transfer_id, train, tested)
    return checks


def floor_section(checks: list[FloorCheck]) -> str:
    """The quick-budget results below their floors, in one list (each table marks its own too)."""
    measured = [c for c in checks if c.value is not None]
    if not measured:
        return ""
    below = [c for c in measured if c.below]
    held = f"{plural(len(measured), 'quick-budget result')} held to their floors (`quick_floors` in params.yaml)"
    verdict = f"{len(below)} {'falls' if len(below) == 1 else 'fall'} below." if below else "all reach them."
    lines = ["## Quick-budget floors", "", f"{held}: {verdict}"]
    lines += ["", *(f"- **{c}**" for c in below)] if below else []
    return "\n".join(lines) + "\n"


def floor_metrics(checks: list[FloorCheck]) -> dict[str, float]:
    """For the report's MLflow run: how many quick-budget results were held to a floor, and how many fell below."""
    measured = [c for c in checks if c.value is not None]
    return {"quick_floor.checked": len(measured), "quick_floor.below": sum(c.below for c in measured)}
