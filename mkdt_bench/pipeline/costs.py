"""What a plan's steps will cost, from what earlier runs measured.

Two records hold measurements: every artifact's manifest (the wall time and peak memory of
the stage that made it, :meth:`ArtifactCache.get_or_create`) and every result row's
``timings`` (the costs of the artifacts behind it and the evaluation's seconds). A step
to compute is estimated by the mean time and the largest peak of its like:

- manifests of the same stage, inputs and config, the seed (and an expert's index) aside,
  or of its ``peers`` (e.g. the other expert trajectories of the same method);
- rows of the same configuration (:func:`teacher_signature` and the others below: same
  data, same options, the seed aside).

Only measurements on the same kind of device count (a GPU's for a CUDA run, a CPU's
otherwise). A step with none of either has no estimate, and the plan says so. The
teacher, the one stage that can take days by mistake, has a labelled rough model when
nothing was measured: :func:`rough_teacher`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mkdt_bench.cache import ArtifactCache, CorruptManifest, canonical_json
from mkdt_bench.results import OK, TEACHER_ROW, ResultStore

if TYPE_CHECKING:
    import torch

    from mkdt_bench.data import ImageDataset
    from mkdt_bench.pipeline.runner import Step

#: Config keys that tell like units of the same work apart without changing their cost.
SEED_KEYS = ("seed", "index")
#: How an estimate that is not a measurement starts its ``basis``.
ROUGH = "rough model"
#: Artifact stages every method row lists; the others in a row's list are sub-units.
_ROW_STAGES = ("teacher", "representations", "distilled", "encoder")


@dataclass(frozen=True)
class Estimate:
    """Seconds and peak memory (MiB) of a step, and what they rest on (``basis``)."""

    seconds: float | None
    peak_mib: float | None = None
    basis: str = "no measurement"


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in SEED_KEYS}


def like(stage: str, config: dict[str, Any], inputs: dict[str, str]) -> str:
    """What manifests of the same work share: stage, inputs and config, seed aside."""
    return canonical_json([stage, _without_seed(config), inputs])


def teacher_signature(fingerprint: str, teacher: dict[str, Any]) -> str:
    """Rows whose teacher (and representations) cost the same: same data and teacher
    config, the teacher's seed aside."""
    return canonical_json(["teacher", fingerprint, _without_seed(teacher)])


def substage_signature(fingerprint: str, teacher_arch: str, method: str,
                       options: dict[str, Any], pool: int) -> str:
    """Rows of a method whose sub-units (e.g. expert trajectories) cost the same."""
    return canonical_json(["substage", fingerprint, teacher_arch, method, options, pool])


def distill_signature(fingerprint: str, teacher_arch: str, method: str,
                      options: dict[str, Any], budget: int, pool: int) -> str:
    """Rows whose distillation costs the same: method, options, budget, data, pool."""
    return canonical_json(["distilled", fingerprint, teacher_arch, method, options, budget,
                           pool])


def encoder_signature(fingerprint: str, row: str, budget: int, arch: str,
                      pretrain: dict[str, Any]) -> str:
    """Rows whose pre-training costs the same: the row's sets, architecture, recipe."""
    return canonical_json(["encoder", fingerprint, row, budget, arch, pretrain])


def cell_signature(dataset: str, arch: str, evaluator: str, options: dict[str, Any],
                   task: str, fraction: float, teacher: bool) -> str:
    """Rows whose evaluation costs the same: evaluator, options, task, label fraction."""
    return canonical_json(["cell", dataset, arch, evaluator, options, task, fraction,
                           teacher])


Sample = tuple[float, float | None]  # seconds, peak MiB


