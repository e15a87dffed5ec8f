"""The planner: a grid's configuration becomes units of the stages in
:mod:`mkdt_bench.stages`, in the order data flows::

    data set -> teacher -> representations -> (sub-units) -> distilled set
             -> pre-trained encoder -> evaluation cells -> result rows

Units are self-contained: their inputs are named by cache keys and their outputs are
cache artifacts or result rows, so an executor can run them anywhere that sees the cache
directory (:mod:`mkdt_bench.pipeline.run`). Planning computes nothing: each step is looked
up in the cache and the database and marked with what it needs (:mod:`mkdt_bench.pipeline.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mkdt_bench.cache import ArtifactCache, config_hash, is_stale
from mkdt_bench.code_version import code_key, code_version
from mkdt_bench.config import resolve_budget
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.distilled import DistilledSet, check_compatible
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS
from mkdt_bench.methods import METHODS, create_method
from mkdt_bench.methods.imported import check_not_empty
from mkdt_bench.pipeline.costs import (
    cell_signature,
    distill_signature,
    encoder_signature,
    like,
    substage_signature,
    teacher_signature,
)
from mkdt_bench.pipeline.plan import (
    CACHED,
    EVALUATE,
    NO_DATA,
    NOT_NEEDED,
    TEACHER,
    TO_COMPUTE,
    Plan,
    Recompute,
    Step,
)
from mkdt_bench.pretraining import pretrain_key
from mkdt_bench.report.facets import short_task_name
from mkdt_bench.results import TEACHER_ROW, ResultStore
from mkdt_bench.rows import ArtifactRef, Provenance
from mkdt_bench.stages.distill import (
    DistillUnit,
    ImportUnit,
    MethodInputs,
    MethodSubUnit,
    distill_key_config,
    distilled_key,
    imported_key,
    set_files,
)
from mkdt_bench.stages.env import Env, cached_dataset, load_tasks
from mkdt_bench.stages.evaluate import Cell, EvalUnit
from mkdt_bench.stages.pretrain import PretrainUnit
from mkdt_bench.stages.teacher import TeacherRef, TeacherUnit, representations_key, teacher_key
from mkdt_bench.teachers import teacher_kind
from mkdt_bench.variants import parse_label


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
            ref = ArtifactRef.parse(artifact)
            stamps = self.cache.stamps(inputs)
            path = self.cache.path(ref.stage, ref.key)
            bad = self.cache.verify(ref.stage, ref.key) \
                if path.exists() or path.is_symlink() else []
            if bad:
                self.corrupt[artifact] = bad
            self.needed[artifact] = bool(bad) or self._redone(inputs, stamps) or not \
                self.cache.current(ref.stage, ref.key, stamps, fresh_after)
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


@dataclass
class _Grid:
    """What planning each stage reads (the config, the data, the cache and database) and
    what it gathers in order: the evaluation units (a unit's index names its tasks), the
    keys of every cell and a step for each."""

    cfg: dict[str, Any]
    store: ResultStore
    fresh: _Freshness
    recompute: Recompute
    precision: str
    dataset: ImageDataset
    tasks: list[str]
    missing: dict[str, str]
    eval_units: list[EvalUnit] = field(default_factory=list)
    cell_keys: list[str] = field(default_factory=list)
    cell_steps: list[Step] = field(default_factory=list)


def _grid(cfg: dict[str, Any], env: Env, store: ResultStore, fresh: _Freshness,
          recompute: Recompute, dataset: ImageDataset) -> _Grid:
    """The grid's downstream tasks loaded (a missing one is recorded, not raised) and its
    label fractions checked."""
    run = cfg["run"]
    tasks = run["tasks"] or [run["dataset"]]
    missing = load_tasks(tasks, env, dataset)
    check_labelled(tasks, missing, run["fractions"], env, dataset)
    return _Grid(cfg, store, fresh, recompute, env.precision, dataset, tasks, missing)


def _check_sizes(cfg: dict[str, Any], n_train: int) -> None:
    """Refuse a training pool, teacher subset or teacher batch the data cannot give."""
    run, teacher = cfg["run"], cfg["teacher"]
    for option, images in (("run.train_pool", run["train_pool"]),
                           ("teacher.train_images", teacher["train_images"])):
        if images > n_train:  # it would silently mean every image, under another key
            raise UserError(f"{option}={images} is larger than the {n_train:,} training images "
                            f"of {run['dataset']}; give at most {n_train} (0 = all of them)")
    n_teacher = teacher["train_images"] or n_train
    if teacher_kind(teacher).trains and teacher["batch_size"] > n_teacher:  # refused up front
        raise UserError(f"teacher.batch_size={teacher['batch_size']} is larger than the "
                        f"{n_teacher} training images; lower it")


def _plan_cells(g: _Grid, encoder_id: dict[str, Any], seed: int, row: str, arch: str,
                artifacts: list[str]) -> tuple[Cell, ...]:
    """The cells of an encoder (``encoder_id``: the keys that name it) still to compute;
    every cell becomes a step."""
    cells = grid_cells(g.cfg, encoder_id, seed, g.tasks, g.dataset.image_size, g.missing)
    g.cell_keys.extend(c.key for c in cells)
    todo = cells_to_compute(cells, artifacts, g.store, g.fresh, g.recompute)
    out, steps = cell_steps(cells, todo, len(g.eval_units), f"{row} {arch} seed {seed}",
                            g.cfg["run"]["dataset"], arch, row == TEACHER_ROW)
    g.cell_steps.extend(steps)
    return out


@dataclass(frozen=True)
class _EncoderPlan:
    """An encoder as planned: its unit, its step, its cells still to compute, and every
    artifact its rows are computed from (the encoder last)."""

    unit: PretrainUnit
    step: Step
    cells: tuple[Cell, ...]
    artifacts: list[str]


def _plan_encoder(g: _Grid, row: str, row_id: dict[str, str], seed: int, arch: str,
                  dkey: str, n_images: int, upstream: list[str]) -> _EncoderPlan:
    """The encoder pre-trained on the set ``dkey`` of ``n_images`` images for ``row``, and
    its cells (``row_id``: what tells this row's cells from another row's on the same set;
    ``upstream``: the artifacts the set is computed from, the set last)."""
    pretrain = g.cfg["pretrain"]
    unit = PretrainUnit(dkey, arch, pretrain, seed, g.recompute.after("pretrain"))
    ekey = unit.key
    encoder = f"encoder/{ekey}"
    needed = g.fresh.check(encoder, [f"distilled/{dkey}"], unit.fresh_after)
    artifacts = [*upstream, encoder]
    cells = _plan_cells(g, {"distilled": dkey, "arch": arch, "pretrain": pretrain_key(pretrain),
                            **row_id}, seed, row, arch, artifacts)
    status = (CACHED if not needed else
              TO_COMPUTE if any(not c.missing for c in cells) else NOT_NEEDED)
    step = Step("encoder", ekey, f"{row} {arch} seed {seed}", status,
                f"encoder:{len(g.eval_units)}" if status == TO_COMPUTE else "",
                like=like("encoder", unit.config, {"distilled": dkey}),
                signature=encoder_signature(g.dataset.fingerprint, row, n_images, arch,
                                            pretrain))
    return _EncoderPlan(unit, step, cells, artifacts)


def _add_encoder_step(steps: dict[str, Step], step: Step) -> None:
    """Keep one step per encoder: the first, unless a later row needs what it did not."""
    old = steps.get(step.key)
    if old is None or (step.status == TO_COMPUTE and old.status == NOT_NEEDED):
        steps[step.key] = step


def _add_eval_unit(g: _Grid, row: str, seed: int, n_images: int,
                   encoder: PretrainUnit | TeacherRef, cells: tuple[Cell, ...],
                   row_config: Provenance) -> None:
    """The evaluation unit of one encoder (pre-trained on a set, or the teacher) and its
    cells to compute."""
    g.eval_units.append(EvalUnit(row, seed, n_images, g.cfg["run"]["dataset"], encoder, cells,
                                 row_config))


def _refs(artifacts: list[str]) -> tuple[ArtifactRef, ...]:
    return tuple(ArtifactRef.parse(a) for a in artifacts)


@dataclass(frozen=True)
class _SetPlan:
    """A distilled set of the grid as the first row that names it planned it."""

    label: str
    method: str
    options: dict[str, Any]
    seed: int
    key_config: dict[str, Any]
    fresh_after: float


@dataclass
class _MethodPlan:
    """What a method row plans: its sets (by key), the sets a cell needs as units, and its
    encoders' steps."""

    sets: dict[str, _SetPlan] = field(default_factory=dict)
    units: dict[str, DistillUnit] = field(default_factory=dict)
    encoders: list[Step] = field(default_factory=list)


def _plan_method(g: _Grid, label: str, inputs: MethodInputs, budget: int,
                 base: Provenance) -> _MethodPlan:
    """A method row (``label``: a method or a variant of one): a set per seed (one for all
    where the method is not seeded or the grid shares distillation), its sub-units, an
    encoder per architecture and their cells."""
    cfg, run = g.cfg, g.cfg["run"]
    method, options = parse_label(label)[0], cfg["methods"][label]
    cls = METHODS.get(method)
    seeded = cls.seeded and not run["shared_distillation"]
    method_after = g.recompute.after(f"methods.{method}")
    subs = create_method(method, **options).sub_units(inputs.key)
    sub_keys = [f"{sub.stage}/{sub.key}" for sub in subs]
    reps = f"representations/{inputs.representations_key}"
    # a variant's rows are its own even where its set equals another row's
    row_id = {"row": label} if label != method else {}
    out = _MethodPlan()
    for seed in run["seeds"]:
        distill_seed = seed if seeded else 0
        key_config = distill_key_config(method, options, budget, distill_seed, g.precision)
        dkey = distilled_key(key_config, inputs)
        distilled = f"distilled/{dkey}"
        out.sets.setdefault(dkey, _SetPlan(label, method, options, distill_seed, key_config,
                                           method_after))
        for sub in subs:
            g.fresh.check(f"{sub.stage}/{sub.key}", [reps], method_after)
        g.fresh.check(distilled, [reps, *sub_keys], method_after)
        for arch in run["archs"]:
            encoder = _plan_encoder(g, label, row_id, seed, arch, dkey, budget,
                                    [f"teacher/{inputs.teacher_key}", reps, *sub_keys,
                                     distilled])
            out.encoders.append(encoder.step)
            if not encoder.cells:
                continue
            out.units.setdefault(dkey, DistillUnit(dkey, method, options, budget, distill_seed,
                                                   inputs, key_config, tuple(sub_keys),
                                                   method_after))
            # rows of methods that read the training labels are marked (the SSL premise)
            row_config = replace(base, method=method, row=row_id.get("row"),
                                 uses_labels=cls.uses_labels, method_options=options,
                                 method_code=code_version(cls), budget=budget,
                                 train_pool=inputs.pool, distill_seed=distill_seed, arch=arch,
                                 pretrain=cfg["pretrain"], teacher_config=cfg["teacher"],
                                 artifacts=_refs(encoder.artifacts), reference=cls.reference)
            _add_eval_unit(g, label, seed, budget, encoder.unit, encoder.cells, row_config)
    return out


def _force_sub_units(g: _Grid, inputs: MethodInputs) -> None:
    """Mark the sub-units of the methods ``--recompute`` names first: other methods may
    share them (mkdt, highloss)."""
    reps = f"representations/{inputs.representations_key}"
    for label in g.cfg["run"]["methods"]:
        method = parse_label(label)[0]
        if g.recompute.after(f"methods.{method}"):
            for sub in create_method(method, **g.cfg["methods"][label]).sub_units(inputs.key):
                g.fresh.check(f"{sub.stage}/{sub.key}", [reps], g.recompute.since)


@dataclass
class _SetSteps:
    """The steps of the grid's sets and of their sub-units, and the sub-units to run."""

    sets: list[Step] = field(default_factory=list)
    subs: dict[tuple[str, str], Step] = field(default_factory=dict)
    sub_units: dict[tuple[str, str], MethodSubUnit] = field(default_factory=dict)
    distill_after: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def _plan_set(g: _Grid, dkey: str, s: _SetPlan, wanted: bool, inputs: MethodInputs,
              budget: int, out: _SetSteps) -> None:
    """The step of one set (to compute where it is missing or stale and a cell needs it:
    ``wanted``) and, for a set to compute, the steps of its method's sub-units."""
    status = (CACHED if not g.fresh.needed[f"distilled/{dkey}"] else
              TO_COMPUTE if wanted else NOT_NEEDED)
    out.sets.append(Step(
        "distilled", dkey, f"{s.label} seed {s.seed} ({budget} images)", status,
        f"distilled:{dkey}" if status == TO_COMPUTE else "",
        like=like("distilled", s.key_config, {"images": inputs.key}),
        signature=distill_signature(g.dataset.fingerprint, inputs.teacher_arch, s.method,
                                    s.options, budget, inputs.pool)))
    if status != TO_COMPUTE:
        return
    subs = create_method(s.method, **s.options).sub_units(inputs.key)
    peers = tuple(f"{sub.stage}/{sub.key}" for sub in subs)
    needed = []
    for i, sub in enumerate(subs):
        name = f"{s.label} {sub.stage} {i + 1}/{len(subs)}"
        if not g.fresh.needed[f"{sub.stage}/{sub.key}"]:
            out.subs.setdefault((sub.stage, sub.key), Step(sub.stage, sub.key, name, CACHED))
            continue
        needed.append(sub)
        out.sub_units[sub.stage, sub.key] = MethodSubUnit(sub, inputs, s.fresh_after)
        out.subs.setdefault((sub.stage, sub.key), Step(
            sub.stage, sub.key, name, TO_COMPUTE, f"{sub.stage}:{sub.key}", peers=peers,
            signature=substage_signature(g.dataset.fingerprint, inputs.teacher_arch, s.method,
                                         s.options, inputs.pool)))
    out.distill_after[dkey] = tuple((sub.stage, sub.key) for sub in needed)


def _plan_teacher_row(g: _Grid, tkey: str, base: Provenance) -> None:
    """The teacher's own row (``run.teacher_row``): its cells, per seed."""
    cfg = g.cfg
    n_train = len(g.dataset.train_images)
    n_teacher = min(cfg["teacher"]["train_images"] or n_train, n_train)
    arch = cfg["teacher"]["arch"]
    for seed in cfg["run"]["seeds"]:
        cells = _plan_cells(g, {"teacher": tkey}, seed, TEACHER_ROW, arch, [f"teacher/{tkey}"])
        if cells:
            _add_eval_unit(g, TEACHER_ROW, seed, n_teacher,
                           TeacherRef(tkey, arch, cfg["run"]["dataset"]), cells,
                           replace(base, teacher_config=cfg["teacher"],
                                   artifacts=(ArtifactRef("teacher", tkey),)))


def _teacher_step(g: _Grid, tkey: str, needed: bool, work: bool) -> Step:
    """The teacher's step (with its representations): to compute where it is missing or
    stale and the grid has work for it."""
    tcfg = g.cfg["teacher"]
    fingerprint = g.dataset.fingerprint
    return Step(
        TEACHER, tkey, f"{tcfg['arch']} ({teacher_kind(tcfg).step_label(tcfg)}) + representations",
        TO_COMPUTE if work and needed else NOT_NEEDED if needed else CACHED,
        TEACHER if work and needed else "",
        like=like("teacher", tcfg, {"data": fingerprint}),
        signature=teacher_signature(fingerprint, tcfg))


def plan_grid(cfg: dict[str, Any], env: Env, store: ResultStore,
              recompute: Recompute | None = None, cache: ArtifactCache | None = None) -> Plan:
    """The grid's units and steps, computing and writing nothing: the data set is loaded
    (and its tasks), every cache key derived from the config, and each step looked up in
    ``cache`` (default: a read-only view of ``env.cache_dir``) and ``store`` (which may be
    :meth:`ResultStore.read_only`): what is missing, stale (computed from an input that has
    changed since), or named by ``recompute`` is to compute. The teacher is trained later,
    by :func:`~mkdt_bench.pipeline.run.run_plan`."""
    recompute = recompute or Recompute(frozenset(), 0.0)
    cache = cache or ArtifactCache(env.cache_dir, create=False)
    run = cfg["run"]
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    n_train = len(dataset.train_images)
    _check_sizes(cfg, n_train)
    n_source = run["train_pool"] if 0 < run["train_pool"] < n_train else n_train
    budget = resolve_budget(run["budget"], n_source)
    g = _grid(cfg, env, store, _Freshness(cache), recompute, dataset)
    tkey = teacher_key(cfg, dataset)
    rkey = representations_key(tkey)
    inputs = MethodInputs(run["dataset"], rkey, tkey, cfg["teacher"]["arch"],
                          n_source if n_source < n_train else 0)
    base = Provenance(dataset=run["dataset"], fingerprint=dataset.fingerprint, teacher=tkey,
                      source_images=n_source)
    teacher_needed = g.fresh.check(f"teacher/{tkey}", [], recompute.after("teacher"))
    teacher_needed = g.fresh.check(f"representations/{rkey}", [f"teacher/{tkey}"]) \
        or teacher_needed
    _force_sub_units(g, inputs)
    sets: dict[str, _SetPlan] = {}
    distill_units: dict[str, DistillUnit] = {}
    encoder_steps: dict[str, Step] = {}
    for label in run["methods"]:
        planned = _plan_method(g, label, inputs, budget, base)
        for dkey, s in planned.sets.items():
            sets.setdefault(dkey, s)
        for dkey, unit in planned.units.items():
            distill_units.setdefault(dkey, unit)
        for step in planned.encoders:
            _add_encoder_step(encoder_steps, step)
    if run["teacher_row"]:
        _plan_teacher_row(g, tkey, base)
    set_steps = _SetSteps()
    for dkey, s in sets.items():
        _plan_set(g, dkey, s, dkey in distill_units, inputs, budget, set_steps)
    work = bool(g.eval_units or set_steps.sub_units)
    steps = [_teacher_step(g, tkey, teacher_needed, work), *set_steps.subs.values(),
             *set_steps.sets, *encoder_steps.values(), *g.cell_steps]
    teacher_unit = TeacherUnit(cfg, tkey, rkey, recompute.after("teacher")) if work else None
    return Plan(list(set_steps.sub_units.values()), list(distill_units.values()),
                set_steps.distill_after, g.eval_units, g.cell_keys, budget, teacher_unit, steps,
                n_train, n_source, corrupt=g.fresh.corrupt)


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
    ``distilled`` artifact keyed by its content (an :class:`ImportUnit`, run first), then
    the usual encoders and cells; planning writes nothing.

    The set must have the image shape and normalisation of ``run.dataset``, the data it
    was distilled from (what pre-training feeds the encoder); downstream tasks keep their
    own statistics (``docs/protocol.md`` A.5) and need only the channel count."""
    run = cfg["run"]
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"distilled set directory {str(directory)!r} does not exist")
    distilled = DistilledSet.load(directory)
    check_not_empty(distilled, f"distilled set {str(directory)!r}")
    dataset = cached_dataset(run["dataset"], env.data_root, env.cache_dir)
    check_compatible(distilled, dataset.channels, dataset.image_size, dataset.mean, dataset.std,
                     run["dataset"], f"distilled set {str(directory)!r}")
    cache = ArtifactCache(env.cache_dir, create=False)
    g = _grid(cfg, env, store, _Freshness(cache), Recompute(frozenset(), 0.0), dataset)
    content = set_files(directory)
    others = [p for p in store.frame(method=name)["provenance"] if p.files_sha256 != content]
    if others:
        raise UserError(f"--name {name!r} already names {len(others)} stored rows of another "
                        f"set in {store.path}; give this set a name of its own")
    dkey = imported_key(content)
    stored = not g.fresh.check(f"distilled/{dkey}", [])
    encoder_steps: dict[str, Step] = {}
    for seed in run["seeds"]:
        for arch in run["archs"]:
            # the name is part of the cells' key: rows stored under another name are not its
            encoder = _plan_encoder(g, name, {"row": name}, seed, arch, dkey, len(distilled),
                                    [f"distilled/{dkey}"])
            _add_encoder_step(encoder_steps, encoder.step)
            row_config = Provenance(dataset=run["dataset"], fingerprint=dataset.fingerprint,
                                    imported_from=str(directory), files_sha256=content,
                                    set_method=distilled.method, arch=arch,
                                    pretrain=cfg["pretrain"],
                                    artifacts=_refs(encoder.artifacts))
            if encoder.cells:
                _add_eval_unit(g, name, seed, len(distilled), encoder.unit, encoder.cells,
                               row_config)
    status = CACHED if stored else TO_COMPUTE if g.eval_units else NOT_NEEDED
    copy = Step("distilled", dkey, f"{name} ({len(distilled)} images, as it is)", status,
                f"distilled:{dkey}" if status == TO_COMPUTE else "")
    imports = [ImportUnit(dkey, str(directory), content, name)] if status == TO_COMPUTE else []
    return Plan([], [], {}, g.eval_units, g.cell_keys, len(distilled),
                steps=[copy, *encoder_steps.values(), *g.cell_steps],
                n_train=len(dataset.train_images), n_source=len(dataset.train_images),
                corrupt=g.fresh.corrupt, imports=imports)
