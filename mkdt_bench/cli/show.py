"""``mkdt-bench show``: a PNG grid of a distilled set's images."""

from __future__ import annotations

import argparse
from typing import Any

from mkdt_bench.cli.common import paths
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("show", help="a PNG grid of a distilled set's images: a set of the "
                                    "cache (--method, --seed) or a DistilledSet directory")
    p.add_argument("directory", nargs="?", metavar="DIR", help="DistilledSet directory "
                   "(instead of --method)")
    p.add_argument("--method", help="the method (or variant, mkdt[init=random]) whose "
                                    "stored set to show")
    p.add_argument("--seed", type=int, help="its seed (needed when several are stored)")
    p.add_argument("--budget", type=int, metavar="IMAGES",
                   help="its grid's budget (needed when several are stored)")
    p.add_argument("--out", required=True, help="image file to write: .png (or .pdf, .svg)")
    p.add_argument("--max-images", type=int, default=100, help="at most this many (100)")
    p.add_argument("--cache-dir", help="artifact cache (default $MKDT_BENCH_CACHE or "
                                       "~/.cache/mkdt-bench)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mkdt_bench.catalog import find_stored_set, set_directory
    from mkdt_bench.distilled import DistilledSet
    from mkdt_bench.report.figures import check_figure_out
    from mkdt_bench.report.set_images import set_title, show_set

    if (args.directory is None) == (args.method is None):
        raise UserError("show needs a DistilledSet directory or --method (with --seed and, "
                        "where several budgets are stored, --budget), not both")
    check_figure_out(args.out)
    if args.method:
        directory, manifest = find_stored_set(paths(args)[0], args.method, args.seed,
                                              args.budget)
        config = manifest.get("config", {})
    else:
        directory, config = set_directory(args.directory)
    seed, budget = config.get("seed", args.seed), config.get("budget", args.budget)
    distilled = DistilledSet.load(directory)
    title = set_title(distilled, args.method or distilled.method or directory.name, seed,
                      budget, args.max_images)
    print(show_set(distilled, args.out, title, args.max_images))
    return 0
