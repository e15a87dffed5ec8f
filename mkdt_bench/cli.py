"""``mkdt-bench`` command line: run, table, list."""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from mkdt_bench import __version__
from mkdt_bench.errors import UserError
from mkdt_bench.threads import configure_openmp

QUICK = "quick"
EXECUTORS = ("auto", "inprocess", "processes", "ray")
#: Exit status of a run whose rows (some of them) could not be stored: they are kept.
UNSTORED = 3
DEVICE_HELP = ("cpu, cuda, cuda:N or auto (default auto: the first CUDA device when one is "
               "present, else the CPU; rows record the device used)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _csv(kind: type = str):
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",")]
        if any(items) and not all(items):  # "0,,1": a value left out, not read as "0,1"
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item; give the values "
                                              "separated by single commas (e.g. 0,1,2)")
        items = [t for t in items if t]
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} must be a comma-separated list of {kind.__name__} values") from None
    return parse


def _fractions(text: str) -> list[float]:
    """``--fractions 0.01,0.05`` or ``1%,5%`` (as the tables print them)."""
    from mkdt_bench.config import parse_fraction

    try:
        return [parse_fraction(t.strip()) for t in text.split(",") if t.strip()]
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _override(text: str) -> str:
    """``--set KEY=VALUE`` in one word (``--set teacher.epochs 5`` gives a hint)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like SECTION.KEY=VALUE, one word without spaces around '=' "
            f"(e.g. --set {text}=VALUE)")
    return text


def _methods(text: str) -> list[str]:
    """``--methods``: labels, variants' brackets kept whole (``mkdt[init=random,iterations=0]``)."""
    from mkdt_bench.variants import split_methods

    try:
        return split_methods(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="artifact cache (default $MKDT_BENCH_CACHE or "
                                       "~/.cache/mkdt-bench)")
    p.add_argument("--results-db", help="SQLite results database (default <cache>/results.sqlite)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _report(p: argparse.ArgumentParser, comparisons: bool = True) -> None:
    """How results are printed (run, eval and table share these)."""
    from mkdt_bench.report.tables import FORMATS, LAYOUTS
    from mkdt_bench.results import METRICS

    p.add_argument("--format", default="markdown", choices=FORMATS,
                   help="markdown: tables with a caption line each; latex: table floats "
                        "(booktabs) to \\input; csv: one tidy table, a row per cell group")
    p.add_argument("--layout", default="default", choices=LAYOUTS,
                   help="default: one table per source, teacher and budget; paper: rows = "
                        "pre-training set (method, images), one table per evaluator and "
                        "encoder; arch: methods x encoders, one table per evaluator")
    p.add_argument("--metric", default="accuracy", choices=METRICS,
                   help="top-1 accuracy or mean per-class accuracy (Aircraft/Flowers)")
    p.add_argument("--ci", action="store_true", help="add a 95%% t-interval of the mean")
    p.add_argument("--budget-table", action="store_true", help="also print each set's storage, "
                   "compute time and peak memory, and the pre-training steps")
    if comparisons:
        p.add_argument("--paired", metavar="BASELINE", help="also print each method's "
                       "difference from BASELINE (e.g. random) with a paired t-test over seeds")
        p.add_argument("--relative", action="store_true", help="also print each set's gain "
                       "over random as a share of the full - random gap (0%% = random, "
                       "100%% = full) with a 95%% interval over seeds")
    p.add_argument("--out", dest="out_file", metavar="FILE", help="write the tables (or "
                   "CSV) to FILE instead of standard output")


def build_parser() -> argparse.ArgumentParser:
    from mkdt_bench.results import METRICS

    parser = _Parser(prog="mkdt-bench", description="Benchmark dataset distillation for "
                     "self-supervised pre-training.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="run a grid of methods and print the comparison table")
    _common(run)
    run.add_argument("--preset", help="shipped preset name or a .toml path (default: quick when "
                                      "no --dataset is given)")
    run.add_argument("--dataset", help="digits, cifar10, cifar100, tinyimagenet, imagefolder:PATH")
    run.add_argument("--data-root", help="where downloadable data sets live")
    run.add_argument("--methods", type=_methods, help="comma-separated method names; a "
                     "variant with its own options is a row of its own: mkdt[init=random]")
    run.add_argument("--budget", help="images in each distilled set: a count or a percentage")
    run.add_argument("--archs", type=_csv(), help="encoders to pre-train (convnet, resnet18, "
                                                  "timm:NAME, ...)")
    run.add_argument("--fractions", type=_fractions, help="label fractions, e.g. 0.01,0.05 "
                     "or 1%%,5%%")
    run.add_argument("--seeds", type=_csv(int), help="seeds, e.g. 0,1,2")
    run.add_argument("--tasks", type=_csv(), help="downstream data sets (default: the source)")
    run.add_argument("--evaluators", type=_csv(), help="downstream protocols (default: linear)")
    run.add_argument("--teacher-checkpoint", help="load the teacher instead of training it")
    run.add_argument("--device", help=DEVICE_HELP)
    run.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                     metavar="SECTION.KEY=VALUE", help="override any option, repeatable")
    run.add_argument("--recompute", type=_csv(), metavar="STAGE,...",
                     help="compute these stages of the grid again although they are stored: "
                          "teacher, pretrain, methods.NAME, evaluators.NAME (and whatever was "
                          "computed from them); each old artifact is replaced once its "
                          "successor is complete")
    _report(run)
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and "
                     "every step (cached or to compute, with its estimated time and memory "
                     "where the cache measured its like) and exit; computes and writes nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (on a "
                     "terminal) or per-step lines (otherwise)")
    run.add_argument("--executor", default="auto", choices=EXECUTORS,
                     help="where units run: auto (default: worker processes on a CPU with "
                          "more than one core, else this process), inprocess, processes "
                          "(local workers, one per core), or ray (needs Ray: pip install -e "
                          "'.[ray]' in a checkout)")
    run.add_argument("--workers", type=int, default=0, metavar="N",
                     help="worker processes of --executor auto/processes (default 0: the "
                          "usable cores divided by --threads)")
    run.add_argument("--ray-address", help="Ray cluster to join (e.g. auto or HOST:6379; "
                                           "default: start a local instance)")
    run.add_argument("--retries", type=int, default=2, metavar="N",
                     help="Ray: reruns of a task whose worker or node died (default 2)")
    run.add_argument("--threads", type=int, default=0, metavar="N",
                     help="torch CPU threads per unit (default 0: one per usable core, or "
                          "OMP_NUM_THREADS, in this process; in worker processes, the cores "
                          "divided by the workers)")

    ev = sub.add_parser("eval", help="evaluate a stored DistilledSet directory (no teacher, "
                                     "no distillation) and print its table")
    _common(ev)
    ev.add_argument("--distilled", required=True, metavar="DIR",
                    help="directory with images.pt, targets.pt, distilled.json [, lr.pt]")
    ev.add_argument("--name", help="method name in the tables (default: import:<DIR name>); "
                    "not a method's name, nor that of another set's stored rows")
    ev.add_argument("--preset", help="shipped preset name or a .toml path whose pre-training "
                    "([pretrain]), evaluators and archs, fractions, seeds and tasks apply, as in "
                    "run (default: none, the built-in settings): give the preset of the grid "
                    "the set is compared with")
    ev.add_argument("--dataset", help="the data the set was distilled from (default: the "
                                      "set's own source)")
    ev.add_argument("--data-root", help="where downloadable data sets live")
    ev.add_argument("--archs", type=_csv(), help="encoders to pre-train (default convnet)")
    ev.add_argument("--fractions", type=_fractions, help="label fractions, e.g. 0.01,0.05 "
                    "or 1%%,5%%")
    ev.add_argument("--seeds", type=_csv(int), help="seeds, e.g. 0,1,2")
    ev.add_argument("--tasks", type=_csv(), help="downstream data sets (default: the source)")
    ev.add_argument("--evaluators", type=_csv(), help="downstream protocols (default: linear)")
    ev.add_argument("--device", help=DEVICE_HELP)
    ev.add_argument("--set", dest="overrides", action="append", default=[], type=_override,
                    metavar="SECTION.KEY=VALUE", help="override pretrain/evaluator options")
    _report(ev, comparisons=False)
    ev.add_argument("--no-progress", action="store_true", help="no progress bars (on a "
                    "terminal) or per-step lines (otherwise)")
    ev.add_argument("--threads", type=int, default=0, metavar="N",
                    help="torch CPU threads (default 0: one per usable core, or "
                         "OMP_NUM_THREADS)")

    conv = sub.add_parser("convert", help="read a reference repository's distilled set "
                                          "into a DistilledSet directory")
    conv.add_argument("kind", choices=["mkdt", "krrst"], help="mkdt: images_K/labels_K/"
                      "synlr_K.pt; krrst: x_syn.pt (or x_syn_final.pt) and y_syn.pt")
    conv.add_argument("source", metavar="DIR", help="directory holding the reference files")
    conv.add_argument("--dataset", required=True, help="the data set it was distilled from "
                      "(its normalisation is declared)")
    conv.add_argument("--data-root", help="where downloadable data sets live")
    conv.add_argument("--out", required=True, help="DistilledSet directory to write")
    conv.add_argument("--step", type=int, default=5000, help="mkdt: which images_K.pt "
                      "(default 5000, the paper's evaluated state)")
    conv.add_argument("--space", default="raw", choices=["raw", "normalized"],
                      help="krrst: the stored images are raw pixels (reference, default) or "
                           "already normalised")
    conv.add_argument("--stats", help="mkdt: the normalisation the reference applied to the "
                      "stored images, re-normalised into --dataset's: cifar10, cifar100 or "
                      "tinyimagenet (MKDT's constants; default: --dataset's name), or "
                      "'dataset' (already in --dataset's statistics)")
    _common(conv)

    plot = sub.add_parser("plot", help="figures of stored results: accuracy versus label "
                                       "fraction (and versus set size over budgets, or "
                                       "versus a method option)")
    _common(plot)
    plot.add_argument("--dataset", help="only this source data set")
    plot.add_argument("--methods", type=_methods, help="only these methods (rows)")
    plot.add_argument("--budget", type=int, metavar="IMAGES",
                      help="only the grid of this budget (images)")
    plot.add_argument("--arch", help="only this encoder")
    plot.add_argument("--evaluator", help="only this evaluator")
    plot.add_argument("--task", help="only this downstream task")
    plot.add_argument("--teacher", metavar="KEY", help="only this teacher (cache key or "
                                                        "its first characters)")
    plot.add_argument("--metric", default="accuracy", choices=METRICS)
    plot.add_argument("--ci", action="store_true", help="error bars: 95%% t-interval of the "
                                                        "mean (default: population std)")
    plot.add_argument("--versus", metavar="OPTION", help="accuracy against this numeric "
                      "method option instead (an ablation: e.g. iterations over rows "
                      "mkdt[iterations=50],mkdt,...; other sets as horizontal lines)")
    plot.add_argument("--format", default="png", help="file type in an --out folder: png "
                      "(200 dpi), or vector pdf or svg")
    plot.add_argument("--out", default="plots", help="folder for the figures (default plots), "
                      "or one file (.png, .pdf, .svg) when the selection makes one figure")

    show = sub.add_parser("show", help="a PNG grid of a distilled set's images: a set of the "
                                       "cache (--method, --seed) or a DistilledSet directory")
    show.add_argument("directory", nargs="?", metavar="DIR", help="DistilledSet directory "
                      "(instead of --method)")
    show.add_argument("--method", help="the method (or variant, mkdt[init=random]) whose "
                                       "stored set to show")
    show.add_argument("--seed", type=int, help="its seed (needed when several are stored)")
    show.add_argument("--budget", type=int, metavar="IMAGES",
                      help="its grid's budget (needed when several are stored)")
    show.add_argument("--out", required=True, help="image file to write: .png (or .pdf, .svg)")
    show.add_argument("--max-images", type=int, default=100, help="at most this many (100)")
    show.add_argument("--cache-dir", help="artifact cache (default $MKDT_BENCH_CACHE or "
                                          "~/.cache/mkdt-bench)")
    show.add_argument("--debug", action="store_true", help="show tracebacks")

    table = sub.add_parser("table", help="render stored results as a table")
    _common(table)
    table.add_argument("--dataset", help="only this source data set")
    table.add_argument("--methods", type=_methods, help="only these methods (rows)")
    _report(table)

    cache = sub.add_parser("cache", help="check or prune the artifact cache")
    cache.add_argument("action", choices=["verify", "prune"], help="verify: check that every "
                       "artifact's files are exactly those its manifest lists, with their "
                       "sha256; prune: list (with --apply, delete) the artifacts no row of the "
                       "results database uses, moved-aside corrupt copies and orphaned "
                       "temporary files")
    cache.add_argument("--apply", action="store_true", help="prune: really delete")
    _common(cache)

    res = sub.add_parser("results", help="store the result rows that a run could not store "
                                         "(kept in spill files)")
    res.add_argument("action", choices=["ingest"], help="ingest: store the rows of spill files "
                     "(default: the database's own, beside it or in <cache>/unstored/) and "
                     "remove the files")
    res.add_argument("files", nargs="*", metavar="FILE", help="spill files (JSON lines) to store")
    _common(res)

    lst = sub.add_parser("list", help="show registered methods, models, data sets, "
                                      "evaluators and presets")
    lst.add_argument("--debug", action="store_true")
    return parser


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    from mkdt_bench.cache import default_cache_dir

    results_db = getattr(args, "results_db", None)
    for flag, value in (("--cache-dir", args.cache_dir), ("--results-db", results_db)):
        if value is not None and not value.strip():  # not silently the default cache
            raise UserError(f"{flag} is empty; give a path or leave the flag out")
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    db = Path(results_db).expanduser() if results_db else cache / "results.sqlite"
    return cache, db


