"""The grid: data -> teacher -> representations -> methods -> pre-training -> evaluators.

Work is cut into self-contained units whose inputs are named by cache keys and whose
outputs are cache artifacts or result rows, so an :class:`Executor` can run them
anywhere that sees the cache directory (see :mod:`mkdt_bench.executors`). Dependencies
follow the cache keys: a distillation waits for its method's sub-units (e.g. expert
trajectories), an evaluation unit for its distilled set; only this process writes rows.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mkdt_bench.cache import ArtifactCache, atomic_torch_save, config_hash, file_sha256
from mkdt_bench.config import resolve_budget
from mkdt_bench.data import ImageDataset, load_dataset
from mkdt_bench.distilled import DistilledSet, check_compatible
from mkdt_bench.errors import MissingDataError, UserError
from mkdt_bench.evaluators import create_evaluator
from mkdt_bench.evaluators.pretrain import pretrain_encoder
from mkdt_bench.executors import Executor, InProcessExecutor, Task
from mkdt_bench.methods import METHODS, MethodContext, create_method
from mkdt_bench.methods.base import SubUnit
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.progress import Progress
from mkdt_bench.results import FAILED, MISSING, TEACHER_ROW, ResultRow, ResultStore
from mkdt_bench.seeding import set_deterministic
from mkdt_bench.teacher import build_teacher, encode, load_teacher_checkpoint, train_teacher


@dataclass(frozen=True)
class Env:
    """Where a unit finds its inputs; everything a worker process needs besides the unit."""

    cache_dir: str
    data_root: str = ""
    device: str = "cpu"
    progress: bool = True
    threads: int = 0  # torch CPU threads per unit; 0 = torch's default

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {self.device!r} was asked for but CUDA is not available; "
                            "use --device cpu")
        return torch.device(self.device)


def prepare_process(env: Env) -> None:
    """Torch settings every unit applies first (workers are separate processes)."""
    if env.threads > 0:
        torch.set_num_threads(env.threads)
    if env.torch_device.type == "cpu":
        set_deterministic(True)


def error_text(error: BaseException) -> str:
    """``Type: message`` on one line, for a failed row."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def _dataset(name: str, data_root: str, cache_dir: str,
             image_size: int | None = None) -> ImageDataset:
    return load_dataset(name, root=data_root or None, cache_dir=cache_dir, image_size=image_size)


def load_tasks(names: list[str], env: Env, source: ImageDataset) -> dict[str, str]:
    """Load every downstream task at the source resolution (resizing loaders only, spec
    ``evaluation.md`` A.5); returns ``{task: missing path}`` for those whose files are absent.

    A task with another channel count than the source is a UserError.
    """
    missing = {}
    for name in names:
        try:
            task = _dataset(name, env.data_root, env.cache_dir, source.image_size)
        except MissingDataError as e:
            missing[name] = e.path
            Progress(env.progress).write(f"task {name!r} will be n/a: {e}")
            continue
        if task.channels != source.channels:
            raise UserError(f"task {name!r} has {task.channels}-channel images but the source "
                            f"{source.name!r} has {source.channels}; pick tasks with the same "
                            "number of channels")
    return missing


@functools.lru_cache(maxsize=2)
def _normalized_train(name: str, data_root: str, cache_dir: str) -> torch.Tensor:
    return _dataset(name, data_root, cache_dir).normalized("train")


# --------------------------------------------------------------------------- teacher


def teacher_key(cfg: dict[str, Any], dataset: ImageDataset) -> str:
    tcfg = dict(cfg["teacher"])
    if tcfg["checkpoint"]:
        path = Path(tcfg["checkpoint"]).expanduser()
        if not path.is_file():
            raise UserError(f"teacher checkpoint {str(path)!r} does not exist")
        tcfg = {"arch": tcfg["arch"], "checkpoint_sha256": file_sha256(path)}
    return ArtifactCache.key("teacher", tcfg, {"data": dataset.fingerprint})


