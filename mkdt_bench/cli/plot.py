"""``mkdt-bench plot``: figures of stored results."""

from __future__ import annotations

import argparse
from typing import Any

from mkdt_bench.cli.common import add_store_args, method_labels, paths
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    from mkdt_bench.results import METRICS

    p = sub.add_parser("plot", help="figures of stored results: accuracy versus label "
                                    "fraction (and versus set size over budgets, or "
                                    "versus a method option)")
    add_store_args(p)
    p.add_argument("--dataset", help="only this source data set")
    p.add_argument("--methods", type=method_labels, help="only these methods (rows)")
    p.add_argument("--budget", type=int, metavar="IMAGES",
                   help="only the grid of this budget (images)")
    p.add_argument("--arch", help="only this encoder")
    p.add_argument("--evaluator", help="only this evaluator")
    p.add_argument("--task", help="only this downstream task")
    p.add_argument("--teacher", metavar="KEY", help="only this teacher (cache key or "
                                                     "its first characters)")
    p.add_argument("--metric", default="accuracy", choices=METRICS)
    p.add_argument("--ci", action="store_true", help="error bars: 95%% t-interval of the "
                                                     "mean (default: population std)")
    p.add_argument("--versus", metavar="OPTION", help="accuracy against this numeric "
                   "method option instead (an ablation: e.g. iterations over rows "
                   "mkdt[iterations=50],mkdt,...; other sets as horizontal lines)")
    p.add_argument("--format", default="png", help="file type in an --out folder: png "
                   "(200 dpi), or vector pdf or svg")
    p.add_argument("--out", default="plots", help="folder for the figures (default plots), "
                   "or one file (.png, .pdf, .svg) when the selection makes one figure")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mkdt_bench.report.figures import check_figure_out, plot_results
    from mkdt_bench.report.select import RowFilter, select_rows
    from mkdt_bench.results import TEACHER_ROW, ResultStore

    _, db = paths(args)
    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; run a grid first")
    check_figure_out(args.out, args.format)
    frame = select_rows(ResultStore.read_only(db).frame(), RowFilter(
        dataset=args.dataset, methods=args.methods, budget=args.budget, arch=args.arch,
        evaluator=args.evaluator, task=args.task, teacher=args.teacher))
    if frame.empty or (frame["method"] == TEACHER_ROW).all():
        raise UserError(f"no result rows in {db} match --dataset/--methods/--budget/--arch/"
                        "--evaluator/--task/--teacher")
    for path in plot_results(frame, args.out, args.format, args.ci, args.metric, args.versus):
        print(path)
    return 0
