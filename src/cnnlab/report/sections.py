"""The report's sections beyond the experiments' table: cross-validation and ablation studies, hyperparameter
searches and transfer learning, and every quick-budget result they show held to its floor."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from cnnlab.params import FloorSection, Params
from cnnlab.report.cells import _count, _percent, _signed
from cnnlab.report.claims import Claims
from cnnlab.report.floors import FloorCheck, _checks, floor_cell
from cnnlab.report.rows import Row, _read, _row_checks
from cnnlab.report.text import markdown_table, plural, table_row


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
            scratch = params.recipe(r.id)
            lines.append([
                r.id, scratch.model, "from scratch", scratch.dataset, _count(r.train_samples), r.epochs.split("/")[-1],
                _percent(r.measured if r.metric == "val_accuracy" else None), _percent(r.test_accuracy),
                floor_cell(_row_checks(r)), f"{r.claim_text} ({r.seed})" if not r.own else "-",
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