class CostBook:
    """The measured costs a cache directory and a results database hold.

    Args:
        cache: the artifact cache (a read-only view is enough).
        store: the results database (:meth:`ResultStore.read_only` is enough).
        device: ``"cpu"`` or ``"cuda"``: only measurements made on that kind count.
    """

    def __init__(self, cache: ArtifactCache, store: ResultStore, device: str) -> None:
        self.gpu = device.startswith("cuda")
        self._manifests: dict[str, Sample] = {}
        self._like: dict[str, dict[str, Sample]] = {}
        self._rows: dict[str, dict[str, Sample]] = {}
        self._read_manifests(cache)
        self._read_rows(store)

    def _read_manifests(self, cache: ArtifactCache) -> None:
        manifests = {}
        for stage, key in cache.artifacts():
            try:
                manifests[stage, key] = cache.manifest(stage, key)
            except CorruptManifest:
                continue
        representations = {m.get("inputs", {}).get("teacher"): m
                           for (stage, _), m in manifests.items() if stage == "representations"}
        for (stage, key), m in manifests.items():
            if "seconds" not in m or "imported_from" in m or ("peak_cuda_mib" in m) != self.gpu:
                continue
            seconds, peak = m["seconds"], m.get("peak_cuda_mib", m.get("peak_rss_mib"))
            if stage == "teacher":  # the teacher step makes both artifacts
                reps = representations.get(key)
                if reps is None:
                    continue
                seconds += reps.get("seconds", 0.0)
                peak = _max(peak, reps.get("peak_cuda_mib", reps.get("peak_rss_mib")))
            self._manifests[f"{stage}/{key}"] = (seconds, peak)
            group = like(stage, m.get("config", {}), m.get("inputs", {}))
            self._like.setdefault(group, {})[f"{stage}/{key}"] = (seconds, peak)

    def _add(self, signature: str, source: str, seconds: Any, peak: Any) -> None:
        if isinstance(seconds, (int, float)):
            self._rows.setdefault(signature, {}).setdefault(source, (float(seconds), peak))

    def _read_rows(self, store: ResultStore) -> None:
        frame = store.frame()
        if frame.empty:
            return
        for row in frame[frame["status"] == OK].itertuples():
            if str(row.device).startswith("cuda") != self.gpu:
                continue
            config, timings = json.loads(row.config), json.loads(row.timings)
            fingerprint, teacher = config.get("fingerprint"), config.get("teacher_config")
            artifacts = config.get("artifacts", [])
            used = {a.split("/", 1)[0]: a for a in artifacts}
            if teacher and "representations" in used:  # a method row: both artifacts
                self._add(teacher_signature(fingerprint, teacher), used["teacher"],
                          timings.get("teacher_s"), timings.get("teacher_peak_mib"))
            method = config.get("method")
            if method and teacher:
                options, pool = config.get("method_options", {}), config.get("train_pool", 0)
                subs = [a for a in artifacts if a.split("/", 1)[0] not in _ROW_STAGES]
                if subs and "substages_s" in timings:
                    self._add(substage_signature(fingerprint, teacher["arch"], method, options,
                                                 pool), "|".join(subs),
                              timings["substages_s"] / len(subs),
                              timings.get("substages_peak_mib"))
                if "distilled" in used:
                    self._add(distill_signature(fingerprint, teacher["arch"], method, options,
                                                row.budget, pool), used["distilled"],
                              timings.get("distill_s"), timings.get("distill_peak_mib"))
            if "encoder" in used and "pretrain" in config:
                self._add(encoder_signature(fingerprint, row.method, row.budget, row.arch,
                                            config["pretrain"]), used["encoder"],
                          timings.get("pretrain_s"), timings.get("pretrain_peak_mib"))
            self._add(cell_signature(row.dataset, row.arch, row.evaluator,
                                     config.get("evaluator_options", {}), row.task,
                                     row.fraction, row.method == TEACHER_ROW),
                      row.cell_key, timings.get("evaluate_s"), None)

    def estimate(self, step: Step) -> Estimate:
        """The mean time and largest peak of the step's measured like, or no estimate."""
        samples: dict[str, Sample] = {}
        for peer in step.peers:
            if peer in self._manifests:
                samples[peer] = self._manifests[peer]
        samples.update(self._like.get(step.like, {}) if step.like else {})
        for source, sample in self._rows.get(step.signature, {}).items():
            samples.setdefault(source, sample)
        if not samples:
            return Estimate(None)
        seconds = sum(s for s, _ in samples.values()) / len(samples)
        peaks = [p for _, p in samples.values() if p is not None]
        n = len(samples)
        return Estimate(seconds, max(peaks) if peaks else None,
                        f"measured ({n} like it{'' if n == 1 else ', mean'})")


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def rough_teacher(teacher: dict[str, Any], dataset: ImageDataset, device: torch.device,
                  max_batch: int = 64) -> Estimate:
    """A labelled rough model of training the teacher when nothing like it was measured:
    epochs x images x views x the time per image of one forward and backward pass of the
    teacher's backbone, timed now on ``device`` (one warm-up step, then the faster of two
    timed steps of the configured batch, at most ``max_batch`` images, per view: a busy
    machine slows it, so it is rough). Augmentation, the projection head, data loading and
    the representations pass are not in it, so it is a lower bound (on 8x8 digits, where
    augmentation dominates, a tenth of the measured time): the warning it feeds errs on
    the side of silence. The global random state is left as it was."""
    import torch

    from mkdt_bench.teachers.ssl import build_teacher

    if teacher["checkpoint"]:
        return Estimate(None, basis="loaded from a checkpoint; not estimated")
    n_train = len(dataset.train_images)
    images = min(teacher["train_images"] or n_train, n_train)
    views = 2 if teacher["kind"] == "ssl" else 1
    batch = max(1, min(teacher["batch_size"], max_batch, images))
    with torch.random.fork_rng(devices=[]):
        model = build_teacher(teacher["arch"], dataset).to(device).train()
        x = torch.randn(batch * views, dataset.channels, dataset.image_size,
                        dataset.image_size, device=device)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model.zero_grad()
            model.features(x).square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = min(times[1:])
    per_image = seconds / (batch * views)
    total = teacher["epochs"] * images * views * per_image
    return Estimate(total, None, f"{ROUGH}: {teacher['epochs']} epochs x {images:,} images x "
                    f"{views} view{'s' if views > 1 else ''} x {per_image * 1e3:.2f} ms, the "
                    f"time per image of one {teacher['arch']} forward+backward step of "
                    f"{batch * views} images timed now on {device.type}; a lower bound: "
                    "augmentation, projection head and data loading are not in it")


def total(estimates: list[Estimate]) -> tuple[float, float | None, int]:
    """Summed seconds and largest peak of the known estimates, and how many are unknown."""
    known = [e for e in estimates if e.seconds is not None]
    peaks = [e.peak_mib for e in known if e.peak_mib is not None]
    return (sum(e.seconds for e in known),  # type: ignore[misc]
            max(peaks) if peaks else None, len(estimates) - len(known))
