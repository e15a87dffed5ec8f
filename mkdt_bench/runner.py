"""The planner: a grid's configuration becomes units of the stages in
:mod:`mkdt_bench.stages`, run by an executor in the order data flows::

    data set -> teacher -> representations -> (sub-units) -> distilled set
             -> pre-trained encoder -> evaluation cells -> result rows

Units are self-contained: their inputs are named by cache keys and their outputs are
cache artifacts or result rows, so an :class:`Executor` can run them anywhere that sees
the cache directory (see :mod:`mkdt_bench.executors`). Dependencies follow the cache
keys: a distillation waits for its method's sub-units (e.g. expert trajectories), a
pre-training for its distilled set, a cell for its encoder; only this process writes rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mkdt_bench.cache import ArtifactCache, config_hash, file_sha256
from mkdt_bench.config import resolve_budget
from mkdt_bench.distilled import DistilledSet, check_compatible
from mkdt_bench.errors import UserError
from mkdt_bench.executors import Executor, InProcessExecutor, Task
from mkdt_bench.methods import METHODS, create_method
from mkdt_bench.progress import Progress
from mkdt_bench.results import FAILED, TEACHER_ROW, ResultStore
from mkdt_bench.stages.distill import (
    DistillUnit,
    MethodInputs,
    MethodSubUnit,
    run_distill,
    run_sub_unit,
)
from mkdt_bench.stages.env import (
    Env,
    cached_dataset,
    error_text,
    load_tasks,
    package_versions,
    prepare_process,
)
from mkdt_bench.stages.evaluate import Cell, EvalUnit, run_eval
from mkdt_bench.stages.pretrain import encoder_key, run_pretrain
from mkdt_bench.stages.teacher import ensure_teacher
from mkdt_bench.variants import parse_label


@dataclass
class Plan:
    """The resolved grid: units still to run and the keys of every cell it covers."""

    sub_units: list[MethodSubUnit]
    distill_units: list[DistillUnit]
    distill_after: dict[str, tuple[tuple[str, str], ...]]  # distilled key -> its sub-units
    eval_units: list[EvalUnit]
    cell_keys: list[str]
    budget: int


def plan_grid(cfg: dict[str, Any], env: Env, store: ResultStore) -> Plan:
    """Train/load the teacher, then list the sub-units, distillations and cells not yet
    computed."""
    run = cfg["run"]
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    n_train = len(dataset.train_images)
    n_source = run["train_pool"] if 0 < run["train_pool"] < n_train else n_train
    budget = resolve_budget(run["budget"], n_source)
    tasks = run["tasks"] or [run["dataset"]]
    missing = load_tasks(tasks, env, dataset)
    tkey, rkey = ensure_teacher(cfg, env, dataset)
    inputs = MethodInputs(run["dataset"], rkey, tkey, cfg["teacher"]["arch"],
                          n_source if n_source < n_train else 0)
    base = {"dataset": run["dataset"], "fingerprint": dataset.fingerprint, "teacher": tkey}
    distill_units: dict[str, DistillUnit] = {}
    eval_units: list[EvalUnit] = []
    cell_keys: list[str] = []

    def cells_for(encoder_id: dict[str, Any], seed: int) -> tuple[Cell, ...]:
        out = []
        for evaluator in run["evaluators"]:
            options = cfg["evaluators"][evaluator]
            for task in tasks:
                for fraction in run["fractions"]:
                    key = config_hash({**encoder_id, "evaluator": evaluator, "options": options,
                                       "task": task, "fraction": fraction, "seed": seed})
                    cell_keys.append(key)
                    if not store.has(key):
                        out.append(Cell(key, evaluator, options, task, fraction,
                                        dataset.image_size, missing.get(task, "")))
        return tuple(out)

    for label in run["methods"]:
        method = parse_label(label)[0]
        options = cfg["methods"][label]
        seeded = METHODS.get(method).seeded and not run["shared_distillation"]
        sub_keys = [f"{sub.stage}/{sub.key}"
                    for sub in create_method(method, **options).sub_units(inputs.key)]
        # a variant's rows are its own even where its set equals another row's
        row_id = {"row": label} if label != method else {}
        # rows of methods that read the training labels are marked (the SSL premise)
        marks = {"uses_labels": True} if METHODS.get(method).uses_labels else {}
        for seed in run["seeds"]:
            distill_seed = seed if seeded else 0
            key_options = METHODS.get(method).key_options(options)
            dkey = ArtifactCache.key("distilled", {"method": method, "options": key_options,
                                                   "budget": budget, "seed": distill_seed},
                                     {"images": inputs.key})
            for arch in run["archs"]:
                row_config = {**base, "method": method, **row_id, **marks,
                              "method_options": options,
                              "budget": budget, "train_pool": inputs.pool,
                              "distill_seed": distill_seed, "arch": arch,
                              "pretrain": cfg["pretrain"], "teacher_config": cfg["teacher"],
                              "artifacts": [f"teacher/{tkey}", f"representations/{rkey}",
                                            *sub_keys, f"distilled/{dkey}", "encoder/"
                                            + encoder_key(arch, cfg["pretrain"], seed, dkey)]}
                cells = cells_for({"distilled": dkey, "arch": arch, "pretrain": cfg["pretrain"],
                                   **row_id}, seed)
                if not cells:
                    continue
                distill_units[dkey] = DistillUnit(dkey, method, options, budget, distill_seed,
                                                  inputs)
                eval_units.append(EvalUnit(label, arch, seed, budget, run["dataset"], dkey,
                                           cfg["pretrain"], cells, row_config))
    if run["teacher_row"]:
        n_teacher = min(cfg["teacher"]["train_images"] or len(dataset.train_images),
                        len(dataset.train_images))
        for seed in run["seeds"]:
            cells = cells_for({"teacher": tkey}, seed)
            if cells:
                eval_units.append(EvalUnit(TEACHER_ROW, cfg["teacher"]["arch"], seed,
                                           n_teacher, run["dataset"], tkey, {}, cells,
                                           {**base, "teacher_config": cfg["teacher"],
                                            "artifacts": [f"teacher/{tkey}"]}))
    cache = ArtifactCache(env.cache_dir)
    sub_units: dict[tuple[str, str], MethodSubUnit] = {}
    distill_after: dict[str, tuple[tuple[str, str], ...]] = {}
    for unit in distill_units.values():
        if cache.exists("distilled", unit.key):
            continue
        needed = [sub for sub in create_method(unit.method, **unit.options).sub_units(inputs.key)
                  if not cache.exists(sub.stage, sub.key)]
        for sub in needed:
            sub_units[sub.stage, sub.key] = MethodSubUnit(sub, inputs)
        distill_after[unit.key] = tuple((sub.stage, sub.key) for sub in needed)
    return Plan(list(sub_units.values()), list(distill_units.values()), distill_after,
                eval_units, cell_keys, budget)


#: Key prefix of the tasks whose results are result rows.
EVALUATE = "evaluate:"


def grid_tasks(plan: Plan) -> list[Task]:
    """The plan as tasks whose dependencies follow the cache keys: a distillation starts
    once its method's sub-units exist, a pre-training once its distilled set exists, and
    each evaluation cell once its encoder exists."""
    tasks = [Task(f"{u.sub.stage}:{u.sub.key}", run_sub_unit, u) for u in plan.sub_units]
    distilled = {u.key for u in plan.distill_units}
    tasks += [Task(f"distilled:{u.key}", run_distill, u,
                   tuple(f"{stage}:{key}" for stage, key in plan.distill_after.get(u.key, ())))
              for u in plan.distill_units]
    for i, unit in enumerate(plan.eval_units):
        after: tuple[str, ...] = ()
        if unit.method != TEACHER_ROW and any(not c.missing for c in unit.cells):
            upstream = (f"distilled:{unit.source_key}",) if unit.source_key in distilled else ()
            tasks.append(Task(f"encoder:{i}", run_pretrain, unit, upstream))
            after = (f"encoder:{i}",)
        tasks += [Task(f"{EVALUATE}{i}:{j}", run_eval, replace(unit, cells=(cell,)),
                       () if cell.missing else after)
                  for j, cell in enumerate(unit.cells)]
    return tasks


def run_grid(cfg: dict[str, Any], env: Env, store: ResultStore,
             executor: Executor | None = None) -> pd.DataFrame:
    """Run every missing cell of the grid and return all of the grid's rows.

    A failed unit does not stop the grid: a failed distillation fails the cells that
    need it, a failed evaluation unit its own cells; a rerun computes only what is missing.
    The driver alone writes the database.
    """
    prepare_process(env)
    return run_plan(plan_grid(cfg, env, store), env, store, executor)


def run_plan(plan: Plan, env: Env, store: ResultStore,
             executor: Executor | None = None) -> pd.DataFrame:
    """Execute a plan's tasks, write their rows, and return all of the plan's rows."""
    executor = executor or InProcessExecutor()
    prepare_process(env)
    package_versions()  # read the git revision now, not when the first row is written
    progress = Progress(env.progress)
    tasks = grid_tasks(plan)
    bar = progress.bar(len(tasks), "grid")
    for task, result in executor.run(tasks, env):
        if task.key.startswith(EVALUATE):
            rows = result
            if isinstance(result, Exception):
                rows = run_eval(replace(task.unit, upstream_error=error_text(result)), env)
            store.add(rows)
            for r in rows:
                if r.status == FAILED:
                    progress.write(f"cell {r.method}/{r.arch}/{r.task}@{r.fraction:g} seed "
                                   f"{r.seed} failed: {r.error}")
        elif isinstance(result, Exception):
            progress.write(f"{task.key} failed: {error_text(result)}")
        bar.update(1)
    bar.close()
    return store.frame(cell_key=plan.cell_keys)


# --------------------------------------------------------------------------- external sets


def plan_external(cfg: dict[str, Any], env: Env, store: ResultStore, directory: str | Path,
                  name: str) -> Plan:
    """Evaluate a DistilledSet directory (no teacher, no method): its copy becomes a
    ``distilled`` artifact keyed by its content, then the usual encoders and cells.

    The set must have the image shape and normalisation of ``run.dataset``, the data it
    was distilled from (what pre-training feeds the encoder); downstream tasks keep their
    own statistics (spec ``evaluation.md`` A.5) and need only the channel count."""
    run = cfg["run"]
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"distilled set directory {str(directory)!r} does not exist")
    distilled = DistilledSet.load(directory)
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    tasks = run["tasks"] or [run["dataset"]]
    check_compatible(distilled, dataset.channels, dataset.image_size, dataset.mean, dataset.std,
                     run["dataset"], f"distilled set {str(directory)!r}")
    missing = load_tasks(tasks, env, dataset)
    content = {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}
    dkey = ArtifactCache.key("distilled", {"import": content})
    cache = ArtifactCache(env.cache_dir)

    def produce(tmp: Path) -> dict[str, Any]:
        distilled.save(tmp)
        return {"num_images": len(distilled), "method": name, "imported_from": str(directory)}

    cache.get_or_create("distilled", dkey, produce, config={"import": content})
    eval_units, cell_keys = [], []
    for seed in run["seeds"]:
        for arch in run["archs"]:
            ekey = encoder_key(arch, cfg["pretrain"], seed, dkey)
            cells = []
            for evaluator in run["evaluators"]:
                options = cfg["evaluators"][evaluator]
                for task in tasks:
                    for fraction in run["fractions"]:
                        key = config_hash({"distilled": dkey, "arch": arch,
                                           "pretrain": cfg["pretrain"], "evaluator": evaluator,
                                           "options": options, "task": task,
                                           "fraction": fraction, "seed": seed})
                        cell_keys.append(key)
                        if not store.has(key):
                            cells.append(Cell(key, evaluator, options, task, fraction,
                                              dataset.image_size, missing.get(task, "")))
            row_config = {"dataset": run["dataset"], "fingerprint": dataset.fingerprint,
                          "imported_from": str(directory), "files_sha256": content,
                          "set_method": distilled.method, "arch": arch,
                          "pretrain": cfg["pretrain"],
                          "artifacts": [f"distilled/{dkey}", f"encoder/{ekey}"]}
            if cells:
                eval_units.append(EvalUnit(name, arch, seed, len(distilled), run["dataset"],
                                           dkey, cfg["pretrain"], tuple(cells), row_config))
    return Plan([], [], {}, eval_units, cell_keys, len(distilled))
