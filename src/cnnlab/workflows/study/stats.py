"""Statistics over fold scores that a reviewer would accept.

- Per arm: mean, standard deviation (n-1) and a 95% t confidence interval over the k folds.
- Paired comparison of two arms over the same folds: the mean difference with its t interval, the paired
  t-test, the Wilcoxon signed-rank test, Cohen's d_z (mean difference / its standard deviation) and how
  many folds the second arm won. k-fold training sets overlap, so fold scores are not independent and the
  plain paired t-test is too liberal (Dietterich 1998); `p_t_corrected` is the Nadeau-Bengio corrected
  resampled t-test, which inflates the variance by (1/k + n_val/n_train) = (1/k + 1/(k-1)).
  With 5 folds the exact two-sided Wilcoxon p-value cannot go below 0.0625.
- Factorial effects: all cells share the folds, so every fold is a complete replicate (a block) of the
  design. Each effect is computed within each fold and its mean, t interval and p-value taken over the
  folds. A main effect is mean(cells with the factor on) - mean(cells with it off); a two-way interaction
  A:B is mean(cells where A and B are both on or both off) - mean(cells where exactly one is on), i.e.
  half of (A's effect with B on - A's effect with B off), as in Montgomery's 2^k designs.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
NO_SPREAD = 1e-12  # a standard deviation below this is rounding: the scores are identical, tests are undefined


def interval(values: np.ndarray | list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, standard deviation, low, high) of the mean's t confidence interval; NaN spread for one value."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan"), float("nan")
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * std / np.sqrt(len(values))
    return mean, std, mean - half, mean + half


def summarize(table: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per arm (in the table's order): folds, mean, std, 95% CI, min and max of `metric`."""
    rows = []
    for arm, group in table.groupby("arm", sort=False):
        mean, std, low, high = interval(group[metric])
        rows.append(
            {"arm": arm, "folds": len(group), "mean": mean, "std": std, "ci_low": low, "ci_high": high,
             "min": float(group[metric].min()), "max": float(group[metric].max())}
        )  # fmt: skip
    return pd.DataFrame(rows)


def paired_comparison(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    """`second` against `first`, fold by fold (positive differences favour `second`)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    diff = second - first
    k = len(diff)
    mean, std, low, high = interval(diff)
    t_stat, p_t = stats.ttest_rel(second, first) if k > 1 and std > NO_SPREAD else (np.nan, np.nan)
    corrected = mean / np.sqrt((1 / k + 1 / (k - 1)) * std**2) if k > 1 and std > NO_SPREAD else np.nan
    p_corrected = float(2 * stats.t.sf(abs(corrected), k - 1)) if np.isfinite(corrected) else np.nan
    if np.any(diff != 0):
        w_stat, p_w = stats.wilcoxon(second, first)
    else:
        w_stat, p_w = np.nan, 1.0  # identical on every fold: no evidence of a difference
    return {
        "mean_difference": mean,
        "ci_low": low,
        "ci_high": high,
        "t": float(t_stat),
        "p_t": float(p_t),
        "p_t_corrected": p_corrected,
        "wilcoxon_w": float(w_stat),
        "p_wilcoxon": float(p_w),
        "cohen_dz": mean / std if std > NO_SPREAD else np.nan,
        "wins": int((diff > 0).sum()),
        "folds": k,
    }


def by_fold(table: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """Folds as rows, arms as columns (in the table's order)."""
    arms = list(dict.fromkeys(table["arm"]))
    return table.pivot(index="fold", columns="arm", values=metric)[arms]


def paired_comparisons(table: pd.DataFrame, metric: str = "val_accuracy") -> pd.DataFrame:
    """Every pair of arms over the same folds: `second` against `first`, in the table's arm order."""
    wide = by_fold(table, metric)
    rows = [
        {"first": a, "second": b, **paired_comparison(wide[a].to_numpy(), wide[b].to_numpy())}
        for a, b in combinations(wide.columns, 2)
    ]
    return pd.DataFrame(rows)


def factorial_effects(
    table: pd.DataFrame, cells: dict[str, list[str]], design: list[str], metric: str = "val_accuracy"
) -> pd.DataFrame:
    """Main effects and two-way interactions of a 2^n design whose cells were all scored on the same folds."""
    wide = by_fold(table, metric)
    missing = set(cells) - set(wide.columns)
    if missing:
        raise ValueError(f"cells without scores: {', '.join(sorted(missing))}")
    signs = {f: np.array([1 if f in cells[c] else -1 for c in wide.columns]) for f in design}
    terms = [(f, "main", signs[f]) for f in design]
    terms += [(f"{a}:{b}", "interaction", signs[a] * signs[b]) for a, b in combinations(design, 2)]
    values = wide.to_numpy()
    rows = []
    for term, kind, sign in terms:
        per_fold = values[:, sign > 0].mean(axis=1) - values[:, sign < 0].mean(axis=1)
        mean, std, low, high = interval(per_fold)
        p = float(stats.ttest_1samp(per_fold, 0.0).pvalue) if len(per_fold) > 1 and std > NO_SPREAD else np.nan
        rows.append({"term": term, "kind": kind, "effect": mean, "std": std, "ci_low": low, "ci_high": high, "p": p})
    return pd.DataFrame(rows)
