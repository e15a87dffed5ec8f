"""Pre-training stage: a fresh encoder trained on a DistilledSet (spec ``evaluation.md``
A.1), cached per (architecture, pre-training config, seed, set), and the compute budget
of the artifacts behind a row."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.cache import ArtifactCache, atomic_torch_save
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder
from mkdt_bench.pretraining import build_encoder, pretrain_encoder, pretrain_key
from mkdt_bench.safeload import load_weights
from mkdt_bench.stages.env import Env, prepare_process

if TYPE_CHECKING:
    from mkdt_bench.stages.evaluate import EvalUnit


def encoder_key(arch: str, pretrain: dict[str, Any], seed: int, distilled_key: str) -> str:
    """Cache key of an encoder pre-trained on the set ``distilled_key``."""
    return ArtifactCache.key("encoder", {"arch": arch, "pretrain": pretrain_key(pretrain),
                                         "seed": seed},
                             {"distilled": distilled_key})


def pretrained_encoder(unit: EvalUnit, env: Env) -> tuple[Encoder, dict[str, float]]:
    """The unit's encoder (pre-trained now or loaded from the cache, in eval mode) and the
    compute budget of the artifacts behind its rows."""
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
                               inputs={"distilled": unit.source_key},
                               built_from=cache.stamps([f"distilled/{unit.source_key}"]),
                               fresh_after=unit.fresh_after)
    model = build_encoder(distilled, unit.arch)
    load_weights(model, path / "encoder.pt")
    timings = {**stage_costs(cache, unit.row_config.get("artifacts", [])),
               "storage_bytes": distilled.storage_bytes, "set_images": len(distilled)}
    return model.to(env.torch_device).eval(), timings


def run_pretrain(unit: EvalUnit, env: Env) -> None:
    """Produce the unit's pre-trained encoder in the cache (its cells then load it)."""
    prepare_process(env)
    pretrained_encoder(unit, env)


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
