"""What a report of stored results holds: the options that choose it
(:class:`ReportOptions`, the ``table``/``run`` flags) and, per source data set, the tables
they make (:class:`Report`); :mod:`mkdt_bench.report.formats` writes it out."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from mkdt_bench.report.tables import (
    Table,
    budget_tables,
    comparison_tables,
    paired_tables,
    relative_tables,
)
from mkdt_bench.results import TEACHER_ROW


@dataclass(frozen=True)
class ReportOptions:
    """What a report shows: the comparison tables in ``layout`` (``methods``: the row
    order), with 95 % intervals (``ci``) of ``metric``; the differences from ``paired``,
    the relative scores (``relative``) and the costs (``budget_table``) besides; written in
    ``format`` (a name of :data:`mkdt_bench.report.formats.FORMATS`)."""

    format: str = "markdown"
    layout: str = "default"
    methods: list[str] | None = None
    ci: bool = False
    metric: str = "accuracy"
    paired: str | None = None
    relative: bool = False
    budget_table: bool = False


def report_tables(frame: pd.DataFrame, options: ReportOptions) -> list[Table]:
    """The tables of ``frame``: the comparison in ``options.layout`` (plus the methods x
    encoders tables when the default layout meets several encoders), then the paired
    differences, the relative scores and the costs where asked."""
    tables = comparison_tables(frame, options.layout, options.methods, options.ci,
                               options.metric)
    encoders = (set(frame.loc[frame["method"] != TEACHER_ROW, "arch"]) if not frame.empty
                else set())
    if options.layout == "default" and len(encoders) > 1:
        tables += comparison_tables(frame, "arch", options.methods, options.ci, options.metric)
    if options.paired:
        tables += paired_tables(frame, options.paired, options.methods, options.metric)
    if options.relative:
        tables += relative_tables(frame, options.methods, options.metric)
    if options.budget_table:
        tables += budget_tables(frame, options.methods)
    return tables


class Report:
    """The stored rows ``frame`` as ``options`` shows them. ``sections``: the tables of
    each source data set, in the order the sources are stored (the same split for every
    format); ``headed``: the report covers a whole database, so a format that can names
    each source above its tables."""

    def __init__(self, frame: pd.DataFrame, options: ReportOptions, headed: bool = False
                 ) -> None:
        self.frame = frame
        self.options = options
        self.headed = headed

    @cached_property
    def sections(self) -> list[tuple[str, list[Table]]]:
        """``(source, tables)`` per source data set of :attr:`frame`."""
        return [(str(source), report_tables(rows, self.options))
                for source, rows in self.frame.groupby("dataset", sort=False)]


__all__ = ["Report", "ReportOptions", "report_tables"]
