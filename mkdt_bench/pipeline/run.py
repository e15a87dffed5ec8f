"""Running a plan: its units become executor tasks whose dependencies follow the cache
keys (a distillation waits for its method's sub-units, a pre-training for its distilled
set, a cell for its encoder); the executor runs them anywhere that sees the cache
directory (:mod:`mkdt_bench.pipeline.executors`), and only this process writes rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from typing import Any

import pandas as pd

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.pipeline.costs import CostBook, Estimate
from mkdt_bench.pipeline.executors import Executor, InProcessExecutor, Task
from mkdt_bench.pipeline.plan import EVALUATE, TEACHER, TO_COMPUTE, Plan, Step
from mkdt_bench.progress import GridTask, Measured, Progress
from mkdt_bench.results import FAILED, STORE_ERRORS, ResultRow, ResultStore, rows_frame
from mkdt_bench.stages.accounting import artifact_peak
from mkdt_bench.stages.distill import run_distill, run_import, run_sub_unit
from mkdt_bench.stages.env import Env, error_text, package_versions, prepare_threads
from mkdt_bench.stages.evaluate import EvalUnit, run_eval
from mkdt_bench.stages.pretrain import PretrainUnit, run_pretrain
from mkdt_bench.stages.teacher import run_teacher


def grid_tasks(plan: Plan) -> list[Task]:
    """The plan as tasks whose dependencies follow the cache keys: the teacher first (alone:
    it has the machine to itself), a distillation once its method's sub-units exist, a
    pre-training once its distilled set exists, and each evaluation cell once its encoder
    (or the teacher) exists."""
    tasks: list[Task] = []
    teacher: tuple[str, ...] = ()
    if plan.teacher is not None:
        tasks.append(Task(TEACHER, run_teacher, plan.teacher, alone=True))
        teacher = (TEACHER,)
    tasks += [Task(f"{u.sub.stage}:{u.sub.key}", run_sub_unit, u, teacher)
              for u in plan.sub_units]
    tasks += [Task(f"distilled:{u.key}", run_import, u) for u in plan.imports]
    distilled = {u.key for u in plan.distill_units} | {u.key for u in plan.imports}
    tasks += [Task(f"distilled:{u.key}", run_distill, u, teacher + tuple(
                   f"{stage}:{key}" for stage, key in plan.distill_after.get(u.key, ())))
              for u in plan.distill_units]
    for i, unit in enumerate(plan.eval_units):
        encoder = unit.encoder
        after: tuple[str, ...] = () if isinstance(encoder, PretrainUnit) else teacher
        if isinstance(encoder, PretrainUnit) and any(not c.missing for c in unit.cells):
            upstream = ((f"distilled:{encoder.distilled_key}",)
                        if encoder.distilled_key in distilled else ())
            tasks.append(Task(f"encoder:{i}", run_pretrain, encoder, upstream))
            after = (f"encoder:{i}",)
        tasks += [Task(f"{EVALUATE}{i}:{j}", run_eval, replace(unit, cells=(cell,)),
                       () if cell.missing else after)
                  for j, cell in enumerate(unit.cells)]
    return tasks


def run_plan(plan: Plan, env: Env, store: ResultStore, executor: Executor | None = None,
             estimates: dict[tuple[str, str], Estimate] | None = None) -> pd.DataFrame:
    """Execute the plan's tasks (the teacher's first), write their rows, and return all of
    the plan's rows.

    A failed unit does not stop the grid: a failed distillation fails the cells that need
    it, a failed evaluation unit its own cells; a rerun computes only what is missing. Only
    the teacher's failure is raised: nothing runs without the teacher. This process alone
    writes the database; it computes nothing on the device (the teacher is the first task).

    Rows the database does not take are kept (:meth:`ResultStore.save`: a spill file) and
    tried again at the end (:meth:`ResultStore.flush`); the rows returned include them, and
    ``store.unstored`` says which are left unstored (issue 29, section 3).

    Progress is weighed by each step's estimated cost (``estimates``, by default what the
    cache and the database measured; :mod:`mkdt_bench.pipeline.costs`): bars on a terminal, else
    one line per finished step."""
    executor = executor or InProcessExecutor()
    env = executor.device_env(env)
    prepare_threads(env)
    package_versions()  # read the git revision now, not when the first row is written
    progress = Progress(env.progress)
    tasks = grid_tasks(plan)
    steps = {step.task: step for step in plan.steps if step.task}
    if estimates is None and progress.enabled:
        book = CostBook(ArtifactCache(env.cache_dir, create=False), store,
                        env.torch_device.type)
        estimates = {(s.stage, s.key): book.estimate(s) for s in plan.to_compute}
    estimates = estimates or {}

    def weighed(key: str) -> GridTask:
        step = steps.get(key)
        if step is None or step.status != TO_COMPUTE:
            return GridTask(key, "", "", 0.0)
        estimate = estimates.get((step.stage, step.key))
        # pre-trainings and cells of one grid cost alike; a method's units do not
        group = step.stage if step.stage in ("encoder", "cell") else \
            f"{step.stage}:{step.label.split(' ')[0]}"
        return GridTask(key, f"{step.stage} {step.label}", group,
                        estimate.seconds if estimate else None)

    grid = progress.grid([weighed(task.key) for task in tasks])
    here = isinstance(executor, InProcessExecutor)
    if here:
        tasks = [_unless_stored(t, store, plan.planned_at) if t.key.startswith(EVALUATE)
                 else t for t in tasks]
    with closing(executor.run(tasks, env)) as results:  # a teacher error stops the workers
        computed = _collect(env, store, executor, results, steps, grid, progress)
    grid.close()
    store.flush()
    return _plan_rows(plan, store, computed)


def _collect(env: Env, store: ResultStore, executor: Executor,
             results: Iterator[tuple[Task, Any]], steps: dict[str, Step], grid: Any,
             progress: Progress) -> list[ResultRow]:
    """Store the rows of the finished tasks as they come; the rows computed."""
    here = isinstance(executor, InProcessExecutor)
    computed: list[ResultRow] = []
    while True:
        with Measured(progress.enabled) as measured:
            item = next(results, None)
        if item is None:
            break
        task, result = item
        if task.fn in (run_teacher, run_import) and isinstance(result, Exception):
            raise result  # nothing of the grid can run without the teacher (or the set)
        if task.key.startswith(EVALUATE):
            rows = result
            if isinstance(result, Exception):
                rows = run_eval(replace(task.unit, upstream_error=error_text(result)), env)
            store.save(rows)
            computed += rows
            for r in rows:
                if r.status == FAILED:
                    progress.write(f"cell {r.method}/{r.arch}/{r.task}@{r.fraction:g} seed "
                                   f"{r.seed} failed: {r.error}")
        elif isinstance(result, Exception):
            progress.write(f"{task.key} failed: {error_text(result)}")
        step = steps.get(task.key)
        peak = measured.peak_mib if here or step is None else artifact_peak(
            ArtifactCache(env.cache_dir, create=False), step.stage, step.key)
        grid.done(task.key, measured.seconds, peak, failed=isinstance(result, Exception))
    return computed


def _plan_rows(plan: Plan, store: ResultStore, computed: list[ResultRow]) -> pd.DataFrame:
    """The plan's rows from the database (with those it did not take); the rows computed
    now when it cannot be read."""
    try:
        return store.frame(cell_key=plan.cell_keys)
    except STORE_ERRORS:
        rows = sorted([*computed, *store.unstored], key=lambda r: r.created)
        return rows_frame({r.cell_key: r for r in rows}.values())


def _unless_stored(task: Task, store: ResultStore, since: float) -> Task:
    """``task`` (one evaluation cell, run in this process) computing nothing where its ok
    row was stored after ``since`` (the plan) by another ``run`` on the same database."""
    key = task.unit.cells[0].key

    def run(unit: EvalUnit, env: Env) -> list[ResultRow]:
        try:
            created = store.done([key]).get(key, (0.0, None))[0]
        except STORE_ERRORS:  # the database cannot be read now: the cell is computed
            created = 0.0
        return [] if created >= since else task.fn(unit, env)

    return replace(task, fn=run)
