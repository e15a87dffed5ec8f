"""The library's entry points: run a grid, evaluate a stored set. The command line and the
tests call these two, so both go through one sequence: the plan is made reading the cache
and the database and writing neither (a refused input leaves nothing behind), its cost is
estimated (a run of hours is announced before it starts), an executor is chosen, the plan
runs, and its rows are stored (or kept in a spill file where the database takes none)::

    from mkdt_bench import api
    from mkdt_bench.config import build_config

    result = api.run(build_config("quick"), cache_dir="runs/cache")
    result.frame  # one row per cell of the grid
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mkdt_bench.cache import ArtifactCache, check_writable, default_cache_dir
from mkdt_bench.config import BenchConfig
from mkdt_bench.data._decode import NotDownloaded, no_writes
from mkdt_bench.pipeline.calibration import Calibration
from mkdt_bench.pipeline.costs import Estimate
from mkdt_bench.pipeline.dryrun import cost_warning, plan_estimates
from mkdt_bench.pipeline.executors import (
    Executor,
    InProcessExecutor,
    check_choice,
    choose,
    side_by_side,
)
from mkdt_bench.pipeline.plan import Plan, parse_recompute
from mkdt_bench.pipeline.planner import check_set_name, plan_external, plan_grid
from mkdt_bench.pipeline.run import run_plan
from mkdt_bench.pretraining import describe_pretrain
from mkdt_bench.results import ResultRow, ResultStore, find_spills, spill_text
from mkdt_bench.stages.env import Env, cached_dataset, prepare_threads
from mkdt_bench.threads import default_threads


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


#: Where a run announces what a user should know before and after its work (the cost
#: warning, rows an earlier run kept and this one stored, rows it could not store).
Notify = Callable[[str], None]


@dataclass
class RunResult:
    """What a run planned and produced.

    ``plan``: the grid's plan (None where a dry run found the data not downloaded:
    ``not_downloaded`` says so); ``estimates``: the cost of each step to compute;
    ``warning``: the announcement of a run of hours ('' for none); ``frame``: the grid's
    rows (empty for a dry run); ``kept``: rows of the spill files ``spills`` that planning
    counted as stored; ``store``: the database the rows went to, closed (None for a dry
    run); ``seconds``: the wall time of the work; ``device``: the kind it computed on;
    ``workers``: how many units its executor runs at once (what the estimates assume).
    """

    plan: Plan | None
    estimates: dict[tuple[str, str], Estimate] = field(default_factory=dict)
    warning: str = ""
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    kept: int = 0
    spills: list[Path] = field(default_factory=list)
    store: ResultStore | None = None
    seconds: float = 0.0
    device: str = "cpu"
    workers: int = 1
    not_downloaded: str = ""

    @property
    def unstored(self) -> list[ResultRow]:
        """Rows the database did not take (kept in a spill file where one could be written)."""
        return self.store.unstored if self.store is not None else []

    def unstored_report(self) -> str:
        """One ``error:`` line on the rows left unstored (how many, why, where they are kept,
        what to do) and the rows themselves where no file could keep them; '' when none."""
        return unstored_report(self.store) if self.store is not None else ""


def unstored_report(store: ResultStore) -> str:
    """What :meth:`RunResult.unstored_report` says, for any store that saved rows."""
    message = store.unstored_message()
    if not message:
        return ""
    return f"error: {message}\n" + (spill_text(store.unkept) if store.unkept else "")


def paths(cache_dir: str | Path | None, results_db: str | Path | None) -> tuple[Path, Path]:
    """The cache folder (default: :func:`~mkdt_bench.cache.default_cache_dir`) and the
    results database (default: ``results.sqlite`` in it)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return cache, Path(results_db).expanduser() if results_db else cache / "results.sqlite"


def planning_store(db: Path, cache_dir: Path) -> tuple[ResultStore, list[Path]]:
    """The database read-only (for planning), the rows that its spill files keep counted
    as stored, and those files; a bad spill file is refused here, before any work."""
    spills = find_spills(db, cache_dir)
    store = ResultStore.read_only(db)
    try:
        store.keep_files(spills)
    except BaseException:
        store.close()
        raise
    return store, spills


def _env(cfg: dict[str, Any], cache_dir: Path, threads: int, progress: bool,
         device: str | None = None) -> Env:
    run = cfg["run"]
    return Env(cache_dir=str(cache_dir), data_root=run["data_root"],
               device=device or run["device"], progress=progress, threads=threads,
               precision=run["precision"], deterministic=run["deterministic"])