def report(frame: Any, methods: list[str] | None, args: argparse.Namespace) -> str:
    """The comparison table(s) in ``--layout`` (plus the methods x encoders tables when
    the default layout meets several encoders), the paired differences from a baseline
    (``--paired``), the relative scores (``--relative``) and the budget tables
    (``--budget-table``), in ``--format``; as CSV one tidy table holding all of it."""
    from mkdt_bench.report.tables import (
        budget_tables,
        comparison_tables,
        paired_tables,
        relative_tables,
        render,
        tidy_table,
    )

    paired = getattr(args, "paired", None)
    relative = getattr(args, "relative", False)
    if args.format == "csv":
        return tidy_table(frame, args.metric, paired, args.budget_table, relative).to_csv(
            index=False).rstrip("\n")
    tables = comparison_tables(frame, args.layout, methods, args.ci, args.metric)
    encoders = set(frame.loc[frame["method"] != "teacher", "arch"]) if not frame.empty else ()
    if args.layout == "default" and len(encoders) > 1:
        tables += comparison_tables(frame, "arch", methods, args.ci, args.metric)
    if paired:
        tables += paired_tables(frame, paired, methods, args.metric)
    if relative:
        tables += relative_tables(frame, methods, args.metric)
    if args.budget_table:
        tables += budget_tables(frame, methods)
    return render(tables, args.format)