def ensure_teacher(cfg: dict[str, Any], env: Env, dataset: ImageDataset) -> tuple[str, str]:
    """Train (or load) the teacher and encode the training set; returns both cache keys."""
    cache = ArtifactCache(env.cache_dir)
    tkey = teacher_key(cfg, dataset)
    tcfg = cfg["teacher"]

    def produce_teacher(tmp: Path) -> dict[str, Any]:
        if tcfg["checkpoint"]:
            model = load_teacher_checkpoint(tcfg["checkpoint"], tcfg["arch"], dataset)
        else:
            model = train_teacher(dataset, tcfg, cache.scratch("teacher", tkey),
                                  env.torch_device, Progress(env.progress))
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "teacher.pt")
        return {"arch": tcfg["arch"]}

    cache.get_or_create("teacher", tkey, produce_teacher, config=tcfg,
                        inputs={"data": dataset.fingerprint})
    rkey = ArtifactCache.key("representations", {}, {"teacher": tkey})

    def produce_representations(tmp: Path) -> dict[str, Any]:
        model = load_teacher(env, tkey, tcfg["arch"], dataset)
        images = _normalized_train(cfg["run"]["dataset"], env.data_root, env.cache_dir)
        reps = encode(model, images, env.torch_device)
        torch.save(reps, tmp / "representations.pt")
        return {"shape": list(reps.shape)}

    cache.get_or_create("representations", rkey, produce_representations,
                        inputs={"teacher": tkey})
    return tkey, rkey


def load_teacher(env: Env, tkey: str, arch: str, dataset: ImageDataset) -> Encoder:
    cache = ArtifactCache(env.cache_dir)
    model = build_teacher(arch, dataset)
    model.load_state_dict(torch.load(cache.path("teacher", tkey) / "teacher.pt"))
    return model.to(env.torch_device).eval()


# --------------------------------------------------------------------------- units


#: Seed of the training-pool subset (``run.train_pool``); fixed so that every method of a
#: grid, whatever its seed, distils from the same pool.
POOL_SEED = 0


def pool_indices(n_train: int, pool: int) -> torch.Tensor | None:
    """The ``run.train_pool`` subset: ``pool`` seeded random training indices, sorted
    (``None``: the whole training set)."""
    if pool <= 0 or pool >= n_train:
        return None
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(POOL_SEED))
    return perm[:pool].sort().values


@dataclass(frozen=True)
class MethodInputs:
    """What a method distils from: the teacher's representations of the training set
    (or of its ``pool``-image subset) and the teacher that made them."""

    dataset: str
    representations_key: str
    teacher_key: str
    teacher_arch: str
    pool: int = 0

    @property
    def key(self) -> str:
        """Cache key of (images, targets); sub-stage and distilled-set keys build on it."""
        if self.pool <= 0:
            return self.representations_key
        return ArtifactCache.key("pool", {"images": self.pool, "seed": POOL_SEED},
                                 {"representations": self.representations_key})


def _method_context(env: Env, inputs: MethodInputs, budget: int, seed: int,
                    scratch: Path) -> MethodContext:
    cache = ArtifactCache(env.cache_dir)
    dataset = _dataset(inputs.dataset, env.data_root, env.cache_dir)
    images = _normalized_train(inputs.dataset, env.data_root, env.cache_dir)
    reps = torch.load(cache.path("representations", inputs.representations_key)
                      / "representations.pt")
    idx = pool_indices(len(images), inputs.pool)
    if idx is not None:
        images, reps = images[idx], reps[idx]
    return MethodContext(
        source=dataset.name, images=images, targets=reps, mean=dataset.mean, std=dataset.std,
        budget=budget, seed=seed, device=env.torch_device, cache=cache, inputs_key=inputs.key,
        scratch=scratch, progress=Progress(env.progress),
        load_teacher=functools.partial(load_teacher, env, inputs.teacher_key,
                                       inputs.teacher_arch, dataset))


@dataclass(frozen=True)
class MethodSubUnit:
    """A method's sub-unit (e.g. one expert trajectory) on the teacher's representations."""

    sub: SubUnit
    inputs: MethodInputs


def run_sub_unit(unit: MethodSubUnit, env: Env) -> None:
    """Produce the sub-unit's artifact in the cache."""
    prepare_process(env)
    scratch = ArtifactCache(env.cache_dir).scratch(unit.sub.stage, unit.sub.key)
    unit.sub.run(_method_context(env, unit.inputs, 0, 0, scratch))


@dataclass(frozen=True)
class DistillUnit:
    """One method run: (method, options, budget, seed) on the teacher's representations."""

    key: str
    method: str
    options: dict[str, Any]
    budget: int
    seed: int
    inputs: MethodInputs


