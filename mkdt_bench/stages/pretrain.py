"""Pre-training stage: a fresh encoder trained on a DistilledSet (``docs/protocol.md`` A.1),
cached per (architecture, pre-training config, seed, set) (:class:`PretrainUnit`), and the
encoder a row is evaluated on, pre-trained or the teacher (:func:`load_encoder`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdt_bench.cache import ArtifactCache, atomic_torch_save
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder
from mkdt_bench.pretraining import pretrain_key
from mkdt_bench.pretraining.train import build_encoder, pretrain_encoder
from mkdt_bench.safeload import load_weights
from mkdt_bench.stages.env import Env, cached_dataset, prepare_process
from mkdt_bench.stages.teacher import TeacherRef, load_teacher


def encoder_key(arch: str, pretrain: dict[str, Any], seed: int, distilled_key: str) -> str:
    """Cache key of an encoder pre-trained on the set ``distilled_key``."""
    return ArtifactCache.key("encoder", {"arch": arch, "pretrain": pretrain_key(pretrain),
                                         "seed": seed},
                             {"distilled": distilled_key})


@dataclass(frozen=True)
class PretrainUnit:
    """Pre-train one ``arch`` encoder on the set ``distilled_key`` under the ``[pretrain]``
    options ``pretrain`` and ``seed``; a stored encoder created before ``fresh_after`` is
    pre-trained again (``--recompute pretrain``)."""

    distilled_key: str
    arch: str
    pretrain: dict[str, Any]
    seed: int
    fresh_after: float = 0.0

    @property
    def key(self) -> str:
        """The encoder's cache key."""
        return encoder_key(self.arch, self.pretrain, self.seed, self.distilled_key)

    @property
    def config(self) -> dict[str, Any]:
        """What the encoder's manifest records as its config (its cost is matched on it)."""
        return {"arch": self.arch, "pretrain": self.pretrain, "seed": self.seed}


def _pretrained(unit: PretrainUnit, env: Env) -> tuple[Path, DistilledSet]:
    """The unit's encoder in the cache (pre-trained now where missing or stale) and its set."""
    cache = ArtifactCache(env.cache_dir)
    distilled = DistilledSet.load(cache.path("distilled", unit.distilled_key))

    def produce(tmp: Path) -> dict[str, Any]:
        model, steps = pretrain_encoder(distilled, unit.arch, unit.pretrain, unit.seed,
                                        env.torch_device)
        atomic_torch_save({k: v.cpu() for k, v in model.state_dict().items()},
                          tmp / "encoder.pt")
        return {"steps": steps}

    path = cache.get_or_create("encoder", unit.key, produce, config=unit.config,
                               inputs={"distilled": unit.distilled_key},
                               built_from=cache.stamps([f"distilled/{unit.distilled_key}"]),
                               fresh_after=unit.fresh_after)
    return path, distilled


def run_pretrain(unit: PretrainUnit, env: Env) -> None:
    """Produce the unit's pre-trained encoder in the cache (its cells then load it)."""
    prepare_process(env)
    _pretrained(unit, env)


def load_encoder(ref: PretrainUnit | TeacherRef, env: Env) -> tuple[Encoder, dict[str, float]]:
    """The encoder ``ref`` names, in eval mode on the unit's device (a pre-trained one is
    pre-trained now if it is missing), and what its source adds to a row's timings (a set's
    ``storage_bytes`` and ``set_images``)."""
    if isinstance(ref, TeacherRef):
        source = cached_dataset(ref.dataset, env.data_root, env.cache_dir)
        return load_teacher(env, ref.teacher_key, ref.arch, source), {}
    path, distilled = _pretrained(ref, env)
    model = build_encoder(distilled, ref.arch)
    load_weights(model, path / "encoder.pt")
    return model.to(env.torch_device).eval(), {"storage_bytes": distilled.storage_bytes,
                                               "set_images": len(distilled)}