def _creatable(text: str) -> Path:
    """``--out`` as a path whose nearest existing folder is a writable folder (a UserError
    otherwise: a path under a file, or a folder without write permission)."""
    out = Path(text).expanduser().absolute()
    existing = next(p for p in out.parents if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {text!r} cannot be written: {str(existing)!r} is not a "
                        "writable folder")
    return out


def check_out_file(args: argparse.Namespace) -> None:
    """Refuse an ``--out FILE`` that cannot be written, before anything is computed."""
    if not getattr(args, "out_file", None):
        return
    if _creatable(args.out_file).is_dir():
        raise UserError(f"--out {args.out_file!r} is a directory; give a file name for the "
                        "tables (e.g. results.md)")


def emit(text: str, args: argparse.Namespace) -> None:
    """``text`` to ``--out`` (written atomically) or to standard output."""
    from mkdt_bench.cache import atomic_write_bytes

    if getattr(args, "out_file", None):
        check_out_file(args)
        atomic_write_bytes(Path(args.out_file).expanduser(), (text + "\n").encode())
    else:
        print(text)


def print_tables(frame: Any, methods: list[str] | None, args: argparse.Namespace) -> None:
    """:func:`report` to ``--out`` or standard output."""
    emit(report(frame, methods, args), args)


def check_report_rows(args: argparse.Namespace, methods: list[str]) -> None:
    """Refuse ``--paired`` / ``--relative`` whose reference rows the grid does not compute
    (before anything runs, not after it)."""
    wanted = {f"--paired {args.paired}": [args.paired]} if args.paired else {}
    if args.relative:
        wanted["--relative"] = ["random", "full"]
    for flag, labels in wanted.items():
        absent = [label for label in labels if label not in methods]
        if absent:
            raise UserError(f"{flag} needs {' and '.join(map(repr, absent))} among the methods "
                            f"({', '.join(methods)}); add it to --methods or drop {flag}")


