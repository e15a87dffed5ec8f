"""What a report format is (:class:`TableFormat`) and the registry of formats."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from mkdt_bench.registry import Registry
from mkdt_bench.report.contents import Report
from mkdt_bench.report.tables import Table


class TableFormat(ABC):
    """A way to write a :class:`~mkdt_bench.report.contents.Report` as text."""

    @abstractmethod
    def write(self, report: Report) -> str:
        """The whole report."""


class TablesFormat(TableFormat):
    """A format of rendered tables: each source's tables (:meth:`tables`) one after the
    other, :attr:`empty` where there are none."""

    #: The text of a report, or of one source, without tables.
    empty: ClassVar[str] = ""

    def write(self, report: Report) -> str:
        parts = [self.section(source, tables, report.headed)
                 for source, tables in report.sections]
        return "\n\n".join(parts) if parts else self.empty

    def section(self, source: str, tables: list[Table], headed: bool) -> str:
        """The tables of one source data set (``headed``: the report covers a database)."""
        return self.tables(tables) if tables else self.empty

    @abstractmethod
    def tables(self, tables: list[Table]) -> str:
        """Non-empty ``tables`` one after the other."""


#: Report formats by name (``table --format``).
FORMATS: Registry[type[TableFormat]] = Registry("table format", base=TableFormat)

__all__ = ["FORMATS", "TableFormat", "TablesFormat"]