def run(cfg: BenchConfig, *, cache_dir: str | Path | None = None,
        results_db: str | Path | None = None, executor: str | Executor = "auto",
        workers: int = 0, threads: int = 0, ray_address: str | None = None,
        retries: int = 2, device: str | None = None, dry_run: bool = False,
        recompute: Sequence[str] = (), progress: bool = True, preset: str | None = None,
        notify: Notify = _stderr) -> RunResult:
    """Run every missing (or stale, or ``recompute``d) cell of the grid ``cfg`` and return
    all of its rows; with ``dry_run``, plan and estimate only, computing and writing nothing.

    ``executor``: ``auto``, ``inprocess``, ``processes`` (``workers`` processes of
    ``threads`` torch threads; 0: one per usable core), ``ray`` (at ``ray_address``, each
    task rerun ``retries`` times where its worker died), or an :class:`Executor`.
    ``device``: where units compute (default: the config's ``run.device``).
    ``recompute``: stages to compute again although stored (``teacher``, ``pretrain``,
    ``methods.NAME``, ``evaluators.NAME``). ``preset``: the preset ``cfg`` came from (the
    cost warning suggests smaller settings of it). A failed unit fails its cells and the
    grid finishes; only the teacher's failure is raised.
    """
    if isinstance(executor, str):
        check_choice(executor, workers, ray_address, retries)
    grid = cfg.to_dict()
    forced = parse_recompute(list(recompute), grid) if recompute else None
    cache_dir, db = paths(cache_dir, results_db)
    if not dry_run:
        check_writable(cache_dir)
    env = _env(grid, cache_dir, threads, progress, device)
    prepare_threads(env)
    cache = ArtifactCache(cache_dir, create=False)
    device_type = env.torch_device.type
    width = (side_by_side(executor, workers, threads, device_type) if isinstance(executor, str)
             else getattr(executor, "workers", 1))
    store, spills = planning_store(db, cache_dir)
    try:
        kept = len(store.unstored)
        try:
            with no_writes() if dry_run else nullcontext():
                plan = plan_grid(grid, env, store, forced, cache)
        except NotDownloaded as e:
            if not dry_run:
                raise
            return RunResult(None, kept=kept, spills=spills, device=device_type, workers=width,
                             not_downloaded=str(e))
        dataset = cached_dataset(grid["run"]["dataset"], env.data_root, env.cache_dir)
        # timed with the threads each unit will have (a pool's workers: cores // workers)
        calibration = Calibration(cache_dir, env.torch_device,
                                  threads or max(1, default_threads() // width))
        estimates = plan_estimates(plan, cache, store, dataset, calibration)
        warning = cost_warning(plan, estimates, grid, dataset, device_type, preset, width) or ""
    finally:
        store.close()
    if dry_run:
        return RunResult(plan, estimates, warning, kept=kept, spills=spills, device=device_type,
                         workers=width)
    if warning:
        notify(warning)
    chosen = executor if not isinstance(executor, str) else choose(
        executor, workers, threads, device_type, ray_address, retries)
    ArtifactCache(cache_dir)  # the cache folder, for the calibration and the spill files
    calibration.save()
    result = _execute(plan, env, db, cache_dir, spills, chosen, estimates, notify)
    return replace(result, warning=warning, kept=kept, spills=spills, workers=width)


def evaluate_set(directory: str | Path, cfg: BenchConfig, *, name: str | None = None,
                 cache_dir: str | Path | None = None, results_db: str | Path | None = None,
                 threads: int = 0, progress: bool = True, preset: str | None = None,
                 notify: Notify = _stderr) -> RunResult:
    """Pre-train and evaluate encoders on a stored DistilledSet ``directory`` like a
    method's output (no teacher, no distillation), as the row ``name`` (default
    ``import:<directory name>``), with the pre-training, evaluators and grid of ``cfg``
    (``preset``: where they came from, named in the recipe line)."""
    directory = Path(directory).expanduser()
    name = name or f"import:{directory.resolve().name}"
    check_set_name(name)
    grid = cfg.to_dict()
    cache_dir, db = paths(cache_dir, results_db)
    check_writable(cache_dir)
    env = _env(grid, cache_dir, threads, progress)
    store, spills = planning_store(db, cache_dir)
    try:
        plan = plan_external(grid, env, store, directory, name)
        kept = len(store.unstored)
    finally:
        store.close()
    recipe = f"preset {preset}" if preset else "the built-in defaults (no --preset)"
    notify(f"pre-training recipe: {recipe}: {describe_pretrain(grid['pretrain'])}")
    ArtifactCache(cache_dir)  # the cache folder, for the set's copy and the spill files
    return replace(_execute(plan, env, db, cache_dir, spills, InProcessExecutor(), None,
                            notify), kept=kept, spills=spills)


def _execute(plan: Plan, env: Env, db: Path, cache_dir: Path, spills: list[Path],
             executor: Executor, estimates: dict[tuple[str, str], Estimate] | None,
             notify: Notify) -> RunResult:
    """Run a plan: the rows spill files kept stored first, the plan's rows stored as they
    come; rows the database does not take are reported (also when the run is stopped)."""
    store = _writing_store(db, cache_dir, spills, notify)
    start = time.perf_counter()
    try:  # closed here, not at garbage collection: the WAL is folded in before we return
        frame = run_plan(plan, env, store, executor, estimates)
    except BaseException:
        report = unstored_report(store)
        if report:
            notify(report.rstrip("\n"))
        raise
    finally:
        store.close()
    return RunResult(plan, estimates or {}, frame=frame, store=store,
                     seconds=time.perf_counter() - start, device=env.torch_device.type)


def _writing_store(db: Path, cache_dir: Path, spills: list[Path], notify: Notify) -> ResultStore:
    """The database opened for writing, the rows of ``spills`` stored in it first (one
    line when there were some)."""
    store = ResultStore(db, spill_dir=cache_dir)
    if spills:
        store.keep_files(spills)
        store.flush()
        stored = sum(n for _, n in store.stored_from)
        if stored:
            notify(f"stored {stored} result rows that an earlier run kept in "
                   f"{' '.join(str(p) for p, _ in store.stored_from)}")
    return store
