"""Statistics over cell groups: t-intervals of a mean, paired differences between sets on
shared seeds, DD-Ranking-style relative scores with Fieller intervals, and the test that
marks a column's best value. Groups are never pooled (:mod:`mkdt_bench.report.facets`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.report.facets import GROUP, reference_labels, row_facets
from mkdt_bench.results import OK, TEACHER_ROW

#: Where two cell groups may be paired seed by seed: everything of :data:`GROUP` but the
#: set (its label, size and set-up).
_POSITION = ["source", "teacher", "budget", "encoder", "evaluator", "task", "fraction",
             "eval_setup"]


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean (sample std, n - 1 degrees of freedom),
    clipped to [0, 100] (the metrics are percentages)."""
    from scipy.stats import t

    n = len(values)
    half = t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return (float(np.clip(values.mean() - half, 0, 100)),
            float(np.clip(values.mean() + half, 0, 100)))


def _ok_facets(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    return row_facets(frame[frame["status"] == OK], metric).dropna(subset=["value"])


def _reference(df: pd.DataFrame, label: str, role: str) -> pd.Series:
    """``label``'s value per (position, seed): the seed-by-seed reference of ``role``."""
    if label not in set(df["label"]):
        raise UserError(f"no results for the {role} {label!r}; methods stored: "
                        f"{', '.join(sorted(set(df['label'])))}")
    rows = df[df["label"] == label]
    if rows.duplicated([*_POSITION, "seed"]).any():
        raise UserError(f"the {role} {label!r} has several set-ups at one position (options "
                        "or code changed between runs); choose one with --methods or a "
                        "separate --results-db")
    return rows.set_index([*_POSITION, "seed"])["value"]


def _groups_by_seed(df: pd.DataFrame, skip: list[str]) -> Iterator[tuple[tuple, pd.Series]]:
    """(GROUP key, values indexed by position and seed) of each group not in ``skip``."""
    for key, group in df[~df["label"].isin([*skip, TEACHER_ROW])].groupby(
            GROUP, sort=False, dropna=False):
        yield key, group.drop_duplicates("seed", keep="last").set_index(
            [*_POSITION, "seed"])["value"]


def paired_differences(frame: pd.DataFrame, baseline: str,
                       metric: str = "accuracy") -> pd.DataFrame:
    """Each cell group's per-seed difference from ``baseline``'s group at the same
    (source, teacher, budget, encoder, evaluator, task, fraction): columns ``baseline``,
    ``diff_mean`` (points), ``diff_std``, ``n_pairs`` and ``p_value`` (two-sided paired
    t-test, ``scipy.stats.ttest_rel``; NaN below two pairs or for identical differences),
    indexed by :data:`GROUP`. The baseline's own groups and the teacher have none."""
    from scipy.stats import ttest_rel

    df = _ok_facets(frame, metric)
    base = _reference(df, baseline, "paired baseline")
    out = []
    for key, values in _groups_by_seed(df, [baseline]):
        common = values.index.intersection(base.index)
        a, b = values.loc[common].to_numpy(float), base.loc[common].to_numpy(float)
        diff = a - b
        p = np.nan
        if len(diff) >= 2 and diff.std() > 0:
            p = float(ttest_rel(a, b).pvalue)
        out.append({**dict(zip(GROUP, key)), "baseline": baseline,
                    "diff_mean": diff.mean() if len(diff) else np.nan,
                    "diff_std": diff.std(ddof=0) if len(diff) else np.nan,
                    "n_pairs": len(diff), "p_value": p})
    return pd.DataFrame(out, columns=[*GROUP, "baseline", "diff_mean", "diff_std", "n_pairs",
                                      "p_value"])


def fieller_interval(gain: np.ndarray, gap: np.ndarray,
                     level: float = 0.95) -> tuple[float, float]:
    """Fieller's interval for ``mean(gain) / mean(gap)`` from paired samples (sample
    covariance, n - 1 degrees of freedom); ``(nan, nan)`` where the interval is unbounded,
    i.e. ``mean(gap)`` is not separated from zero at ``level``. Fieller (1954), J. R. Stat.
    Soc. B 16, 175-185."""
    from scipy.stats import t

    n = len(gain)
    if n < 2:
        return (np.nan, np.nan)
    q = t.ppf(0.5 + level / 2, n - 1) ** 2
    cov = np.cov(np.vstack([gain, gap]), ddof=1) / n
    a, b = gain.mean(), gap.mean()
    quad = b * b - q * cov[1, 1]
    if quad <= 0:
        return (np.nan, np.nan)
    half = b * a - q * cov[0, 1]
    root = np.sqrt(max(half * half - quad * (a * a - q * cov[0, 0]), 0.0))
    return (float((half - root) / quad), float((half + root) / quad))


#: What the two reference rows of a relative score are (``Method.reference``).
_MARKS = {"low": "a random subset of the budget's size, 0 %",
          "high": "every training image of the pool, 100 %"}


def relative_marks(facets: pd.DataFrame) -> tuple[str, str]:
    """The labels of the ``low`` and ``high`` reference rows a relative score runs between
    (``Method.reference``; a variant only where its plain method is not stored); a UserError
    where either is missing or ambiguous."""
    marks = []
    for role in ("low", "high"):
        labels = reference_labels(facets, role)
        plain = [label for label in labels if "[" not in label]
        labels = plain or labels
        if len(labels) != 1:
            stored = ", ".join(sorted(set(facets["label"])))
            raise UserError(f"the relative score needs the rows of one {role!r} reference "
                            f"({_MARKS[role]}); {'none' if not labels else ', '.join(labels)} "
                            f"stored; methods stored: {stored}")
        marks.append(labels[0])
    return marks[0], marks[1]


def relative_scores(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Each cell group's gain over the ``low`` reference row as a share of the ``high`` -
    ``low`` gap at the same position (DD-Ranking style: 0 % = low, 100 % = high), over the
    seeds the three share: ``relative`` = 100 mean(set - low) / mean(high - low), its 95 %
    Fieller interval ``relative_low``/``relative_high`` (NaN where the gap is not separated
    from zero or below two seeds) and ``relative_pairs``; indexed by :data:`GROUP`. The
    teacher has none; the two references get 0 and 100 on their shared seeds."""
    df = _ok_facets(frame, metric)
    low, high = relative_marks(df)
    base = _reference(df, low, "relative score's lower reference")
    top = _reference(df, high, "relative score's upper reference")
    out = []
    for key, values in _groups_by_seed(df, []):
        common = values.index.intersection(base.index).intersection(top.index)
        gain = values.loc[common].to_numpy(float) - base.loc[common].to_numpy(float)
        gap = top.loc[common].to_numpy(float) - base.loc[common].to_numpy(float)
        score, lo, hi = np.nan, np.nan, np.nan
        if len(common) and gap.mean() != 0:
            score = 100 * gain.mean() / gap.mean()
            lo, hi = (100 * v for v in fieller_interval(gain, gap))
        out.append({**dict(zip(GROUP, key)), "relative": score, "relative_low": lo,
                    "relative_high": hi, "relative_pairs": len(common)})
    return pd.DataFrame(out, columns=[*GROUP, "relative", "relative_low", "relative_high",
                                      "relative_pairs"])


def significantly_best(facets: pd.DataFrame, candidates: pd.DataFrame,
                       alpha: float = 0.05) -> set[tuple]:
    """Keys (:data:`GROUP`) of the groups among ``candidates`` (cell groups of one column)
    whose mean is the highest and whose per-seed values (``facets``: :func:`row_facets`)
    differ from the runner-up's by a paired t-test at ``alpha`` (over the seeds both have;
    no mark below two pairs)."""
    from scipy.stats import ttest_rel

    ranked = candidates[candidates["status"] == OK].sort_values("mean", ascending=False)
    if len(ranked) < 2:
        return set()
    df = facets[(facets["status"] == OK) & facets["value"].notna()]
    best, second = (tuple(ranked.iloc[i][GROUP]) for i in (0, 1))

    def seeds(key: tuple) -> pd.Series:
        mask = np.logical_and.reduce([(df[c] == v) for c, v in zip(GROUP, key)])
        return df[mask].drop_duplicates("seed", keep="last").set_index("seed")["value"]

    a, b = seeds(best), seeds(second)
    common = a.index.intersection(b.index)
    if len(common) < 2 or (a[common] - b[common]).std() == 0:
        return set()
    if ttest_rel(a[common], b[common]).pvalue < alpha and ranked.iloc[0]["mean"] > \
            ranked.iloc[1]["mean"]:
        return {best}
    return set()


__all__ = ["confidence_interval", "fieller_interval", "paired_differences", "relative_marks",
           "relative_scores", "significantly_best"]