def check_not_blank(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """An empty or blank value of a flag is refused: it was read as the flag left out
    (``--preset ""`` ran the quick preset, ``--recompute ""`` recomputed nothing)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and (value == [] or (isinstance(value, str) and not value.strip())):
            raise UserError(f"--{name.replace('_', '-')} is empty; give a value or leave the "
                            "flag out")


#: The most torch CPU threads a unit may ask for (``--threads``, ``OMP_NUM_THREADS``):
#: far more than any machine's cores, far below the counts that crash torch's pool.
MAX_THREADS = 1024
#: The most worker processes of ``--workers`` (each holds its own torch and data).
MAX_WORKERS = 256


def check_threads(args: argparse.Namespace) -> None:
    """``--threads`` (0, the default, to :data:`MAX_THREADS`) and ``OMP_NUM_THREADS`` (at
    most :data:`MAX_THREADS`; it sizes the default thread count and worker pool):
    torch's thread pool crashes the process on huge counts."""
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} must be 0 or more")
    if args.threads > MAX_THREADS:
        raise UserError(f"--threads {args.threads} must be at most {MAX_THREADS}")
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > MAX_THREADS:  # also sizes the worker pool
        raise UserError(f"OMP_NUM_THREADS={omp} must be at most {MAX_THREADS} "
                        "(or unset it)")


def check_overrides_read(overrides: list[str], cfg: dict[str, Any], flags: dict[str, Any],
                         methods: bool = True) -> None:
    """Refuse a ``--set`` the grid would never read, rather than accept and ignore it: the
    options of a method (``run`` only) or an evaluator that is not in the grid, and a
    ``run.KEY`` whose flag is also given (which of the two would win is not obvious)."""
    from mkdt_bench.config import parse_override
    from mkdt_bench.variants import parse_label

    run = cfg["run"]
    grid = {"methods": {parse_label(label)[0] for label in run["methods"]},
            "evaluators": set(run["evaluators"])}
    for text in overrides:
        path, _ = parse_override(text)
        section, key = path[0], path[1]
        if section == "run" and flags.get(key) is not None:
            raise UserError(f"--set {text!r} and --{key.replace('_', '-')} both set {key}; "
                            "give one of them")
        if section == "evaluators" or (section == "methods" and methods):
            if key not in grid[section]:
                raise UserError(f"--set {text!r} would be ignored: {section[:-1]} {key!r} is "
                                f"not in this grid ({', '.join(sorted(grid[section]))}); "
                                f"add it to --{section} or drop the --set")


def check_executor_args(args: argparse.Namespace) -> None:
    """Refuse executor flags that do not go together (before anything is planned)."""
    if args.retries < 0:
        raise UserError(f"--retries {args.retries} must be 0 or more")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers} must be 0 (one per core) or more")
    if args.workers > MAX_WORKERS:
        raise UserError(f"--workers {args.workers} must be at most {MAX_WORKERS}")
    if args.executor != "ray" and args.ray_address:
        raise UserError(f"--ray-address needs --executor ray, not {args.executor}")
    if args.executor in ("inprocess", "ray") and args.workers:
        raise UserError(f"--workers {args.workers} needs --executor processes or auto, "
                        f"not {args.executor}")
    if args.executor == "ray":
        from mkdt_bench.pipeline.executors import RAY_HINT

        try:
            import ray  # noqa: F401 - refused here, before the database is created
        except ImportError:
            raise UserError(RAY_HINT) from None