def run_distill(unit: DistillUnit, env: Env) -> None:
    """Produce the unit's DistilledSet in the cache (an intact one is kept; a corrupt one is
    moved aside and recomputed before any evaluation loads it)."""
    prepare_process(env)
    cache = ArtifactCache(env.cache_dir)

    def produce(tmp: Path) -> dict[str, Any]:
        method = create_method(unit.method, **unit.options)
        ctx = _method_context(env, unit.inputs, unit.budget, unit.seed,
                              cache.scratch("distilled", unit.key))
        distilled = method.distill(ctx)
        distilled.config_hash = unit.key
        distilled.save(tmp)
        return {"num_images": len(distilled), "method": unit.method}

    cache.get_or_create("distilled", unit.key, produce,
                        config={"method": unit.method, "options": unit.options,
                                "budget": unit.budget, "seed": unit.seed},
                        inputs={"images": unit.inputs.key})


@dataclass(frozen=True)
class Cell:
    """One result row to compute: (evaluator, task, label fraction) of an encoder.

    ``image_size``: the resolution resizing task loaders bring the task to (the source's);
    ``missing``: the absent file of a task whose data are not there (an ``n/a`` row).
    """

    key: str
    evaluator: str
    options: dict[str, Any]
    task: str
    fraction: float
    image_size: int | None = None
    missing: str = ""


@dataclass(frozen=True)
class EvalUnit:
    """Pre-train one encoder (or take the teacher) and compute its missing cells."""

    method: str
    arch: str
    seed: int
    budget: int
    dataset: str
    source_key: str  # distilled-set key, or the teacher key for the teacher row
    pretrain: dict[str, Any]
    cells: tuple[Cell, ...]
    row_config: dict[str, Any] = field(default_factory=dict)
    upstream_error: str | None = None


def encoder_key(arch: str, pretrain: dict[str, Any], seed: int, distilled_key: str) -> str:
    return ArtifactCache.key("encoder", {"arch": arch, "pretrain": pretrain, "seed": seed},
                             {"distilled": distilled_key})


def _pretrained_encoder(unit: EvalUnit, env: Env) -> tuple[Encoder, dict[str, float]]:
    cache = ArtifactCache(env.cache_dir)
    distilled = DistilledSet.load(cache.path("distilled", unit.source_key))
    key = encoder_key(unit.arch, unit.pretrain, unit.seed, unit.source_key)

    def produce(tmp: Path) -> dict[str, Any]:
        model, steps = pretrain_encoder(distilled, unit.arch, unit.pretrain, unit.seed,
                                        env.torch_device)
        atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()},
                          tmp / "encoder.pt")
        return {"steps": steps}

    path = cache.get_or_create("encoder", key, produce,
                               config={"arch": unit.arch, "pretrain": unit.pretrain,
                                       "seed": unit.seed},
                               inputs={"distilled": unit.source_key})
    model = create_model(unit.arch, in_channels=distilled.channels,
                         image_size=distilled.image_size,
                         out_dim=int(distilled.targets.shape[1]))
    model.load_state_dict(torch.load(path / "encoder.pt"))
    timings = {**stage_costs(cache, unit.row_config.get("artifacts", [])),
               "storage_bytes": distilled.storage_bytes, "set_images": len(distilled)}
    return model.to(env.torch_device).eval(), timings


#: How the artifacts behind a row are grouped in its compute budget (``timings``).
_COST_GROUPS = {"teacher": "teacher", "representations": "teacher", "distilled": "distill",
                "encoder": "pretrain"}


def stage_costs(cache: ArtifactCache, artifacts: list[str]) -> dict[str, float]:
    """Wall time and peak memory of the artifacts a row needed, from their manifests:
    ``teacher_s`` (teacher + representations), ``substages_s`` (a method's sub-units, e.g.
    the expert trajectories), ``distill_s``, ``pretrain_s`` and ``pretrain_steps``, each
    time group with its ``*_peak_mib`` (GPU memory on a GPU, else the resident set).

    Shared artifacts count in full for every row that needs them (the compute to make
    that set from scratch); an imported set has no distillation cost.
    """
    out: dict[str, float] = {}
    for artifact in artifacts:
        stage, key = artifact.split("/", 1)
        if not cache.exists(stage, key):
            continue
        manifest = cache.manifest(stage, key)
        if "imported_from" in manifest:
            continue
        group = _COST_GROUPS.get(stage, "substages")
        out[f"{group}_s"] = out.get(f"{group}_s", 0.0) + manifest["seconds"]
        peak = manifest.get("peak_cuda_mib", manifest.get("peak_rss_mib"))
        if peak is not None:
            out[f"{group}_peak_mib"] = max(out.get(f"{group}_peak_mib", 0.0), peak)
        if stage == "encoder":
            out["pretrain_steps"] = manifest["steps"]
    return out


