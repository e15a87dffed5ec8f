"""The planner: a grid's configuration becomes units of the stages in
:mod:`mkdt_bench.stages`, run by an executor in the order data flows::

    data set -> teacher -> representations -> (sub-units) -> distilled set
             -> pre-trained encoder -> evaluation cells -> result rows

Units are self-contained: their inputs are named by cache keys and their outputs are
cache artifacts or result rows, so an :class:`Executor` can run them anywhere that sees
the cache directory (see :mod:`mkdt_bench.pipeline.executors`). Dependencies follow the cache
keys: a distillation waits for its method's sub-units (e.g. expert trajectories), a
pre-training for its distilled set, a cell for its encoder; only this process writes rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mkdt_bench.cache import (
    ArtifactCache,
    CorruptManifest,
    config_hash,
    file_sha256,
    is_stale,
)
from mkdt_bench.code_version import code_key, code_version
from mkdt_bench.config import resolve_budget
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.distilled import DistilledSet, check_compatible
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS
from mkdt_bench.methods import METHODS, create_method
from mkdt_bench.methods.imported import check_not_empty
from mkdt_bench.pipeline.costs import (
    CostBook,
    Estimate,
    cell_signature,
    distill_signature,
    encoder_signature,
    like,
    substage_signature,
    teacher_signature,
)
from mkdt_bench.pipeline.executors import Executor, InProcessExecutor, Task
from mkdt_bench.pretraining import pretrain_key
from mkdt_bench.progress import GridTask, Measured, Progress
from mkdt_bench.report.summary import short_task_name
from mkdt_bench.results import (
    FAILED,
    STORE_ERRORS,
    TEACHER_ROW,
    ResultRow,
    ResultStore,
    rows_frame,
)
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
    prepare_threads,
)
from mkdt_bench.stages.evaluate import Cell, EvalUnit, run_eval
from mkdt_bench.stages.pretrain import encoder_key, run_pretrain
from mkdt_bench.stages.teacher import (
    TeacherUnit,
    representations_key,
    run_teacher,
    teacher_key,
)
from mkdt_bench.variants import parse_label

#: Task key of the teacher (and its representations), the grid's first task.
TEACHER = "teacher"
#: Key prefix of the tasks whose results are result rows.
EVALUATE = "evaluate:"

#: What a step of the plan needs: computing, nothing (in the cache, or a cell in the
#: database), or nothing because every cell that would use it is stored already.
TO_COMPUTE, CACHED, NOT_NEEDED, NO_DATA = "to compute", "cached", "not needed", "n/a (no data)"


@dataclass(frozen=True)
class Step:
    """One piece of a grid's work as planned: an artifact or a cell, what it needs
    (``status``), the executor task that computes it, and what its cost is matched on
    (:mod:`mkdt_bench.pipeline.costs`): ``like`` (manifests of the same stage and config, seed
    aside), ``peers`` (artifacts of the same work, e.g. the other expert trajectories of
    a method) and ``signature`` (result rows of the same configuration)."""

    stage: str
    key: str
    label: str
    status: str
    task: str = ""
    like: str = ""
    peers: tuple[str, ...] = ()
    signature: str = ""


@dataclass
class Plan:
    """The resolved grid: units still to run, the keys of every cell it covers, and every
    step with its status (what ``--dry-run`` lists and the progress weighs)."""

    sub_units: list[MethodSubUnit]
    distill_units: list[DistillUnit]
    distill_after: dict[str, tuple[tuple[str, str], ...]]  # distilled key -> its sub-units
    eval_units: list[EvalUnit]
    cell_keys: list[str]
    budget: int
    teacher: TeacherUnit | None = None
    steps: list[Step] = field(default_factory=list)
    n_train: int = 0
    n_source: int = 0
    #: When the plan was made: a cell another process stores after it is not computed again.
    planned_at: float = field(default_factory=time.time)
    #: ``{"stage/key": problems}`` of the corrupt artifacts the plan computes again.
    corrupt: dict[str, list[str]] = field(default_factory=dict)

    @property
    def to_compute(self) -> list[Step]:
        return [s for s in self.steps if s.status == TO_COMPUTE]


@dataclass(frozen=True)
class Recompute:
    """Stages to compute again although their results are stored (``--recompute``).

    What the named stages stored before ``since`` counts as stale: the teacher (and its
    representations), a method's sub-units, sets and what it cached for them, the
    encoders (``pretrain``), or an evaluator's cells. Everything computed from a stale
    artifact follows it (:class:`~mkdt_bench.cache.ArtifactCache` freshness), and each
    replacement takes the old one's place only once complete.
    """

    stages: frozenset[str]
    since: float

    def after(self, stage: str) -> float:
        """``since`` for a named stage, else 0 (nothing forced)."""
        return self.since if stage in self.stages else 0.0


def parse_recompute(stages: list[str], cfg: dict[str, Any]) -> Recompute:
    """Check ``--recompute`` values against the grid; a UserError names a bad one and
    lists what this grid has."""
    run = cfg["run"]
    allowed = ["teacher", "pretrain",
               *dict.fromkeys(f"methods.{parse_label(label)[0]}" for label in run["methods"]),
               *(f"evaluators.{name}" for name in run["evaluators"])]
    for stage in stages:
        if stage not in allowed:
            raise UserError(f"--recompute {stage!r} is not a stage of this grid; choose from "
                            f"{', '.join(allowed)}")
    return Recompute(frozenset(stages), time.time())


class _Freshness:
    """Which artifacts of a plan must be computed: missing, corrupt (see
    :meth:`ArtifactCache.verify`, listed in ``corrupt``), stale (see
    :meth:`ArtifactCache.current`), forced by ``--recompute``, or computed from an input
    that will be computed again; decided once per artifact, inputs first."""

    def __init__(self, cache: ArtifactCache) -> None:
        self.cache = cache
        self.needed: dict[str, bool] = {}
        self.corrupt: dict[str, list[str]] = {}

    def _redone(self, artifacts: list[str], stamps: dict[str, float]) -> bool:
        """Whether one of ``artifacts`` that is stored (intact or corrupt) is computed again;
        an absent one (e.g. pruned) does not make its products stale."""
        return any(self.needed.get(a, False) for a in artifacts
                   if a in stamps or a in self.corrupt)

    def check(self, artifact: str, inputs: list[str], fresh_after: float = 0.0) -> bool:
        """Whether ``artifact`` must be computed; ``inputs`` are checked before."""
        if artifact not in self.needed:
            stage, key = artifact.split("/", 1)
            stamps = self.cache.stamps(inputs)
            path = self.cache.path(stage, key)
            bad = self.cache.verify(stage, key) \
                if path.exists() or path.is_symlink() else []
            if bad:
                self.corrupt[artifact] = bad
            self.needed[artifact] = bool(bad) or self._redone(inputs, stamps) or not \
                self.cache.current(stage, key, stamps, fresh_after)
        return self.needed[artifact]

    def row_stale(self, row: tuple[float, dict[str, float] | None], artifacts: list[str],
                  fresh_after: float = 0.0) -> bool:
        """Whether a stored row (created, built_from) predates one of its artifacts."""
        created, built_from = row
        stamps = self.cache.stamps(artifacts)
        if created < fresh_after or self._redone(artifacts, stamps):
            return True
        return is_stale({"created": created, "built_from": built_from}, stamps)


def check_labelled(tasks: list[str], missing: dict[str, str], fractions: list[float], env: Env,
                   source: ImageDataset) -> None:
    """Refuse, before any work, a label fraction that leaves a task (present) fewer than two
    labelled images: a probe of one image predicts one class whatever the encoder."""
    for name in tasks:
        if name in missing:
            continue
        n = len(cached_dataset(name, env.data_root, env.cache_dir, source.image_size
                               ).train_labels)
        for fraction in fractions:
            if int(n * fraction) < 2:
                raise UserError(f"label fraction {fraction:g} selects {int(n * fraction)} of "
                                f"the {n:,} training images of task {name!r}; a probe needs "
                                "at least 2 labelled images, so give a larger fraction")


def grid_cells(cfg: dict[str, Any], encoder_id: dict[str, Any], seed: int, tasks: list[str],
               image_size: int | None, missing: dict[str, str]) -> list[Cell]:
    """Every (evaluator, task, label fraction) cell of an encoder (``encoder_id``: the keys
    that name it), keyed by a hash of all of it and of the evaluator's code version."""
    out = []
    for evaluator in cfg["run"]["evaluators"]:
        options = cfg["evaluators"][evaluator]
        cls = EVALUATORS.get(evaluator)
        code = code_key(cls)
        for task in tasks:
            for fraction in cfg["run"]["fractions"]:
                key = config_hash({**encoder_id, "evaluator": evaluator, "options": options,
                                   "task": task, "fraction": fraction, "seed": seed,
                                   **({"evaluator_code": code} if code else {})})
                out.append(Cell(key, evaluator, options, task, fraction, image_size,
                                missing.get(task, ""), code_version(cls)))
    return out


