"""Teacher stage: the teacher (made by its kind, :data:`mkdt_bench.teachers.TEACHERS`) and
its representations of the training set, two cache artifacts every method of a grid shares,
produced by the grid's first unit (:class:`TeacherUnit`) on the units' device; the teacher
as a row's encoder (:class:`TeacherRef`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.data import ImageDataset
from mkdt_bench.models import Encoder
from mkdt_bench.progress import Progress
from mkdt_bench.safeload import load_weights
from mkdt_bench.stages.env import Env, cached_dataset, normalized_train, prepare_process
from mkdt_bench.teachers import teacher_kind
from mkdt_bench.teachers.encoder import build_teacher, encode


def teacher_key(cfg: dict[str, Any], dataset: ImageDataset) -> str:
    """Cache key of the teacher: what its kind says names it (the config, or a checkpoint's
    checksum) and the data."""
    tcfg = cfg["teacher"]
    return ArtifactCache.key("teacher", teacher_kind(tcfg).key_config(tcfg),
                             {"data": dataset.fingerprint})


def representations_key(tkey: str) -> str:
    """Cache key of the teacher's representations of the training set."""
    return ArtifactCache.key("representations", {}, {"teacher": tkey})


def ensure_teacher(cfg: dict[str, Any], env: Env, dataset: ImageDataset,
                   fresh_after: float = 0.0) -> tuple[str, str]:
    """Train (or load) the teacher and encode the training set; returns both cache keys.
    ``fresh_after``: a stored teacher created before it is trained again (``--recompute
    teacher``); the representations follow the teacher they were computed from."""
    cache = ArtifactCache(env.cache_dir)
    tkey = teacher_key(cfg, dataset)
    tcfg = cfg["teacher"]

    def produce_teacher(tmp: Path) -> dict[str, Any]:
        model = teacher_kind(tcfg).make(dataset, tcfg, cache.scratch("teacher", tkey),
                                        env.torch_device, Progress(env.progress))
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "teacher.pt")
        return {"arch": tcfg["arch"]}

    cache.get_or_create("teacher", tkey, produce_teacher, config=tcfg,
                        inputs={"data": dataset.fingerprint}, fresh_after=fresh_after)
    rkey = representations_key(tkey)

    def produce_representations(tmp: Path) -> dict[str, Any]:
        model = load_teacher(env, tkey, tcfg["arch"], dataset)
        images = normalized_train(cfg["run"]["dataset"], env.data_root, env.cache_dir)
        reps = encode(model, images, env.torch_device)
        torch.save(reps, tmp / "representations.pt")
        return {"shape": list(reps.shape)}

    cache.get_or_create("representations", rkey, produce_representations,
                        inputs={"teacher": tkey}, built_from=cache.stamps([f"teacher/{tkey}"]))
    return tkey, rkey


def load_teacher(env: Env, tkey: str, arch: str, dataset: ImageDataset) -> Encoder:
    """The cached teacher, in eval mode on the unit's device."""
    cache = ArtifactCache(env.cache_dir)
    model = build_teacher(arch, dataset)
    load_weights(model, cache.path("teacher", tkey) / "teacher.pt")
    return model.to(env.torch_device).eval()


@dataclass(frozen=True)
class TeacherRef:
    """The cached teacher ``teacher_key`` (an ``arch`` encoder of the data set ``dataset``) as
    the encoder a row is evaluated on (the teacher row)."""

    teacher_key: str
    arch: str
    dataset: str


@dataclass(frozen=True)
class TeacherUnit:
    """Train (or load) the teacher and encode the training set (``cfg``: the grid's ``run``
    and ``teacher`` sections); the keys it produces are known beforehand."""

    cfg: dict[str, Any]
    teacher_key: str
    representations_key: str
    fresh_after: float = 0.0  # --recompute teacher: a stored teacher older than this


def run_teacher(unit: TeacherUnit, env: Env) -> None:
    """Produce the teacher and its representations in the cache, on the unit's device."""
    prepare_process(env)
    dataset = cached_dataset(unit.cfg["run"]["dataset"], env.data_root, env.cache_dir)
    ensure_teacher(unit.cfg, env, dataset, unit.fresh_after)
