"""The reproduction report: what each seed claims (claims.yaml) beside what the pipeline measured (metrics/<id>/).

Every measured number comes from the metrics files the train and evaluate stages wrote; the
only numbers in claims.yaml are the seeds' own.
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

from cnnlab.config import Params, ParamsError, Strict
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
        return Claims.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path} is not valid: {exc}") from None


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


def markdown(rows: list[Row], claims: Claims, title: str, preface: str = "", sections: tuple[str, ...] = ()) -> str:
    header = [
        "id",
        "seed",
        "seed claims",
        "metric",
        "measured",
        "test acc.",
        "difference",
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
            *(_percent(r.test_accuracy), _signed(r.difference), r.budget, r.epochs, _count(r.train_samples)),
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
    fields = [*asdict(rows[0]), "difference"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "difference": row.difference})
    return buffer.getvalue()


def claims_chart(rows: list[Row], title: str, path: Path) -> Path:
    """Measured accuracy per experiment as bars, the seed's claim as a black tick (none where it is qualitative)."""
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    positions = np.arange(len(rows))
    heights = [np.nan if r.measured is None else 100 * r.measured for r in rows]
    colours = ["tab:blue" if r.budget == "full" else "tab:gray" for r in rows]
    ax.bar(positions, heights, color=colours, width=0.7)
    ticks = [(x, 100 * r.claimed) for x, r in zip(positions, rows, strict=True) if r.claimed is not None]
    if ticks:
        ax.scatter(*zip(*ticks, strict=True), marker="_", s=400, color="black", label="seed's claim", zorder=3)
        ax.legend(loc="lower right")
    ax.set_xticks(positions, [r.id for r in rows], rotation=45, ha="right")
    ax.set(ylim=(0, 100), ylabel="accuracy (%)", title=f"{title} (blue: full budget, grey: quick)")
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


def _arms_table(found: dict, claimed: dict[str, float]) -> list[str]:
    lines = [table_row(["arm", "seed's mean", "ours: mean ± std", "95% CI", "difference"]), "|---|---|---|---|---|"]
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
                  _signed(difference)])
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


def study_section(params: Params, claims: Claims, metrics_root: Path, measured_only: bool = False) -> str:
    """The studies' arms beside the seeds' means, their comparisons or main effects, and the seeds' notes."""
    studies = [(i, "crossval") for i in params.crossval] + [(i, "ablation") for i in params.ablation]
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
        lines += [*_arms_table(found, claimed), "", *_comparison_lines(found, claimed), *_effect_lines(found, claimed)]
        lines += ["", claim.note, ""] if claim and claim.note else [""]
    return "\n".join(lines)


def search_section(params: Params, rows: list[Row], metrics_root: Path) -> str:
    """Each search's best model, retrained and tested, beside the best test accuracy the seeds claim on its data."""
    if not params.tune:
        return ""
    header = ["search", "data set", "tuner", "trials (failed)", "best validation", "parameters", "test accuracy",
              "best seed claim on the data", "trial hours", "budget", "device"]  # fmt: skip
    lines = []
    for search_id, search in params.tune.items():
        found = _read(metrics_root / search_id / "tune.json")
        tested = _read(metrics_root / search_id / "evaluate.json")
        same_data = [r for r in rows if r.claimed is not None and r.metric == "test_accuracy"
                     and params.recipe(r.id).dataset == search.dataset]  # fmt: skip
        top = max(same_data, key=lambda r: r.claimed or 0.0, default=None)
        if not found:
            lines.append([search_id, search.dataset, search.tuner, "not run yet", *["-"] * 7])
            continue
        lines.append([
            search_id, search.dataset, search.tuner, f"{found['trials']} ({found['failed']})",
            f"{found['best_objective']:.4f} {found['objective']}", _count(found["best_params"]),
            _percent(tested.get("test_accuracy")), f"{_percent(top.claimed)} ({top.id})" if top else "-",
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


def transfer_section(params: Params, claims: Claims, rows: list[Row], metrics_root: Path) -> str:
    """Each transfer recipe the pipeline ran, beside the from-scratch experiments on the same data and the seeds'
    figures (which are for the seeds' own backbone)."""
    if not params.finetune.run:
        return ""
    header = ["id", "network", "mode", "data set", "train images", "epochs", "validation acc.", "test acc.",
              "seed claims", "train time", "budget", "device"]  # fmt: skip
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
            _percent(tested.get("test_accuracy")), f"{claim.text} ({claim.seed})" if claim else "-",
            f"{train['train_seconds']:.0f} s" if train else "not run yet",
            train.get("budget", "-"), train.get("device", "-"),
        ])  # fmt: skip
    for r in rows:
        if params.recipe(r.id).dataset in datasets:
            recipe = params.recipe(r.id)
            lines.append([
                r.id, recipe.model, "from scratch", recipe.dataset, _count(r.train_samples), r.epochs.split("/")[-1],
                _percent(r.measured if r.metric == "val_accuracy" else None), _percent(r.test_accuracy),
                f"{r.claim_text} ({r.seed})", "-" if r.train_seconds is None else f"{r.train_seconds:.0f} s",
                r.budget, r.device,
            ])  # fmt: skip
    intro = (
        "Transfer learning (`dvc repro finetune@<id>`, then `evaluate_finetuned@<id>`), beside the networks "
        "trained from scratch on the same data. The seeds' figures are for their own backbone (VGG16 on cats "
        "vs dogs); ours is the backbone named in the table."
    )
    return table_section("Transfer learning", intro, header, lines)