def cells_to_compute(cells: list[Cell], artifacts: list[str], store: ResultStore,
                     fresh: _Freshness, recompute: Recompute) -> tuple[Cell, ...]:
    """The cells without a stored row that is current (computed from the present
    ``artifacts``, and not before ``--recompute evaluators.NAME``)."""
    done = store.done([c.key for c in cells])
    return tuple(c for c in cells if c.key not in done or fresh.row_stale(
        done[c.key], artifacts, recompute.after(f"evaluators.{c.evaluator}")))


def cell_steps(cells: list[Cell], todo: tuple[Cell, ...], unit: int, what: str, dataset: str,
               arch: str, teacher: bool) -> tuple[tuple[Cell, ...], list[Step]]:
    """The cells of evaluation unit ``unit`` still to compute (among ``todo``) and a step
    for each of ``cells`` (``what``: the encoder, e.g. ``mkdt convnet seed 0``)."""
    keys = {c.key for c in todo}
    out: list[Cell] = []
    steps = []
    for cell in cells:
        status, task_key = CACHED, ""
        if cell.key in keys:
            status = NO_DATA if cell.missing else TO_COMPUTE
            task_key = f"{EVALUATE}{unit}:{len(out)}"
            out.append(cell)
        steps.append(Step(
            "cell", cell.key, f"{what}: {cell.evaluator} {short_task_name(cell.task)} @ "
            f"{cell.fraction * 100:g}%", status, task_key,
            signature=cell_signature(dataset, arch, cell.evaluator, cell.options, cell.task,
                                     cell.fraction, teacher)))
    return tuple(out), steps


