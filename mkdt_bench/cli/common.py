"""What several commands share: the argument types, the flag groups, the store and output
helpers, and the checks made before anything runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.errors import UserError

if TYPE_CHECKING:
    from mkdt_bench.report.contents import ReportOptions

QUICK = "quick"
EXECUTORS = ("auto", "inprocess", "processes", "ray")
#: Exit status of a run whose rows (some of them) could not be stored: they are kept.
UNSTORED = 3
DEVICE_HELP = ("cpu, cuda, cuda:N or auto (default auto: the first CUDA device when one is "
               "present, else the CPU; rows record the device used)")
#: The most torch CPU threads a unit may ask for (``--threads``, ``OMP_NUM_THREADS``):
#: far more than any machine's cores, far below the counts that crash torch's pool.
MAX_THREADS = 1024


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def csv_list(kind: type = str):
    """``--seeds 0,1,2``: a comma-separated list of ``kind`` values."""
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


def fractions(text: str) -> list[float]:
    """``--fractions 0.01,0.05`` or ``1%,5%`` (as the tables print them)."""
    from mkdt_bench.config import parse_fraction

    try:
        return [parse_fraction(t.strip()) for t in text.split(",") if t.strip()]
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def override(text: str) -> str:
    """``--set KEY=VALUE`` in one word (``--set teacher.epochs 5`` gives a hint)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like SECTION.KEY=VALUE, one word without spaces around '=' "
            f"(e.g. --set {text}=VALUE)")
    return text


