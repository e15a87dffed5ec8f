"""Teacher stage: the SSL teacher (trained or loaded) and its representations of the
training set, two cache artifacts every method of a grid shares, produced by the grid's
first unit (:class:`TeacherUnit`) on the units' device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mkdt_bench.cache import ArtifactCache, file_sha256
from mkdt_bench.data import ImageDataset
from mkdt_bench.errors import UserError
from mkdt_bench.models import Encoder
from mkdt_bench.progress import Progress
from mkdt_bench.safeload import load_weights
from mkdt_bench.stages.env import Env, cached_dataset, normalized_train, prepare_process
from mkdt_bench.teachers.ssl import build_teacher, encode, load_teacher_checkpoint, train_teacher
from mkdt_bench.teachers.supervised import train_supervised_teacher


def teacher_key(cfg: dict[str, Any], dataset: ImageDataset) -> str:
    """Cache key of the teacher: its config (or checkpoint's checksum) and the data."""
    tcfg = dict(cfg["teacher"])
    if tcfg["kind"] == "ssl":  # the only kind before ``kind`` existed: stored keys stay valid
        del tcfg["kind"]
    if tcfg["checkpoint"]:
        path = Path(tcfg["checkpoint"]).expanduser()
        if not path.is_file():
            raise UserError(f"teacher checkpoint {str(path)!r} "
                            f"{'is not a file' if path.exists() else 'does not exist'}")
        tcfg = {"arch": tcfg["arch"], "checkpoint_sha256": file_sha256(path)}
    return ArtifactCache.key("teacher", tcfg, {"data": dataset.fingerprint})


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
        if tcfg["checkpoint"]:
            model = load_teacher_checkpoint(tcfg["checkpoint"], tcfg["arch"], dataset)
        elif tcfg["kind"] == "supervised":
            model = train_supervised_teacher(dataset, tcfg, build_teacher(tcfg["arch"], dataset),
                                             cache.scratch("teacher", tkey), env.torch_device,
                                             Progress(env.progress))
        else:
            model = train_teacher(dataset, tcfg, cache.scratch("teacher", tkey),
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