def plan_grid(cfg: dict[str, Any], env: Env, store: ResultStore,
              recompute: Recompute | None = None, cache: ArtifactCache | None = None) -> Plan:
    """The grid's units and steps, computing and writing nothing: the data set is loaded
    (and its tasks), every cache key derived from the config, and each step looked up in
    ``cache`` (default: a read-only view of ``env.cache_dir``) and ``store`` (which may be
    :meth:`ResultStore.read_only`): what is missing, stale (computed from an input that has
    changed since), or named by ``recompute`` is to compute. The teacher is trained later,
    by :func:`run_plan`."""
    recompute = recompute or Recompute(frozenset(), 0.0)
    cache = cache or ArtifactCache(env.cache_dir, create=False)
    run = cfg["run"]
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    n_train = len(dataset.train_images)
    for option, images in (("run.train_pool", run["train_pool"]),
                           ("teacher.train_images", cfg["teacher"]["train_images"])):
        if images > n_train:  # it would silently mean every image, under another key
            raise UserError(f"{option}={images} is larger than the {n_train:,} training images "
                            f"of {run['dataset']}; give at most {n_train} (0 = all of them)")
    teacher = cfg["teacher"]
    n_teacher = teacher["train_images"] or n_train
    if not teacher["checkpoint"] and teacher["batch_size"] > n_teacher:  # refused up front
        raise UserError(f"teacher.batch_size={teacher['batch_size']} is larger than the "
                        f"{n_teacher} training images; lower it")
    n_source = run["train_pool"] if 0 < run["train_pool"] < n_train else n_train
    budget = resolve_budget(run["budget"], n_source)
    tasks = run["tasks"] or [run["dataset"]]
    missing = load_tasks(tasks, env, dataset)
    check_labelled(tasks, missing, run["fractions"], env, dataset)
    tkey = teacher_key(cfg, dataset)
    rkey = representations_key(tkey)
    teacher_arch = cfg["teacher"]["arch"]
    inputs = MethodInputs(run["dataset"], rkey, tkey, teacher_arch,
                          n_source if n_source < n_train else 0)
    fingerprint = dataset.fingerprint
    base = {"dataset": run["dataset"], "fingerprint": fingerprint, "teacher": tkey,
            "source_images": n_source}
    fresh = _Freshness(cache)
    teacher, reps = f"teacher/{tkey}", f"representations/{rkey}"
    teacher_needed = fresh.check(teacher, [], recompute.after("teacher"))
    teacher_needed = fresh.check(reps, [teacher]) or teacher_needed
    distill_units: dict[str, DistillUnit] = {}
    eval_units: list[EvalUnit] = []
    cell_keys: list[str] = []
    grid_cell_steps: list[Step] = []
    encoder_steps: dict[str, Step] = {}
    #: distilled key -> (row label, method, options, seed, --recompute time)
    distilled_labels: dict[str, tuple[str, str, dict[str, Any], int, float]] = {}

    def cells_for(encoder_id: dict[str, Any], seed: int, row: str, arch: str,
                  artifacts: list[str]) -> tuple[Cell, ...]:
        """The encoder's cells still to compute; every cell becomes a step."""
        cells = grid_cells(cfg, encoder_id, seed, tasks, dataset.image_size, missing)
        cell_keys.extend(c.key for c in cells)
        todo = cells_to_compute(cells, artifacts, store, fresh, recompute)
        out, steps = cell_steps(cells, todo, len(eval_units), f"{row} {arch} seed {seed}",
                                run["dataset"], arch, row == TEACHER_ROW)
        grid_cell_steps.extend(steps)
        return out

    # sub-units forced by --recompute first: other methods may share them (mkdt, highloss)
    for label in run["methods"]:
        method = parse_label(label)[0]
        if recompute.after(f"methods.{method}"):
            for sub in create_method(method, **cfg["methods"][label]).sub_units(inputs.key):
                fresh.check(f"{sub.stage}/{sub.key}", [reps], recompute.since)
    for label in run["methods"]:
        method = parse_label(label)[0]
        options = cfg["methods"][label]
        cls = METHODS.get(method)
        seeded = cls.seeded and not run["shared_distillation"]
        code = code_key(cls)
        method_after = recompute.after(f"methods.{method}")
        subs = create_method(method, **options).sub_units(inputs.key)
        sub_keys = [f"{sub.stage}/{sub.key}" for sub in subs]
        # a variant's rows are its own even where its set equals another row's
        row_id = {"row": label} if label != method else {}
        # rows of methods that read the training labels are marked (the SSL premise)
        marks = {"uses_labels": True} if METHODS.get(method).uses_labels else {}
        for seed in run["seeds"]:
            distill_seed = seed if seeded else 0
            # bf16 autocast changes a set by more than rounding: it names the set
            autocast = ({"precision": "bf16"} if env.precision == "bf16"
                        and cls.uses_autocast else {})
            key_config = {"method": method, "options": cls.key_options(options),
                          "budget": budget, "seed": distill_seed,
                          **({"code": code} if code else {}), **autocast}
            dkey = ArtifactCache.key("distilled", key_config, {"images": inputs.key})
            distilled = f"distilled/{dkey}"
            distilled_labels.setdefault(dkey, (label, method, options, distill_seed,
                                               method_after))
            for sub in subs:
                fresh.check(f"{sub.stage}/{sub.key}", [reps], method_after)
            fresh.check(distilled, [reps, *sub_keys], method_after)
            for arch in run["archs"]:
                ekey = encoder_key(arch, cfg["pretrain"], seed, dkey)
                encoder = f"encoder/{ekey}"
                artifacts = [teacher, reps, *sub_keys, distilled, encoder]
                row_config = {**base, "method": method, **row_id, **marks,
                              "method_options": options,
                              "method_code": code_version(cls), "budget": budget,
                              "train_pool": inputs.pool, "distill_seed": distill_seed,
                              "arch": arch, "pretrain": cfg["pretrain"],
                              "teacher_config": cfg["teacher"], "artifacts": artifacts}
                encoder_needed = fresh.check(encoder, [distilled], recompute.after("pretrain"))
                cells = cells_for({"distilled": dkey, "arch": arch,
                                   "pretrain": pretrain_key(cfg["pretrain"]), **row_id}, seed,
                                  label, arch, artifacts)
                needed = any(not c.missing for c in cells)
                if ekey not in encoder_steps or (needed and
                                                 encoder_steps[ekey].status == NOT_NEEDED):
                    status = (CACHED if not encoder_needed else
                              TO_COMPUTE if needed else NOT_NEEDED)
                    encoder_steps[ekey] = Step(
                        "encoder", ekey, f"{label} {arch} seed {seed}", status,
                        f"encoder:{len(eval_units)}" if status == TO_COMPUTE else "",
                        like=like("encoder", {"arch": arch, "pretrain": cfg["pretrain"],
                                              "seed": seed}, {"distilled": dkey}),
                        signature=encoder_signature(fingerprint, label, budget, arch,
                                                    cfg["pretrain"]))
                if not cells:
                    continue
                if dkey not in distill_units:
                    distill_units[dkey] = DistillUnit(dkey, method, options, budget,
                                                      distill_seed, inputs, code,
                                                      tuple(sub_keys), method_after)
                eval_units.append(EvalUnit(label, arch, seed, budget, run["dataset"], dkey,
                                           cfg["pretrain"], cells, row_config,
                                           fresh_after=recompute.after("pretrain")))
    if run["teacher_row"]:
        n_teacher = min(cfg["teacher"]["train_images"] or len(dataset.train_images),
                        len(dataset.train_images))
        for seed in run["seeds"]:
            cells = cells_for({"teacher": tkey}, seed, TEACHER_ROW, teacher_arch, [teacher])
            if cells:
                eval_units.append(EvalUnit(TEACHER_ROW, teacher_arch, seed,
                                           n_teacher, run["dataset"], tkey, {}, cells,
                                           {**base, "teacher_config": cfg["teacher"],
                                            "artifacts": [teacher]}))
    sub_units: dict[tuple[str, str], MethodSubUnit] = {}
    sub_steps: dict[tuple[str, str], Step] = {}
    distill_after: dict[str, tuple[tuple[str, str], ...]] = {}
    distill_steps = []
    for dkey, (label, method, options, distill_seed, method_after) in distilled_labels.items():
        status = (CACHED if not fresh.needed[f"distilled/{dkey}"] else
                  TO_COMPUTE if dkey in distill_units else NOT_NEEDED)
        distill_steps.append(Step(
            "distilled", dkey, f"{label} seed {distill_seed} ({budget} images)", status,
            f"distilled:{dkey}" if status == TO_COMPUTE else "",
            like=like("distilled", {"method": method, "options": options, "budget": budget,
                                    "seed": distill_seed}, {"images": inputs.key}),
            signature=distill_signature(fingerprint, teacher_arch, method, options, budget,
                                        inputs.pool)))
        if status != TO_COMPUTE:
            continue
        subs = create_method(method, **options).sub_units(inputs.key)
        peers = tuple(f"{sub.stage}/{sub.key}" for sub in subs)
        needed = []
        for i, sub in enumerate(subs):
            name = f"{label} {sub.stage} {i + 1}/{len(subs)}"
            if not fresh.needed[f"{sub.stage}/{sub.key}"]:
                sub_steps.setdefault((sub.stage, sub.key),
                                     Step(sub.stage, sub.key, name, CACHED))
                continue
            needed.append(sub)
            sub_units[sub.stage, sub.key] = MethodSubUnit(sub, inputs, method_after)
            sub_steps.setdefault((sub.stage, sub.key), Step(
                sub.stage, sub.key, name, TO_COMPUTE, f"{sub.stage}:{sub.key}", peers=peers,
                signature=substage_signature(fingerprint, teacher_arch, method, options,
                                             inputs.pool)))
        distill_after[dkey] = tuple((sub.stage, sub.key) for sub in needed)
    work = bool(eval_units or sub_units)
    tcfg = cfg["teacher"]
    source = "checkpoint" if tcfg["checkpoint"] else (
        f"{tcfg['ssl'] if tcfg['kind'] == 'ssl' else tcfg['kind']}, {tcfg['epochs']} "
        f"epoch{'' if tcfg['epochs'] == 1 else 's'}")
    teacher_step = Step(
        TEACHER, tkey, f"{teacher_arch} ({source}) + representations",
        TO_COMPUTE if work and teacher_needed else NOT_NEEDED if teacher_needed else CACHED,
        TEACHER if work and teacher_needed else "",
        like=like("teacher", tcfg, {"data": fingerprint}),
        signature=teacher_signature(fingerprint, tcfg))
    steps = [teacher_step, *sub_steps.values(), *distill_steps, *encoder_steps.values(),
             *grid_cell_steps]
    teacher_unit = TeacherUnit(cfg, tkey, rkey, recompute.after("teacher")) if work else None
    return Plan(list(sub_units.values()), list(distill_units.values()), distill_after,
                eval_units, cell_keys, budget, teacher_unit, steps, n_train, n_source,
                corrupt=fresh.corrupt)


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
    distilled = {u.key for u in plan.distill_units}
    tasks += [Task(f"distilled:{u.key}", run_distill, u, teacher + tuple(
                   f"{stage}:{key}" for stage, key in plan.distill_after.get(u.key, ())))
              for u in plan.distill_units]
    for i, unit in enumerate(plan.eval_units):
        after: tuple[str, ...] = teacher if unit.method == TEACHER_ROW else ()
        if unit.method != TEACHER_ROW and any(not c.missing for c in unit.cells):
            upstream = (f"distilled:{unit.source_key}",) if unit.source_key in distilled else ()
            tasks.append(Task(f"encoder:{i}", run_pretrain, unit, upstream))
            after = (f"encoder:{i}",)
        tasks += [Task(f"{EVALUATE}{i}:{j}", run_eval, replace(unit, cells=(cell,)),
                       () if cell.missing else after)
                  for j, cell in enumerate(unit.cells)]
    return tasks