def method_labels(text: str) -> list[str]:
    """``--methods``: labels, variants' brackets kept whole (``mkdt[init=random,iterations=0]``)."""
    from mkdt_bench.variants import split_methods

    try:
        return split_methods(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_store_args(p: argparse.ArgumentParser) -> None:
    """``--cache-dir``, ``--results-db``, ``--debug``."""
    p.add_argument("--cache-dir", help="artifact cache (default $MKDT_BENCH_CACHE or "
                                       "~/.cache/mkdt-bench)")
    p.add_argument("--results-db", help="SQLite results database (default <cache>/results.sqlite)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_grid_args(p: argparse.ArgumentParser, **helps: str) -> None:
    """The flags ``run`` and ``eval`` share (what to pre-train and evaluate, where, how);
    ``helps`` replaces a flag's help where the commands read it differently."""
    p.add_argument("--dataset", help=helps.get("dataset", "digits, cifar10, cifar100, "
                                               "tinyimagenet, imagefolder:PATH"))
    p.add_argument("--data-root", help="where downloadable data sets live")
    p.add_argument("--archs", type=csv_list(), help=helps.get(
        "archs", "encoders to pre-train (convnet, resnet18, timm:NAME, ...)"))
    p.add_argument("--fractions", type=fractions, help="label fractions, e.g. 0.01,0.05 "
                   "or 1%%,5%%")
    p.add_argument("--seeds", type=csv_list(int), help="seeds, e.g. 0,1,2")
    p.add_argument("--tasks", type=csv_list(), help="downstream data sets (default: the source)")
    p.add_argument("--evaluators", type=csv_list(), help="downstream protocols (default: "
                                                         "linear)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--set", dest="overrides", action="append", default=[], type=override,
                   metavar="SECTION.KEY=VALUE",
                   help=helps.get("set", "override any option, repeatable"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars (on a "
                   "terminal) or per-step lines (otherwise)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help=helps.get(
        "threads", "torch CPU threads (default 0: one per usable core, or OMP_NUM_THREADS)"))


def add_report_args(p: argparse.ArgumentParser, comparisons: bool = True) -> None:
    """How results are printed (run, eval and table share these)."""
    from mkdt_bench.report.formats import FORMATS
    from mkdt_bench.report.tables import LAYOUTS
    from mkdt_bench.results import METRICS

    p.add_argument("--format", default="markdown", choices=FORMATS.names(),
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


def paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The cache folder and the results database the flags name (or their defaults)."""
    from mkdt_bench.cache import default_cache_dir

    results_db = getattr(args, "results_db", None)
    for flag, value in (("--cache-dir", args.cache_dir), ("--results-db", results_db)):
        if value is not None and not value.strip():  # not silently the default cache
            raise UserError(f"{flag} is empty; give a path or leave the flag out")
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    db = Path(results_db).expanduser() if results_db else cache / "results.sqlite"
    return cache, db


def report_options(args: argparse.Namespace, methods: list[str] | None) -> ReportOptions:
    """What the report flags ask for (``methods``: the row order)."""
    from mkdt_bench.report.contents import ReportOptions

    return ReportOptions(format=args.format, layout=args.layout, methods=methods, ci=args.ci,
                         metric=args.metric, paired=getattr(args, "paired", None),
                         relative=getattr(args, "relative", False),
                         budget_table=args.budget_table)


def creatable(text: str) -> Path:
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
    if creatable(args.out_file).is_dir():
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


def print_tables(frame: Any, methods: list[str] | None, args: argparse.Namespace,
                 headed: bool = False) -> None:
    """The report the flags ask for (:func:`mkdt_bench.report.compose.compose`) to
    ``--out`` or standard output (``headed``: a whole database, each source named)."""
    from mkdt_bench.report.compose import compose

    emit(compose(frame, report_options(args, methods), headed), args)


def check_report_rows(args: argparse.Namespace, methods: list[str]) -> None:
    """Refuse ``--paired`` / ``--relative`` whose reference rows the grid does not compute
    (before anything runs, not after it)."""
    from mkdt_bench.methods import METHODS
    from mkdt_bench.report.compose import check_report_rows as check

    check(report_options(args, methods), methods,
          {name: METHODS.get(name).reference for name in METHODS})


def check_not_blank(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """An empty or blank value of a flag is refused: it was read as the flag left out
    (``--preset ""`` ran the quick preset, ``--recompute ""`` recomputed nothing)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and (value == [] or (isinstance(value, str) and not value.strip())):
            raise UserError(f"--{name.replace('_', '-')} is empty; give a value or leave the "
                            "flag out")


def check_lists_given(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """A list flag given without a value (``--seeds ''``) is refused, not read as left out."""
    for name in names:
        if getattr(args, name) == []:
            raise UserError(f"--{name} is empty; give at least one value")


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


def summary(frame: Any, seconds: float, db: Path, store: Any) -> int:
    """One stderr line; exit 1 when a cell failed (cells of missing tasks do not count),
    3 when rows could not be stored (:func:`report_unstored`)."""
    from mkdt_bench.results import FAILED, MISSING

    failed = int((frame["status"] == FAILED).sum()) if not frame.empty else 0
    missing = int((frame["status"] == MISSING).sum()) if not frame.empty else 0
    absent = f", {missing} n/a for missing data" if missing else ""
    unstored = len(store.unstored)
    where = f"{unstored} of them not stored in {db}" if unstored else f"results in {db}"
    print(f"\n{len(frame)} cells ({failed} failed{absent}) in "
          f"{seconds:.1f} s; {where}", file=sys.stderr)
    return UNSTORED if report_unstored(store) else 1 if failed else 0


def note_spills(db: Path, cache_dir: Path) -> None:
    """One stderr line when spill files hold rows of ``db`` that it does not hold yet."""
    import shlex

    from mkdt_bench.results import find_spills

    spills = find_spills(db, cache_dir)
    if spills:
        print(f"note: {len(spills)} spill file{'s' if len(spills) != 1 else ''} "
              f"({' '.join(shlex.quote(str(p)) for p in spills)}) hold result rows that "
              f"{db} does not hold yet: `mkdt-bench results ingest --results-db "
              f"{shlex.quote(str(db))}` stores them", file=sys.stderr)


def report_unstored(store: Any) -> bool:
    """One ``error:`` line when rows could not be stored (how many, why, where they are
    kept, what to do), followed by the rows themselves where no file could keep them."""
    from mkdt_bench.results import spill_text

    message = store.unstored_message()
    if message:
        print(f"error: {message}", file=sys.stderr)
        if store.unkept:
            print(spill_text(store.unkept), end="", file=sys.stderr)
    return bool(message)
