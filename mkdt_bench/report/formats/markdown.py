"""Markdown: each table under a caption line (``Table: ...``, pandoc's caption syntax)."""

from __future__ import annotations

from mkdt_bench.report.formats.base import FORMATS, TablesFormat
from mkdt_bench.report.tables import Table


@FORMATS.register("markdown")
class Markdown(TablesFormat):
    """Pipe tables with their captions; a ``## source`` heading above each source's tables
    when the report covers a whole database."""

    empty = "(no results)"

    def section(self, source: str, tables: list[Table], headed: bool) -> str:
        body = super().section(source, tables, headed)
        return f"## {source}\n\n{body}" if headed else body

    def tables(self, tables: list[Table]) -> str:
        return "\n\n".join(f"Table: {t.caption}\n\n{t.cells.to_markdown()}" for t in tables)
