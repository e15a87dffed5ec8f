"""``mkdt-bench table``: stored results as tables."""

from __future__ import annotations

import argparse
from typing import Any

from mkdt_bench.cli.common import (
    add_report_args,
    add_store_args,
    check_out_file,
    method_labels,
    note_spills,
    paths,
    print_tables,
)
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("table", help="render stored results as a table")
    add_store_args(p)
    p.add_argument("--dataset", help="only this source data set")
    p.add_argument("--methods", type=method_labels, help="only these methods (rows)")
    add_report_args(p)
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mkdt_bench.report.select import table_rows
    from mkdt_bench.results import ResultStore

    cache_dir, db = paths(args)
    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; run `mkdt-bench run` "
                        "first or pass --results-db")
    check_out_file(args)
    frame = ResultStore.read_only(db).frame()
    note_spills(db, cache_dir)
    frame = table_rows(frame, args.dataset, args.methods, str(db))
    print_tables(frame, args.methods, args, headed=True)
    return 0
