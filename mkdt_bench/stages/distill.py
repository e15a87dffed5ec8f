"""Distillation stage: a method's sub-units (e.g. MKDT's expert trajectories) and the
distillations themselves, each producing a cache artifact from the teacher's
representations of the training set (or of its ``run.train_pool`` subset); and the copy of
a set evaluated as it is (``eval``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mkdt_bench.cache import ArtifactCache, file_sha256
from mkdt_bench.code_version import code_key
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, MethodContext, create_method
from mkdt_bench.methods.base import SubUnit
from mkdt_bench.progress import Progress
from mkdt_bench.safeload import corrupt_artifact, load_artifact
from mkdt_bench.stages.env import Env, cached_dataset, normalized_train, prepare_process
from mkdt_bench.stages.teacher import load_teacher

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


def method_context(env: Env, inputs: MethodInputs, budget: int, seed: int, scratch: Path,
                   built_from: dict[str, float] | None = None, fresh_after: float = 0.0,
                   labels: bool = False) -> MethodContext:
    """The :class:`MethodContext` a method (or sub-unit) of ``inputs`` receives; what the
    method caches through ``ctx.cache`` records ``built_from`` (the unit's inputs) and
    replaces what was created before ``fresh_after`` (see :class:`ArtifactCache`); the
    training labels only with ``labels`` (methods that declare ``uses_labels``)."""
    cache = ArtifactCache(env.cache_dir, built_from=built_from, fresh_after=fresh_after)
    source = cached_dataset(inputs.dataset, env.data_root, env.cache_dir)
    images = normalized_train(inputs.dataset, env.data_root, env.cache_dir)
    stored = cache.path("representations", inputs.representations_key) / "representations.pt"
    reps = load_artifact(stored, map_location="cpu")
    if not (isinstance(reps, torch.Tensor) and reps.is_floating_point() and reps.ndim == 2
            and len(reps) == len(images)):
        raise corrupt_artifact(stored, f"not one representation for each of the {len(images)} "
                                       "training images")
    class_labels = source.train_labels if labels else None
    idx = pool_indices(len(images), inputs.pool)
    if idx is not None:
        images, reps = images[idx], reps[idx]
        class_labels = class_labels[idx] if class_labels is not None else None
    return MethodContext(
        source=source.name, images=images, targets=reps, mean=source.mean, std=source.std,
        budget=budget, seed=seed, device=env.torch_device, cache=cache, inputs_key=inputs.key,
        scratch=scratch, progress=Progress(env.progress),
        load_teacher=functools.partial(load_teacher, env, inputs.teacher_key,
                                       inputs.teacher_arch, source),
        precision=env.precision, labels=class_labels)


def distill_key_config(method: str, options: dict[str, Any], budget: int, seed: int,
                       precision: str = "default") -> dict[str, Any]:
    """What names a distilled set, in one place: its cache key (:func:`distilled_key`), its
    manifest's ``config`` and the ``like`` its cost is matched on. ``options`` count as
    :meth:`Method.key_options` gives them; the method's code version once raised
    (:mod:`mkdt_bench.code_version`); bf16 autocast where the method uses it, since it
    changes a set by more than rounding."""
    cls = METHODS.get(method)
    code = code_key(cls)
    autocast = {"precision": "bf16"} if precision == "bf16" and cls.uses_autocast else {}
    return {"method": method, "options": cls.key_options(options), "budget": budget,
            "seed": seed, **({"code": code} if code else {}), **autocast}


def distilled_key(key_config: dict[str, Any], inputs: MethodInputs) -> str:
    """Cache key of the set :func:`distill_key_config` describes, distilled from ``inputs``."""
    return ArtifactCache.key("distilled", key_config, {"images": inputs.key})


@dataclass(frozen=True)
class MethodSubUnit:
    """A method's sub-unit (e.g. one expert trajectory) on the teacher's representations;
    one created before ``fresh_after`` is computed again (``--recompute methods.NAME``)."""

    sub: SubUnit
    inputs: MethodInputs
    fresh_after: float = 0.0


def run_sub_unit(unit: MethodSubUnit, env: Env) -> None:
    """Produce the sub-unit's artifact in the cache."""
    prepare_process(env)
    cache = ArtifactCache(env.cache_dir)
    scratch = cache.scratch(unit.sub.stage, unit.sub.key)
    built_from = cache.stamps([f"representations/{unit.inputs.representations_key}"])
    unit.sub.run(method_context(env, unit.inputs, 0, 0, scratch, built_from, unit.fresh_after))


@dataclass(frozen=True)
class DistillUnit:
    """One method run: (method, options, budget, seed) on the teacher's representations.

    ``key_config``: what names the set (:func:`distill_key_config`, its manifest's config);
    ``sub_artifacts``: ``stage/key`` of the method's sub-units; ``fresh_after``: a set (and
    what the method cached for it) created before it is computed again (``--recompute
    methods.NAME``).
    """

    key: str
    method: str
    options: dict[str, Any]
    budget: int
    seed: int
    inputs: MethodInputs
    key_config: dict[str, Any]
    sub_artifacts: tuple[str, ...] = ()
    fresh_after: float = 0.0


def run_distill(unit: DistillUnit, env: Env) -> None:
    """Produce the unit's DistilledSet in the cache (an intact, current one is kept; a
    corrupt one is moved aside and a stale one replaced before any evaluation loads it)."""
    prepare_process(env)
    cache = ArtifactCache(env.cache_dir)
    built_from = cache.stamps([f"representations/{unit.inputs.representations_key}",
                               *unit.sub_artifacts])

    def produce(tmp: Path) -> dict[str, Any]:
        method = create_method(unit.method, **unit.options)
        ctx = method_context(env, unit.inputs, unit.budget, unit.seed,
                             cache.scratch("distilled", unit.key), built_from,
                             unit.fresh_after, method.uses_labels)
        distilled = method.distill(ctx)
        distilled.config_hash = unit.key
        distilled.save(tmp)
        return {"num_images": len(distilled), "method": unit.method}

    cache.get_or_create("distilled", unit.key, produce, config=unit.key_config,
                        inputs={"images": unit.inputs.key}, built_from=built_from,
                        fresh_after=unit.fresh_after)


def set_files(directory: Path) -> dict[str, str]:
    """``{file name: sha256}`` of a DistilledSet directory: what names a set evaluated as
    it is."""
    return {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}


def imported_key(files: dict[str, str]) -> str:
    """Cache key of a set evaluated as it is (``eval``): its files' checksums."""
    return ArtifactCache.key("distilled", {"import": files})


@dataclass(frozen=True)
class ImportUnit:
    """Copy the DistilledSet ``directory`` (whose files had the checksums ``files`` when
    planned) into the cache as the ``distilled`` artifact ``key``, for the row ``name``."""

    key: str
    directory: str
    files: dict[str, str]
    name: str


def run_import(unit: ImportUnit, env: Env) -> None:
    """Produce the unit's ``distilled`` artifact: the set as it was planned (one changed
    since is refused in one line)."""
    directory = Path(unit.directory)

    def produce(tmp: Path) -> dict[str, Any]:
        if set_files(directory) != unit.files:
            raise UserError(f"distilled set {unit.directory!r} changed after it was planned; "
                            "run eval again")
        distilled = DistilledSet.load(directory)
        distilled.save(tmp)
        return {"num_images": len(distilled), "method": unit.name,
                "imported_from": unit.directory}

    ArtifactCache(env.cache_dir).get_or_create("distilled", unit.key, produce,
                                               config={"import": unit.files})
