"""``mkdt-bench results ingest``: store the rows a run could not store (its spill files)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mkdt_bench.cli.common import UNSTORED, add_store_args, paths, report_unstored
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("results", help="store the result rows that a run could not store "
                                       "(kept in spill files)")
    p.add_argument("action", choices=["ingest"], help="ingest: store the rows of spill files "
                   "(default: the database's own, beside it or in <cache>/unstored/) and "
                   "remove the files")
    p.add_argument("files", nargs="*", metavar="FILE", help="spill files (JSON lines) to store")
    add_store_args(p)
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    """``results ingest``: store the rows of spill files (every file checked first, a bad
    one refused before anything is written) and remove the files; exit 3 when the database
    still does not take them."""
    from mkdt_bench.results import ResultStore, find_spills, read_spill

    cache_dir, db = paths(args)
    files = [Path(f).expanduser() for f in args.files]
    for path in files:
        if not path.is_file():
            raise UserError(f"spill file {str(path)!r} does not exist (or is not a file)")
    files = files or find_spills(db, cache_dir)
    if not files:
        print(f"no spill files of {db} (beside it or in {cache_dir / 'unstored'})")
        return 0
    for path in files:
        read_spill(path)
    store = ResultStore(db, spill_dir=cache_dir)
    try:
        n = store.keep_files(files)
        store.flush()
    finally:
        store.close()
    if report_unstored(store):
        return UNSTORED
    print(f"{n} result rows of {len(files)} spill file{'s' if len(files) != 1 else ''} read, "
          f"{store.written} stored in {db} (the others it holds already, or a newer row of "
          "their cell); the files are removed")
    return 0
