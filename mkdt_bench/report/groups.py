"""Cell groups: a row per (source, teacher, budget, set, encoder, evaluator, task, label
fraction, set-up) with every number that a table, CSV or figure shows over its seeds, and
everything that says what it is (:data:`mkdt_bench.report.facets.GROUP`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mkdt_bench.report.facets import GROUP, row_facets
from mkdt_bench.report.stats import confidence_interval
from mkdt_bench.results import FAILED, MISSING, OK, TEACHER_ROW

#: The cost columns of a group (means over its rows' ``timings``).
COSTS = ("storage_bytes", "teacher_s", "teacher_peak_mib", "substages_s", "distill_s",
         "distill_peak_mib", "pretrain_steps", "pretrain_s", "evaluate_s")


def _status(group: pd.DataFrame) -> tuple[str, str]:
    """A group without a score: ``missing`` (with the absent path) or ``failed``."""
    missing = group.loc[group["status"] == MISSING, "error"]
    if len(missing):
        return MISSING, str(missing.iloc[-1]).removeprefix("missing: ")
    failed = group.loc[group["status"] == FAILED, "error"].dropna()
    return FAILED, str(failed.iloc[-1]) if len(failed) else ""


def cell_groups(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per cell group (:data:`GROUP`): ``mean``, ``std`` (population, as both
    papers report), ``n`` seeds, ``seeds``, ``ci_low``/``ci_high`` (95 % t-interval,
    clipped to [0, 100]; NaN below two seeds), ``status`` (ok, failed, missing) and
    ``note`` (the error or the missing path), plus the facets that describe it."""
    df = row_facets(frame, metric)
    out = []
    for key, group in df.groupby(GROUP, sort=False, dropna=False):
        ok = group[(group["status"] == OK) & group["value"].notna()]
        values = ok.drop_duplicates("seed", keep="last")["value"].to_numpy(float)
        first = group.iloc[0]
        record = dict(zip(GROUP, key))
        record.update(method=first["method_name"], variant=first["variant"],
                      reference=first["reference"], source_images=first["source_images"],
                      teacher_desc=first["teacher_desc"], uses_labels=first["uses_labels"],
                      pretrain_desc=first["pretrain_desc"], set_setup=first["set_setup"],
                      eval_setup=first["eval_setup"], set_parts=first["set_parts"],
                      eval_parts=first["eval_parts"], metric=metric, n=len(values),
                      seeds=",".join(str(s) for s in sorted(set(ok["seed"]))))
        if len(values):
            lo, hi = confidence_interval(values) if len(values) > 1 else (np.nan, np.nan)
            record.update(mean=values.mean(), std=values.std(ddof=0), ci_low=lo, ci_high=hi,
                          status=OK, note="")
        else:
            status, note = _status(group)
            record.update(mean=np.nan, std=np.nan, ci_low=np.nan, ci_high=np.nan,
                          status=status, note=note)
        costs = pd.DataFrame(list(ok["timings_dict"]) or [{}])
        record.update({c: float(costs[c].mean()) if c in costs else np.nan for c in COSTS})
        out.append(record)
    groups = pd.DataFrame(out)
    if not groups.empty:
        groups["budget_percent"] = 100 * groups["budget"] / groups["source_images"]
    return groups


def pretraining_note(frame: pd.DataFrame) -> str:
    """One line: whether every set of the same size got the same number of pre-training
    steps (the runner applies one pre-training config to all methods of a grid; sets of
    another size, such as the whole pool, get proportionally more or fewer). The teacher
    and the floor row (nothing pre-trained) are left out."""
    df = frame[(frame["status"] == OK) & (frame["method"] != TEACHER_ROW)]
    df = row_facets(df) if not df.empty else df
    df = df[df["reference"] != "floor"].copy() if not df.empty else df
    if df.empty:
        return ""
    df["steps"] = [t.get("pretrain_steps") for t in df["timings_dict"]]
    df = df.dropna(subset=["steps"])
    groups = sorted(df.groupby("set_images"), key=lambda kv: kv[0])
    unequal = [f"{int(n):,} images: {sorted(set(g['steps'].astype(int)))}"
               for n, g in groups if g["steps"].nunique() > 1]
    if unequal:
        return "pre-training steps differ between sets of one size: " + "; ".join(unequal)
    return "equal pre-training steps for every set of one size: " + ", ".join(
        f"{int(g['steps'].iloc[0]):,} steps for {int(n):,} images" for n, g in groups)


__all__ = ["COSTS", "cell_groups", "pretraining_note"]
