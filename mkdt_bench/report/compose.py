"""A report of stored rows as text (what ``table``, ``run`` and ``eval`` print): the
:class:`~mkdt_bench.report.contents.Report` that :class:`ReportOptions` asks for, written
in its format, with the same split per source data set for every format."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.report.contents import Report, ReportOptions
from mkdt_bench.report.formats import FORMATS


def compose(frame: pd.DataFrame, options: ReportOptions, headed: bool = False) -> str:
    """``frame``'s report in ``options.format``; ``headed``: the rows are a whole
    database (``table``), so a format that can names each source above its tables."""
    return FORMATS.get(options.format)().write(Report(frame, options, headed))


def check_report_rows(options: ReportOptions, methods: list[str],
                      references: Mapping[str, str | None]) -> None:
    """Refuse ``--paired`` / ``--relative`` whose reference rows the grid's ``methods``
    do not compute (before anything runs, not after it). ``references``: each registered
    method's ``reference`` role (the relative score runs from ``low`` to ``high``)."""
    wanted = {f"--paired {options.paired}": [options.paired]} if options.paired else {}
    if options.relative:
        wanted["--relative"] = [name for role in ("low", "high")
                                for name, has in references.items() if has == role]
    for flag, labels in wanted.items():
        absent = [label for label in labels if label not in methods]
        if absent:
            raise UserError(f"{flag} needs {' and '.join(map(repr, absent))} among the methods "
                            f"({', '.join(methods)}); add it to --methods or drop {flag}")


__all__ = ["check_report_rows", "compose"]
