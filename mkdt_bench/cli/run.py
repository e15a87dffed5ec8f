"""``mkdt-bench run``: plan a grid (computing and writing nothing), print the plan
(``--dry-run``) or warn when it would take hours, run it, print its tables."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.cli.common import (
    EXECUTORS,
    QUICK,
    add_grid_args,
    add_report_args,
    add_store_args,
    check_lists_given,
    check_not_blank,
    check_out_file,
    check_overrides_read,
    check_report_rows,
    check_threads,
    csv_list,
    method_labels,
    paths,
    print_tables,
    summary,
)
from mkdt_bench.errors import UserError

if TYPE_CHECKING:
    from mkdt_bench.api import RunResult
    from mkdt_bench.config import BenchConfig


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a grid of methods and print the comparison table")
    add_store_args(p)
    p.add_argument("--preset", help="shipped preset name or a .toml path (default: quick when "
                                    "no --dataset is given)")
    add_grid_args(p, threads="torch CPU threads per unit (default 0: one per usable core, or "
                  "OMP_NUM_THREADS, in this process; in worker processes, the cores divided by "
                  "the workers)")
    p.add_argument("--methods", type=method_labels, help="comma-separated method names; a "
                   "variant with its own options is a row of its own: mkdt[init=random]")
    p.add_argument("--budget", help="images in each distilled set: a count or a percentage")
    p.add_argument("--teacher-checkpoint", help="load the teacher instead of training it")
    p.add_argument("--recompute", type=csv_list(), metavar="STAGE,...",
                   help="compute these stages of the grid again although they are stored: "
                        "teacher, pretrain, methods.NAME, evaluators.NAME (and whatever was "
                        "computed from them); each old artifact is replaced once its "
                        "successor is complete")
    add_report_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and "
                   "every step (cached or to compute, with its estimated time and memory "
                   "where the cache measured its like) and exit; computes and writes nothing")
    p.add_argument("--executor", default="auto", choices=EXECUTORS,
                   help="where units run: auto (default: worker processes on a CPU with "
                        "more than one core, else this process), inprocess, processes "
                        "(local workers, one per core), or ray (needs Ray: pip install -e "
                        "'.[ray]' in a checkout)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes of --executor auto/processes (default 0: the "
                        "usable cores divided by --threads)")
    p.add_argument("--ray-address", help="Ray cluster to join (e.g. auto or HOST:6379; "
                                         "default: start a local instance)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="Ray: reruns of a task whose worker or node died (default 2)")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    """Plan the grid (computing and writing nothing), then print the plan (``--dry-run``)
    or run it (:func:`mkdt_bench.api.run`) and print its tables."""
    from mkdt_bench import api
    from mkdt_bench.config import build_config
    from mkdt_bench.pipeline.executors import check_choice

    preset = args.preset or (QUICK if args.dataset is None else None)
    flags = {"dataset": args.dataset, "methods": args.methods, "budget": args.budget,
             "archs": args.archs, "fractions": args.fractions, "seeds": args.seeds,
             "tasks": args.tasks, "evaluators": args.evaluators, "device": args.device,
             "data_root": args.data_root}
    overrides = list(args.overrides)
    check_lists_given(args, ("methods", "archs", "fractions", "seeds", "tasks", "evaluators"))
    check_not_blank(args, ("preset", "dataset", "data_root", "ray_address", "recompute"))
    check_threads(args)
    check_choice(args.executor, args.workers, args.ray_address, args.retries)
    cfg = build_config(preset, flags, overrides)
    check_overrides_read(overrides, cfg.to_dict(), flags)
    if args.teacher_checkpoint is not None:  # the path as it is, not read as a TOML value
        checkpoint = Path(args.teacher_checkpoint).expanduser()
        if not checkpoint.is_file():
            raise UserError(f"teacher checkpoint {args.teacher_checkpoint!r} "
                            f"{'is not a file' if checkpoint.exists() else 'does not exist'}")
        cfg = replace(cfg, teacher=replace(cfg.teacher, checkpoint=args.teacher_checkpoint))
    check_out_file(args)
    check_report_rows(args, list(cfg.run.methods))
    cache_dir, db = paths(args)
    result = api.run(cfg, cache_dir=cache_dir, results_db=db, executor=args.executor,
                     workers=args.workers, threads=args.threads, ray_address=args.ray_address,
                     retries=args.retries, dry_run=args.dry_run, recompute=args.recompute or (),
                     progress=not args.no_progress, preset=preset)
    if args.dry_run:
        return print_dry_run(result, cfg, preset, cache_dir, db)
    print_tables(result.frame, list(cfg.run.methods), args)
    return summary(result.frame, result.seconds, db, result.store)


def print_dry_run(result: RunResult, cfg: BenchConfig, preset: str | None, cache_dir: Path,
                  db: Path) -> int:
    """What ``--dry-run`` prints: the resolved config, where the plan looked, and every
    step with its estimate (or why the steps are not listed), then the cost warning."""
    from mkdt_bench.cache import check_writable
    from mkdt_bench.pipeline.dryrun import render_config, render_plan

    grid = cfg.to_dict()
    print(f"# mkdt-bench run --dry-run: nothing is computed or written\n"
          f"# resolved configuration (defaults < preset {preset or '(none)'} < flags < "
          f"--set)\n\n{render_config(grid)}")
    kept = (f"; {result.kept} result rows kept in {' '.join(map(str, result.spills))} "
            "count as stored (the run stores them first)") if result.kept else ""
    print(f"# plan: cache {cache_dir}, results {db}"
          f"{'' if db.exists() else ' (does not exist yet)'}{kept}\n")
    try:
        check_writable(cache_dir)
    except UserError as e:
        print(f"# note: a run would stop here: {e}\n")
    if result.plan is None:
        print(f"{result.not_downloaded}; the steps depend on the data, so they are not listed")
        return 0
    print(render_plan(result.plan, result.estimates, grid, result.device, result.workers))
    if result.warning:
        print(result.warning)
    return 0