def make_executor(args: argparse.Namespace, env: Any) -> Any:
    """The executor ``--executor`` names; ``auto`` is :class:`ProcessExecutor` where the run
    computes on the CPU and the usable cores hold two or more workers of ``--threads``
    threads (default 1), else :class:`InProcessExecutor` (Ray tasks get a GPU each when
    they use CUDA)."""
    from mkdt_bench.pipeline.executors import InProcessExecutor, ProcessExecutor, RayExecutor
    from mkdt_bench.threads import default_threads

    check_executor_args(args)
    if args.executor == "ray":
        return RayExecutor(address=args.ray_address, retries=args.retries)
    cores = default_threads()
    workers = args.workers or max(1, cores // (args.threads or 1))
    threads = args.threads or max(1, cores // workers)
    on_cpu = env.torch_device.type == "cpu"
    if args.executor == "processes" or (args.executor == "auto" and on_cpu and workers > 1):
        return ProcessExecutor(workers, threads)
    return InProcessExecutor()


def cmd_run(args: argparse.Namespace) -> int:
    """Plan the grid (computing and writing nothing), then print the plan (``--dry-run``)
    or warn when it would take hours, and run it."""
    from mkdt_bench.cache import ArtifactCache, check_writable
    from mkdt_bench.config import build_config
    from mkdt_bench.data import no_writes
    from mkdt_bench.data._decode import NotDownloaded
    from mkdt_bench.pipeline.costs import CostBook
    from mkdt_bench.pipeline.dryrun import cost_warning, plan_estimates, render_config, render_plan
    from mkdt_bench.pipeline.runner import parse_recompute, plan_grid, run_plan
    from mkdt_bench.stages.env import Env, cached_dataset, prepare_threads

    preset = args.preset or (QUICK if args.dataset is None else None)
    flags = {"dataset": args.dataset, "methods": args.methods, "budget": args.budget,
             "archs": args.archs, "fractions": args.fractions, "seeds": args.seeds,
             "tasks": args.tasks, "evaluators": args.evaluators, "device": args.device,
             "data_root": args.data_root}
    overrides = list(args.overrides)
    for name in ("methods", "archs", "fractions", "seeds", "tasks", "evaluators"):
        if flags[name] == []:
            raise UserError(f"--{name} is empty; give at least one value")
    check_not_blank(args, ("preset", "dataset", "data_root", "ray_address", "recompute"))
    check_threads(args)
    check_executor_args(args)
    cfg = build_config(preset, flags, overrides)
    check_overrides_read(overrides, cfg, flags)
    if args.teacher_checkpoint is not None:  # the path as it is, not read as a TOML value
        checkpoint = Path(args.teacher_checkpoint).expanduser()
        if not checkpoint.is_file():
            raise UserError(f"teacher checkpoint {args.teacher_checkpoint!r} "
                            f"{'is not a file' if checkpoint.exists() else 'does not exist'}")
        cfg["teacher"]["checkpoint"] = args.teacher_checkpoint
    check_out_file(args)
    check_report_rows(args, cfg["run"]["methods"])
    recompute = parse_recompute(args.recompute, cfg) if args.recompute else None
    cache_dir, db = _paths(args)
    if not args.dry_run:  # a dry run writes nothing: a read-only cache is enough
        check_writable(cache_dir)
    env = Env(cache_dir=str(cache_dir), data_root=cfg["run"]["data_root"],
              device=cfg["run"]["device"], progress=not args.no_progress, threads=args.threads,
              precision=cfg["run"]["precision"], deterministic=cfg["run"]["deterministic"])
    prepare_threads(env)
    # Planning reads the cache and the database and writes neither: a refused input
    # leaves nothing behind, and --dry-run also loads the data without caching a decode.
    store, spills = _planning_store(db, cache_dir)
    cache = ArtifactCache(cache_dir, create=False)
    device = env.torch_device.type
    if args.dry_run:
        print(f"# mkdt-bench run --dry-run: nothing is computed or written\n"
              f"# resolved configuration (defaults < preset {preset or '(none)'} < flags < "
              f"--set)\n\n{render_config(cfg)}")
        kept = (f"; {len(store.unstored)} result rows kept in {' '.join(map(str, spills))} "
                "count as stored (the run stores them first)") if store.unstored else ""
        print(f"# plan: cache {cache_dir}, results {db}"
              f"{'' if db.exists() else ' (does not exist yet)'}{kept}\n")
        try:
            check_writable(cache_dir)
        except UserError as e:
            print(f"# note: a run would stop here: {e}\n")
        try:
            with no_writes():
                plan = plan_grid(cfg, env, store, recompute, cache)
        except NotDownloaded as e:
            print(f"{e}; the steps depend on the data, so they are not listed")
            return 0
    else:
        plan = plan_grid(cfg, env, store, recompute, cache)
    dataset = cached_dataset(cfg["run"]["dataset"], env.data_root, env.cache_dir)
    estimates = plan_estimates(plan, CostBook(cache, store, device), cfg, dataset,
                               env.torch_device)
    warning = cost_warning(plan, estimates, cfg, dataset, device, preset)
    if args.dry_run:
        print(render_plan(plan, estimates, cfg, device))
        if warning:
            print(warning)
        return 0
    if warning:
        print(warning, file=sys.stderr)
    store.close()
    executor = make_executor(args, env)  # a cluster that does not answer: nothing written yet
    ArtifactCache(cache_dir)
    store = _writing_store(db, cache_dir, spills)
    start = time.perf_counter()
    try:  # closed here, not at garbage collection: the WAL is folded in before we return
        frame = run_plan(plan, env, store, executor, estimates)
    except BaseException:
        _report_unstored(store)
        raise
    finally:
        store.close()
    print_tables(frame, cfg["run"]["methods"], args)
    return _summary(frame, start, db, store)


def cmd_eval(args: argparse.Namespace) -> int:
    """Pre-train and evaluate encoders on a stored DistilledSet, like a method's output."""
    from mkdt_bench.cache import check_writable
    from mkdt_bench.config import build_config
    from mkdt_bench.distilled import DistilledSet
    from mkdt_bench.pipeline.runner import check_set_name, plan_external, run_plan
    from mkdt_bench.pretraining import describe_pretrain
    from mkdt_bench.stages.env import Env

    directory = Path(args.distilled).expanduser()
    if not directory.is_dir():
        raise UserError(f"distilled set directory {str(directory)!r} "
                        f"{'is not a directory' if directory.exists() else 'does not exist'}")
    for name in ("archs", "fractions", "seeds", "tasks", "evaluators"):
        if getattr(args, name) == []:
            raise UserError(f"--{name} is empty; give at least one value")
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
    check_overrides_read(list(args.overrides), cfg, flags, methods=False)
    cache_dir, db = _paths(args)
    check_writable(cache_dir)
    env = Env(cache_dir=str(cache_dir), data_root=cfg["run"]["data_root"],
              device=cfg["run"]["device"], progress=not args.no_progress, threads=args.threads,
              precision=cfg["run"]["precision"], deterministic=cfg["run"]["deterministic"])
    planning, spills = _planning_store(db, cache_dir)
    try:
        plan = plan_external(cfg, env, planning, directory, name)
    finally:
        planning.close()
    recipe = f"preset {args.preset}" if args.preset else "the built-in defaults (no --preset)"
    print(f"pre-training recipe: {recipe}: {describe_pretrain(cfg['pretrain'])}",
          file=sys.stderr)
    store = _writing_store(db, cache_dir, spills)
    start = time.perf_counter()
    try:
        frame = run_plan(plan, env, store)
    except BaseException:
        _report_unstored(store)
        raise
    finally:
        store.close()
    print_tables(frame, [name], args)
    return _summary(frame, start, db, store)


def _summary(frame: Any, start: float, db: Path, store: Any) -> int:
    """One stderr line; exit 1 when a cell failed (cells of missing tasks do not count),
    3 when rows could not be stored (:func:`_report_unstored`)."""
    from mkdt_bench.results import FAILED, MISSING

    failed = int((frame["status"] == FAILED).sum()) if not frame.empty else 0
    missing = int((frame["status"] == MISSING).sum()) if not frame.empty else 0
    absent = f", {missing} n/a for missing data" if missing else ""
    unstored = len(store.unstored)
    where = f"{unstored} of them not stored in {db}" if unstored else f"results in {db}"
    print(f"\n{len(frame)} cells ({failed} failed{absent}) in "
          f"{time.perf_counter() - start:.1f} s; {where}", file=sys.stderr)
    return UNSTORED if _report_unstored(store) else 1 if failed else 0


def _planning_store(db: Path, cache_dir: Path) -> tuple[Any, list[Path]]:
    """The database read-only (for planning), the rows that its spill files keep counted
    as stored, and those files; a bad spill file is refused here, before any work."""
    from mkdt_bench.results import ResultStore, find_spills

    spills = find_spills(db, cache_dir)
    store = ResultStore.read_only(db)
    try:
        store.keep_files(spills)
    except UserError:
        store.close()
        raise
    return store, spills


def _writing_store(db: Path, cache_dir: Path, spills: list[Path]) -> Any:
    """The database opened for writing, the rows of ``spills`` stored in it first (one
    stderr line when there were some)."""
    from mkdt_bench.results import ResultStore

    store = ResultStore(db, spill_dir=cache_dir)
    if spills:
        store.keep_files(spills)
        store.flush()
        stored = sum(n for _, n in store.stored_from)
        if stored:
            print(f"stored {stored} result rows that an earlier run kept in "
                  f"{' '.join(str(p) for p, _ in store.stored_from)}", file=sys.stderr)
    return store


def _note_spills(db: Path, cache_dir: Path) -> None:
    """One stderr line when spill files hold rows of ``db`` that it does not hold yet."""
    import shlex

    from mkdt_bench.results import find_spills

    spills = find_spills(db, cache_dir)
    if spills:
        print(f"note: {len(spills)} spill file{'s' if len(spills) != 1 else ''} "
              f"({' '.join(shlex.quote(str(p)) for p in spills)}) hold result rows that "
              f"{db} does not hold yet: `mkdt-bench results ingest --results-db "
              f"{shlex.quote(str(db))}` stores them", file=sys.stderr)


def _report_unstored(store: Any) -> bool:
    """One ``error:`` line when rows could not be stored (how many, why, where they are
    kept, what to do), followed by the rows themselves where no file could keep them."""
    from mkdt_bench.results import spill_text

    message = store.unstored_message()
    if message:
        print(f"error: {message}", file=sys.stderr)
        if store.unkept:
            print(spill_text(store.unkept), end="", file=sys.stderr)
    return bool(message)


def cmd_convert(args: argparse.Namespace) -> int:
    """Write a reference set as a DistilledSet directory (atomically)."""
    import shutil
    import uuid

    from mkdt_bench.convert import from_krrst, from_mkdt
    from mkdt_bench.data import load_dataset

    cache_dir, _ = _paths(args)
    out = Path(args.out).expanduser()
    if out.exists():
        raise UserError(f"--out {str(out)!r} already exists; give a new directory")
    _creatable(args.out)
    dataset = load_dataset(args.dataset, root=args.data_root, cache_dir=str(cache_dir))
    if args.kind == "mkdt":
        distilled = from_mkdt(args.source, args.step, dataset, args.stats)
    else:
        distilled = from_krrst(args.source, dataset, args.space)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        distilled.save(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo, hi = float(distilled.images.min()), float(distilled.images.max())
    print(f"{out}: {len(distilled)} images {distilled.channels}x{distilled.image_size}x"
          f"{distilled.image_size}, targets {tuple(distilled.targets.shape)}, lr "
          f"{distilled.lr}, normalised values in [{lo:.2f}, {hi:.2f}] "
          f"({args.dataset} mean/std)")
    return 0


def _selected(frame: Any, args: argparse.Namespace) -> Any:
    """The rows ``plot``'s filters select; the teacher rows (the ceiling, of their own
    size and encoder) stay whatever --methods, --budget and --arch say."""
    import json

    teacher = frame["method"] == "teacher"
    keep = teacher | True
    for column, value in (("method", args.methods), ("budget", args.budget),
                          ("arch", args.arch)):
        if value is not None:
            keep &= teacher | frame[column].isin(value if isinstance(value, list) else [value])
    for column, value in (("dataset", args.dataset), ("evaluator", args.evaluator),
                          ("task", args.task)):
        if value is not None:
            keep &= frame[column] == value
    if args.teacher:
        keep &= frame["config"].map(lambda c: json.loads(c).get("teacher", "")).str.startswith(
            args.teacher)
    return frame[keep]


def cmd_plot(args: argparse.Namespace) -> int:
    from mkdt_bench.report.plots import check_figure_out, plot_results
    from mkdt_bench.results import ResultStore

    _, db = _paths(args)
    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; run a grid first")
    check_figure_out(args.out, args.format)
    frame = ResultStore.read_only(db).frame()
    frame = _selected(frame, args) if not frame.empty else frame
    if frame.empty or (frame["method"] == "teacher").all():
        raise UserError(f"no result rows in {db} match --dataset/--methods/--budget/--arch/"
                        "--evaluator/--task/--teacher")
    for path in plot_results(frame, args.out, args.format, args.ci, args.metric, args.versus):
        print(path)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mkdt_bench.distilled import DistilledSet
    from mkdt_bench.report.plots import check_figure_out, find_stored_set, set_title, show_set

    if (args.directory is None) == (args.method is None):
        raise UserError("show needs a DistilledSet directory or --method (with --seed and, "
                        "where several budgets are stored, --budget), not both")
    check_figure_out(args.out)
    seed, budget = args.seed, args.budget
    if args.method:
        cache_dir, _ = _paths(args)
        directory, manifest = find_stored_set(cache_dir, args.method, seed, budget)
        label = args.method
        config = manifest.get("config", {})
        seed, budget = config.get("seed", seed), config.get("budget", budget)
    else:
        directory = Path(args.directory).expanduser()
        if not directory.is_dir():
            raise UserError(f"distilled set directory {args.directory!r} "
                            f"{'is not a directory' if directory.exists() else 'does not exist'}")
        label = None
        if (directory / "manifest.json").is_file():  # a set of the cache: its seed, budget
            from mkdt_bench.cache import CorruptManifest, read_manifest

            try:
                config = read_manifest(directory).get("config", {})
            except CorruptManifest:
                config = {}
            seed, budget = config.get("seed", seed), config.get("budget", budget)
    distilled = DistilledSet.load(directory)
    title = set_title(distilled, label or distilled.method or directory.name, seed, budget,
                      args.max_images)
    print(show_set(distilled, args.out, title, args.max_images))
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from mkdt_bench.results import ResultStore

    _, db = _paths(args)
    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; run `mkdt-bench run` "
                        "first or pass --results-db")
    check_out_file(args)
    frame = ResultStore.read_only(db).frame()
    _note_spills(db, _paths(args)[0])
    for flag, column, wanted in (("--dataset", "dataset", [args.dataset] if args.dataset else []),
                                 ("--methods", "method", args.methods or [])):
        stored = sorted(set(frame[column]))
        absent = [w for w in wanted if w not in stored]
        if absent:  # a typo is not an empty table
            raise UserError(f"{flag}: no stored rows of {', '.join(map(repr, absent))} in "
                            f"{str(db)!r}; stored: {', '.join(stored) or '(none)'}")
    if args.dataset:
        frame = frame[frame["dataset"] == args.dataset]
    if args.methods:
        frame = frame[frame["method"].isin(args.methods + ["teacher"])]
    if args.format != "markdown":  # one CSV, or LaTeX floats whose captions name the source
        emit(report(frame, args.methods, args), args)
        return 0
    parts = [f"## {dataset}\n\n{report(group, args.methods, args)}"
             for dataset, group in frame.groupby("dataset", sort=False)]
    emit("\n\n".join(parts) if parts else "(no results)", args)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``cache verify``: one line per corrupt artifact; exit 1 when there is one.
    ``cache prune``: the artifacts no result row uses, corrupt copies and orphaned
    temporary files; deleted only with ``--apply``. Both read a read-only cache."""
    from mkdt_bench.cache import ArtifactCache

    cache_dir, db = _paths(args)
    if not (cache_dir / "artifacts").is_dir():
        raise UserError(f"cache directory {str(cache_dir)!r} holds no artifacts")
    # verify and a listing prune write nothing: they work on a read-only cache
    cache = ArtifactCache(cache_dir, create=args.action == "prune" and args.apply)
    if args.action == "prune":
        return _prune(cache, db, args.apply)
    artifacts = cache.folders()
    corrupt = 0
    for stage, key in artifacts:
        bad = cache.verify(stage, key)
        if bad:
            corrupt += 1
            print(f"corrupt: {cache.path(stage, key)} ({', '.join(bad)})")
    print(f"{len(artifacts)} artifacts checked, {corrupt} corrupt (the next run that needs "
          "one moves it aside and recomputes it)")
    return 1 if corrupt else 0


def _prune(cache: Any, db: Path, apply: bool) -> int:
    import json

    if not db.is_file():
        raise UserError(f"results database {str(db)!r} does not exist; prune keeps what its "
                        "rows use, so give the database with --results-db")
    store, _ = _planning_store(db, cache.root)  # rows kept in spill files use artifacts too
    frame = store.frame()
    if store.malformed:
        raise UserError(f"results database {str(db)!r} has {len(store.malformed)} malformed "
                        f"rows ({store.malformed[0]}); prune cannot tell what they use (delete "
                        "those rows first)")
    keep: set[str] = set()
    for config in frame["config"]:
        used = json.loads(config).get("artifacts")
        if used is None:
            raise UserError(f"results database {str(db)!r} has rows written before mkdt-bench "
                            "recorded the artifacts each row uses; prune cannot tell what "
                            "they need (rerun the grids into a new database first)")
        keep.update(used)
    checked = len(cache.folders())
    doomed = cache.prune(keep, apply=apply)
    for path, size in doomed:
        print(f"{'removed' if apply else 'would remove'}: {path} ({size / 2**20:.1f} MiB)")
    total = sum(size for _, size in doomed) / 2**20
    print(f"{len(doomed)} unused of {checked} artifacts checked against "
          f"{len(frame)} result rows of {db}: {total:.1f} MiB "
          f"{'freed' if apply else 'to free (dry run; --apply deletes)'}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """``results ingest``: store the rows of spill files (every file checked first, a bad
    one refused before anything is written) and remove the files; exit 3 when the database
    still does not take them."""
    from mkdt_bench.results import ResultStore, find_spills, read_spill

    cache_dir, db = _paths(args)
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
    if _report_unstored(store):
        return UNSTORED
    print(f"{n} result rows of {len(files)} spill file{'s' if len(files) != 1 else ''} read, "
          f"{store.written} stored in {db} (the others it holds already, or a newer row of "
          "their cell); the files are removed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from mkdt_bench.config import list_presets
    from mkdt_bench.data import DATASETS
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS
    from mkdt_bench.models import MODELS

    for title, names in (("methods", METHODS.names()),
                         ("models", MODELS.names() + MODELS.prefixes()),
                         ("datasets", DATASETS.names() + DATASETS.prefixes()),
                         ("evaluators", EVALUATORS.names()), ("presets", list_presets())):
        print(f"{title}: {', '.join(names)}")
    return 0


_PYTHON_FORMATWARNING = warnings.formatwarning
_PACKAGE = Path(__file__).resolve().parent


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """mkdt-bench's own warnings (a skipped plug-in, a refused snapshot, a corrupt artifact,
    malformed rows) as one ``warning:`` line; other packages' warnings as Python shows them."""
    from mkdt_bench.registry import PluginWarning

    if issubclass(category, PluginWarning) or Path(filename).is_relative_to(_PACKAGE):
        return f"warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    configure_openmp()  # before anything imports torch
    try:
        parser = build_parser()  # imports torch and every plug-in: seconds
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C before any command started: one line, no traceback
        print("\ninterrupted before anything started" if sys.stderr.isatty()
              else "interrupted before anything started", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"run": cmd_run, "eval": cmd_eval, "convert": cmd_convert, "table": cmd_table,
               "plot": cmd_plot, "show": cmd_show, "cache": cmd_cache,
               "results": cmd_results, "list": cmd_list}[args.command]
    warnings.formatwarning = _format_warning
    try:
        return handler(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder without write permission, ...
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from mkdt_bench.progress import interrupted_message

        print(interrupted_message(), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
