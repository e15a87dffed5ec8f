"""``mkdt-bench eval``: pre-train and evaluate encoders on a stored DistilledSet, like a
method's output (no teacher, no distillation)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mkdt_bench.cli.common import (
    add_grid_args,
    add_report_args,
    add_store_args,
    check_lists_given,
    check_not_blank,
    check_out_file,
    check_overrides_read,
    check_threads,
    paths,
    print_tables,
    summary,
)
from mkdt_bench.errors import UserError


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a stored DistilledSet directory (no teacher, "
                                    "no distillation) and print its table")
    add_store_args(p)
    p.add_argument("--distilled", required=True, metavar="DIR",
                   help="directory with images.pt, targets.pt, distilled.json [, lr.pt]")
    p.add_argument("--name", help="method name in the tables (default: import:<DIR name>); "
                   "not a method's name, nor that of another set's stored rows")
    p.add_argument("--preset", help="shipped preset name or a .toml path whose pre-training "
                   "([pretrain]), evaluators and archs, fractions, seeds and tasks apply, as in "
                   "run (default: none, the built-in settings): give the preset of the grid "
                   "the set is compared with")
    add_grid_args(p, dataset="the data the set was distilled from (default: the set's own "
                  "source)", archs="encoders to pre-train (default convnet)",
                  set="override pretrain/evaluator options")
    add_report_args(p, comparisons=False)
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    """Pre-train and evaluate encoders on a stored DistilledSet, like a method's output
    (:func:`mkdt_bench.api.evaluate_set`)."""
    from mkdt_bench import api
    from mkdt_bench.config import build_config
    from mkdt_bench.distilled import DistilledSet
    from mkdt_bench.pipeline.planner import check_set_name

    directory = Path(args.distilled).expanduser()
    if not directory.is_dir():
        raise UserError(f"distilled set directory {str(directory)!r} "
                        f"{'is not a directory' if directory.exists() else 'does not exist'}")
    check_lists_given(args, ("archs", "fractions", "seeds", "tasks", "evaluators"))
    check_not_blank(args, ("name", "preset", "dataset", "data_root"))
    check_threads(args)
    check_out_file(args)
    name = args.name or f"import:{directory.resolve().name}"
    check_set_name(name)
    dataset = args.dataset or DistilledSet.load(directory).source
    flags = {"dataset": dataset, "archs": args.archs, "fractions": args.fractions,
             "seeds": args.seeds, "tasks": args.tasks, "evaluators": args.evaluators,
             "device": args.device, "data_root": args.data_root, "teacher_row": False}
    cfg = build_config(args.preset, flags, list(args.overrides))
    check_overrides_read(list(args.overrides), cfg.to_dict(), flags, methods=False)
    cache_dir, db = paths(args)
    result = api.evaluate_set(directory, cfg, name=name, cache_dir=cache_dir, results_db=db,
                              threads=args.threads, progress=not args.no_progress,
                              preset=args.preset)
    print_tables(result.frame, [name], args)
    return summary(result.frame, result.seconds, db, result.store)