def run_grid(cfg: dict[str, Any], env: Env, store: ResultStore,
             executor: Executor | None = None,
             recompute: Recompute | None = None) -> pd.DataFrame:
    """Run every missing (or stale, or ``recompute``d) cell of the grid and return all of
    the grid's rows.

    A failed unit does not stop the grid: a failed distillation fails the cells that
    need it, a failed evaluation unit its own cells; a rerun computes only what is missing.
    Only the teacher's failure stops it (raised here): nothing runs without the teacher.
    The driver alone writes the database; it computes nothing on the device (the teacher
    is the grid's first task).
    """
    executor = executor or InProcessExecutor()
    env = executor.device_env(env)  # a device the tasks cannot have fails here, in one line
    prepare_threads(env)
    return run_plan(plan_grid(cfg, env, store, recompute), env, store, executor)

def run_plan(plan: Plan, env: Env, store: ResultStore, executor: Executor | None = None,
             estimates: dict[tuple[str, str], Estimate] | None = None) -> pd.DataFrame:
    """Execute the plan's tasks (the teacher's first), write their rows, and return all of
    the plan's rows.

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
        if task.fn is run_teacher and isinstance(result, Exception):
            raise result  # nothing of the grid can run without the teacher
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
        peak = measured.peak_mib if here else _artifact_peak(env, steps.get(task.key))
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


def _artifact_peak(env: Env, step: Step | None) -> float | None:
    """The peak memory an artifact's manifest recorded (a unit run elsewhere, e.g. Ray)."""
    if step is None or step.stage == "cell":
        return None
    try:
        manifest = ArtifactCache(env.cache_dir, create=False).manifest(step.stage, step.key)
    except CorruptManifest:
        return None
    return manifest.get("peak_cuda_mib", manifest.get("peak_rss_mib"))