def run_pretrain(unit: EvalUnit, env: Env) -> None:
    """Produce the unit's pre-trained encoder in the cache (its cells then load it)."""
    prepare_process(env)
    _pretrained_encoder(unit, env)


def run_eval(unit: EvalUnit, env: Env) -> list[ResultRow]:
    """The unit's result rows; a failure becomes failed rows carrying the error."""
    prepare_process(env)
    rows: list[ResultRow] = []
    versions = package_versions()

    def row(cell: Cell, accuracy: float | None, timings: dict[str, float],
            metrics: dict[str, float], error: str | None = None,
            status: str = "failed") -> ResultRow:
        config = {**unit.row_config, "evaluator_options": cell.options}
        return ResultRow(cell_key=cell.key, dataset=unit.dataset, method=unit.method,
                         budget=unit.budget, arch=unit.arch, evaluator=cell.evaluator,
                         task=cell.task, fraction=cell.fraction, seed=unit.seed,
                         accuracy=accuracy, status=status if error else "ok", error=error,
                         config_hash=config_hash(config), config=config, versions=versions,
                         device=str(env.torch_device), timings=timings, metrics=metrics)

    rows += [row(c, None, {}, {}, f"missing: {c.missing}", MISSING) for c in unit.cells
             if c.missing]
    present = [c for c in unit.cells if not c.missing]
    if unit.upstream_error:
        return rows + [row(c, None, {}, {}, unit.upstream_error) for c in present]
    if not present:
        return rows
    try:
        if unit.method == TEACHER_ROW:
            source = _dataset(unit.dataset, env.data_root, env.cache_dir)
            encoder = load_teacher(env, unit.source_key, unit.arch, source)
            timings = stage_costs(ArtifactCache(env.cache_dir), [f"teacher/{unit.source_key}"])
        else:
            encoder, timings = _pretrained_encoder(unit, env)
        for cell in present:
            task = _dataset(cell.task, env.data_root, env.cache_dir, cell.image_size)
            start = time.perf_counter()
            metrics = create_evaluator(cell.evaluator, **cell.options).evaluate(
                encoder, task, cell.fraction, unit.seed, env.torch_device)
            cell_timings = {**timings, "evaluate_s": time.perf_counter() - start}
            rows.append(row(cell, metrics.pop("accuracy"), cell_timings, metrics))
    except (UserError, RuntimeError, ValueError) as e:
        done = {r.cell_key for r in rows}
        rows += [row(c, None, {}, {}, error_text(e)) for c in present if c.key not in done]
    return rows


# --------------------------------------------------------------------------- grid


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("mkdt-bench", "torch", "torchvision", "timm", "lightly"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["git"] = _git_revision()
    return versions


@functools.lru_cache(maxsize=1)
def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


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
    dataset = _dataset(run["dataset"], env.data_root, env.cache_dir)
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

    for method in run["methods"]:
        options = cfg["methods"][method]
        seeded = METHODS.get(method).seeded and not run["shared_distillation"]
        sub_keys = [f"{sub.stage}/{sub.key}"
                    for sub in create_method(method, **options).sub_units(inputs.key)]
        for seed in run["seeds"]:
            distill_seed = seed if seeded else 0
            key_options = METHODS.get(method).key_options(options)
            dkey = ArtifactCache.key("distilled", {"method": method, "options": key_options,
                                                   "budget": budget, "seed": distill_seed},
                                     {"images": inputs.key})
            for arch in run["archs"]:
                row_config = {**base, "method": method, "method_options": options,
                              "budget": budget, "train_pool": inputs.pool,
                              "distill_seed": distill_seed, "arch": arch,
                              "pretrain": cfg["pretrain"], "teacher_config": cfg["teacher"],
                              "artifacts": [f"teacher/{tkey}", f"representations/{rkey}",
                                            *sub_keys, f"distilled/{dkey}", "encoder/"
                                            + encoder_key(arch, cfg["pretrain"], seed, dkey)]}
                cells = cells_for({"distilled": dkey, "arch": arch, "pretrain": cfg["pretrain"]},
                                  seed)
                if not cells:
                    continue
                distill_units[dkey] = DistillUnit(dkey, method, options, budget, distill_seed,
                                                  inputs)
                eval_units.append(EvalUnit(method, arch, seed, budget, run["dataset"], dkey,
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
    dataset = _dataset(run["dataset"], env.data_root, env.cache_dir)
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
