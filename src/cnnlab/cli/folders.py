"""What `cnnlab check` and `cnnlab add-data` print about a user's image folders: classes, images per split, what
will be skipped or converted and why, and the problems to fix before any stage runs."""

from __future__ import annotations

import sys
from pathlib import Path

from cnnlab.data.survey import Survey, survey
from cnnlab.params import CustomDataset, Params
from cnnlab.report.claims import Claims

SHOWN = 10  # skipped files listed one by one; the rest are counted


def _per_class(classes: list[str], counts: list[int]) -> str:
    pairs = [f"{cls} {n}" for cls, n in zip(classes, counts, strict=True)]
    return ", ".join(pairs[:SHOWN]) + (f", ... ({len(pairs) - SHOWN} more classes)" if len(pairs) > SHOWN else "")


def survey_lines(found: Survey) -> list[str]:
    """The survey of one data set as indented lines; its errors last, each with its fix."""
    classes = ", ".join(found.classes[:SHOWN]) + (" ..." if len(found.classes) > SHOWN else "")
    lines = [f"  {found.name}: {found.source} ({found.layout or 'layout unknown'})"]
    if found.classes:
        lines.append(f"    {len(found.classes)} classes: {classes}")
    for split, counts in found.counts.items():
        lines.append(f"    {split:5} {sum(counts):6,} images ({_per_class(found.classes, counts)})")
    for change, n in sorted(found.converted().items()):
        lines.append(f"    {n:,} image(s) will be converted {change} (channels: {found.channels})")
    if found.skipped:
        lines.append(f"    {len(found.skipped):,} file(s) will be skipped:")
        lines += [f"      {entry['file']}: {entry['reason']}" for entry in found.skipped[:SHOWN]]
        if len(found.skipped) > SHOWN:
            lines.append(f"      ... and {len(found.skipped) - SHOWN:,} more (meta.json lists all after preprocess)")
    if found.ignored:
        shown = ", ".join(found.ignored[:3]) + (" ..." if len(found.ignored) > 3 else "")
        lines.append(f"    {len(found.ignored):,} file(s) ignored, not images: {shown}")
    lines += [f"    error: {error}" for error in found.errors]
    return lines


def located(custom: CustomDataset, root: Path) -> CustomDataset:
    """The data set with its path as the stages see it: relative paths are relative to the project root."""
    return custom if custom.path.is_absolute() else custom.model_copy(update={"path": root / custom.path})


def check_own_data(params: Params, claims: Claims, root: Path) -> int:
    """Print every declared folder of your own images and the experiments without a claim; 2 if a folder has
    errors (the pipeline would fail on it), else 0."""
    own = [exp_id for exp_id in params.experiments if exp_id not in claims.experiments]
    if own:
        print(f"your experiments (no claim in claims.yaml; the report lists them apart): {', '.join(own)}")
    if not params.data.custom:
        return 0
    print("your data sets (file names and image headers checked, no image decoded):")
    errors = 0
    for name, custom in params.data.custom.items():
        found = survey(name, located(custom, root), params.data.limits)
        found.source = custom.path
        print("\n".join(survey_lines(found)))
        if name not in params.datasets:
            print(f"    note: {name} is not in `datasets`, so `dvc repro` does not prepare it")
        errors += len(found.errors)
    if errors:
        print(
            f"error: {errors} problem(s) in your data sets, listed above; fix them before `dvc repro`", file=sys.stderr
        )
        return 2
    return 0