# --------------------------------------------------------------------------- external sets


def check_set_name(name: str) -> None:
    """Refuse an ``eval --name`` that tables would read as another row: the teacher, a
    registered method (``none``, ``random``, ``full``, ...) or a variant of one, or a name
    that ``--methods`` cannot select (issue 29 §4)."""
    base = name.split("[", 1)[0].strip()
    if name == TEACHER_ROW or base in METHODS.names():
        raise UserError(f"--name {name!r} is reserved for the {name!r} row of a grid; give "
                        "the set a name of its own (e.g. import:my-set)")
    if not name.strip() or any(c in name for c in "[],") or name != name.strip():
        raise UserError(f"--name {name!r} must be a non-empty name without brackets, commas "
                        "or surrounding spaces (e.g. import:my-set)")


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
    check_not_empty(distilled, f"distilled set {str(directory)!r}")
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    tasks = run["tasks"] or [run["dataset"]]
    check_compatible(distilled, dataset.channels, dataset.image_size, dataset.mean, dataset.std,
                     run["dataset"], f"distilled set {str(directory)!r}")
    missing = load_tasks(tasks, env, dataset)
    check_labelled(tasks, missing, run["fractions"], env, dataset)
    content = {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}
    others = [c for c in store.frame(method=name)["config"]
              if json.loads(c).get("files_sha256") != content]
    if others:
        raise UserError(f"--name {name!r} already names {len(others)} stored rows of another "
                        f"set in {store.path}; give this set a name of its own")
    dkey = ArtifactCache.key("distilled", {"import": content})
    cache = ArtifactCache(env.cache_dir)

    def produce(tmp: Path) -> dict[str, Any]:
        distilled.save(tmp)
        return {"num_images": len(distilled), "method": name, "imported_from": str(directory)}

    cache.get_or_create("distilled", dkey, produce, config={"import": content})
    fresh = _Freshness(cache)
    fresh.needed[f"distilled/{dkey}"] = False
    eval_units: list[EvalUnit] = []
    cell_keys: list[str] = []
    steps: list[Step] = []
    for seed in run["seeds"]:
        for arch in run["archs"]:
            ekey = encoder_key(arch, cfg["pretrain"], seed, dkey)
            unit = len(eval_units)
            artifacts = [f"distilled/{dkey}", f"encoder/{ekey}"]
            encoder_needed = fresh.check(f"encoder/{ekey}", [f"distilled/{dkey}"])
            # the name is part of the cells' key: rows stored under another name are not its
            all_cells = grid_cells(cfg, {"distilled": dkey, "arch": arch,
                                         "pretrain": pretrain_key(cfg["pretrain"]),
                                         "row": name}, seed, tasks, dataset.image_size, missing)
            cell_keys.extend(c.key for c in all_cells)
            todo = cells_to_compute(all_cells, artifacts, store, fresh,
                                    Recompute(frozenset(), 0.0))
            cells, unit_cell_steps = cell_steps(all_cells, todo, unit,
                                                f"{name} {arch} seed {seed}", run["dataset"],
                                                arch, False)
            needed = any(not c.missing for c in cells)
            status = (CACHED if not encoder_needed else
                      TO_COMPUTE if needed else NOT_NEEDED)
            steps.append(Step(
                "encoder", ekey, f"{name} {arch} seed {seed}", status,
                f"encoder:{unit}" if status == TO_COMPUTE else "",
                like=like("encoder", {"arch": arch, "pretrain": cfg["pretrain"], "seed": seed},
                          {"distilled": dkey}),
                signature=encoder_signature(dataset.fingerprint, name, len(distilled), arch,
                                            cfg["pretrain"])))
            steps += unit_cell_steps
            row_config = {"dataset": run["dataset"], "fingerprint": dataset.fingerprint,
                          "imported_from": str(directory), "files_sha256": content,
                          "set_method": distilled.method, "arch": arch,
                          "pretrain": cfg["pretrain"], "artifacts": artifacts}
            if cells:
                eval_units.append(EvalUnit(name, arch, seed, len(distilled), run["dataset"],
                                           dkey, cfg["pretrain"], tuple(cells), row_config))
    return Plan([], [], {}, eval_units, cell_keys, len(distilled), steps=steps,
                n_train=len(dataset.train_images), n_source=len(dataset.train_images))
