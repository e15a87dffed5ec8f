"""What a result row's work cost, measured: the wall time and peak memory that the manifests
of its artifacts recorded, grouped by stage into the row's ``timings``
(:class:`~mkdt_bench.rows.Timings`). Estimates of work still to do are in
:mod:`mkdt_bench.pipeline.costs`, which reads the same records."""

from __future__ import annotations

from collections.abc import Sequence

from mkdt_bench.cache import ArtifactCache, CorruptManifest
from mkdt_bench.rows import ArtifactRef


def artifact_peak(cache: ArtifactCache, stage: str, key: str) -> float | None:
    """The peak memory an artifact's manifest recorded (a unit run elsewhere, e.g. Ray);
    None for a cell or an unreadable manifest."""
    if stage == "cell":
        return None
    try:
        return cache.manifest(stage, key).peak_mib
    except CorruptManifest:
        return None


#: How the artifacts behind a row are grouped in its compute budget (``timings``).
_COST_GROUPS = {"teacher": "teacher", "representations": "teacher", "distilled": "distill",
                "encoder": "pretrain"}


def stage_costs(cache: ArtifactCache, artifacts: Sequence[str]) -> dict[str, float]:
    """Wall time and peak memory of the artifacts a row needed, from their manifests:
    ``teacher_s`` (teacher + representations), ``substages_s`` (a method's sub-units, e.g.
    the expert trajectories), ``distill_s``, ``pretrain_s`` and ``pretrain_steps``, each
    time group with its ``*_peak_mib`` (GPU memory on a GPU, else the resident set).

    Shared artifacts count in full for every row that needs them (the compute to make
    that set from scratch); an imported set has no distillation cost.
    """
    out: dict[str, float] = {}
    for artifact in map(ArtifactRef.parse, artifacts):
        if not cache.exists(artifact.stage, artifact.key):
            continue
        manifest = cache.manifest(artifact.stage, artifact.key)
        if "imported_from" in manifest.extra:
            continue
        group = _COST_GROUPS.get(artifact.stage, "substages")
        out[f"{group}_s"] = out.get(f"{group}_s", 0.0) + (manifest.seconds or 0.0)
        peak = manifest.peak_mib
        if peak is not None:
            out[f"{group}_peak_mib"] = max(out.get(f"{group}_peak_mib", 0.0), peak)
        if artifact.stage == "encoder":
            out["pretrain_steps"] = manifest.extra["steps"]
    return out
