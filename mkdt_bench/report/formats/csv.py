"""CSV: one tidy table of the whole report, a row per cell group, numeric columns, nothing
pooled (``pandas.read_csv`` reads it as is)."""

from __future__ import annotations

import pandas as pd

from mkdt_bench.report.contents import Report
from mkdt_bench.report.facets import GROUP
from mkdt_bench.report.formats.base import FORMATS, TableFormat
from mkdt_bench.report.groups import COSTS, cell_groups
from mkdt_bench.report.stats import paired_differences, relative_scores


def tidy_table(frame: pd.DataFrame, metric: str = "accuracy", paired: str | None = None,
               costs: bool = False, relative: bool = False) -> pd.DataFrame:
    """The CSV: one row per cell group, numeric columns, nothing pooled; with ``paired``
    the difference from that baseline and its p-value, with ``costs`` the budget columns,
    with ``relative`` the share of the high - low reference gap and its interval."""
    columns = ["method", "variant", "set_images", "budget_images", "budget_percent", "source",
               "source_images", "teacher", "teacher_desc", "encoder", "evaluator", "task",
               "label_fraction", "metric", "mean", "std", "n", "seeds", "ci_low", "ci_high",
               "status", "note", "setup", "uses_labels"]
    groups = cell_groups(frame, metric) if not frame.empty else pd.DataFrame(
        columns=[*GROUP, *columns])
    if paired and not groups.empty:
        diffs = paired_differences(frame, paired, metric)
        groups = groups.merge(diffs, on=GROUP, how="left")
        columns += ["baseline", "diff_mean", "diff_std", "n_pairs", "p_value"]
    if relative and not groups.empty:
        groups = groups.merge(relative_scores(frame, metric=metric), on=GROUP, how="left")
        columns += ["relative", "relative_low", "relative_high", "relative_pairs"]
    if costs:
        columns += list(COSTS)
    tidy = groups.rename(columns={"budget": "budget_images", "fraction": "label_fraction"})
    return tidy.reindex(columns=columns)


@FORMATS.register("csv")
class Csv(TableFormat):
    """The tidy table of every stored row at once (the sources are a column)."""

    def write(self, report: Report) -> str:
        options = report.options
        return tidy_table(report.frame, options.metric, options.paired, options.budget_table,
                          options.relative).to_csv(index=False).rstrip("\n")
