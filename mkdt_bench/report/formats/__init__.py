"""The formats a report is written in, by name (``--format``): one file each, registered in
:data:`FORMATS`; a new format is one file here plus its import below."""

from __future__ import annotations

from mkdt_bench.report.formats import csv, latex, markdown  # noqa: F401 - they register
from mkdt_bench.report.formats.base import FORMATS, TableFormat, TablesFormat

__all__ = ["FORMATS", "TableFormat", "TablesFormat"]
