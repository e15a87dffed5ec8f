"""Cost estimates: what each step of a plan will cost (:class:`CostBook`) and how long the
plan takes on the executor that runs it (:func:`critical_path`). What finished work cost
(a row's ``timings``) is read from its artifacts' manifests by
:mod:`mkdt_bench.stages.accounting`.

Two records hold measurements: every artifact's manifest (the wall time and peak memory of
the stage that made it, :meth:`ArtifactCache.get_or_create`) and every result row's
``timings``. A step to compute is estimated by the first of these that applies:

1. **measured**: the mean time and largest peak of its like: manifests of the same stage,
   inputs and config, the seed (and an expert's index) aside, or of its ``peers`` (e.g.
   the other expert trajectories of the same method); rows of the same configuration
   (:func:`teacher_signature` and the others below: same data, same options, the seed
   aside);
2. **scaled**: work of the same shape measured at another size (:class:`Work`): per
   teacher epoch x image x view, per method unit of its
   :attr:`~mkdt_bench.methods.Method.cost_options` (e.g. an MKDT iteration), per
   pre-training epoch x set image, per cell at another label fraction;
3. **rough model**: where nothing is measured, the step's forward and backward passes of
   one image (:class:`Passes`) times the seconds per image a calibration of this machine
   timed (:mod:`mkdt_bench.pipeline.calibration`); start-up, data loading and
   augmentation are not in it.

Only measurements on the same kind of device count (a GPU's for a CUDA run, a CPU's
otherwise).
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mkdt_bench.cache import ArtifactCache, CorruptManifest, Manifest, canonical_json
from mkdt_bench.errors import UserError
from mkdt_bench.results import OK, TEACHER_ROW, ResultStore
from mkdt_bench.rows import Provenance, Timings

if TYPE_CHECKING:
    from mkdt_bench.data import ImageDataset
    from mkdt_bench.pipeline.calibration import Calibration
    from mkdt_bench.pipeline.executors import Task
    from mkdt_bench.pipeline.plan import Plan, Step

#: Config keys that tell like units of the same work apart without changing their cost.
SEED_KEYS = ("seed", "index")
#: How an estimate that is not a measurement starts its ``basis``.
ROUGH = "rough model"
#: Artifact stages every method row lists; the others in a row's list are sub-units.
_ROW_STAGES = ("teacher", "representations", "distilled", "encoder")
#: The cost of a forward pass, as a share of a forward and backward one.
FORWARD = 1 / 3


@dataclass(frozen=True)
class Estimate:
    """Seconds and peak memory (MiB) of a step, and what they rest on (``basis``)."""

    seconds: float | None
    peak_mib: float | None = None
    basis: str = "no measurement"


@dataclass(frozen=True)
class Work:
    """A step's work as far as its time goes: work of one ``shape`` takes time in
    proportion to its ``size`` (e.g. a teacher config, the epochs aside, and its epochs x
    images x views)."""

    shape: str
    size: float


@dataclass(frozen=True)
class Passes:
    """The rough model of a step: ``count`` images passed forward and backward through
    the model ``arch`` built with ``options`` (e.g. ``{"width": 16}``), ``batch`` at a
    time."""

    arch: str
    count: float
    options: Mapping[str, Any] = field(default_factory=dict)
    batch: int = 64


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


def cell_work(signature: str) -> Work:
    """A cell's work: cells of the same evaluator, task and encoder at any label fraction
    (the encoding of the task's images, the same for every fraction, dominates)."""
    _, dataset, arch, evaluator, options, task, _, teacher = json.loads(signature)
    return Work(canonical_json(["cell", dataset, arch, evaluator, options, task, teacher]), 1.0)


def teacher_work(teacher: dict[str, Any], fingerprint: str, n_train: int) -> Work:
    """The teacher's work: epochs x images x the kind's passes per image
    (:meth:`~mkdt_bench.teachers.TeacherKind.passes_per_image`), plus a forward pass of
    each training image for the representations."""
    from mkdt_bench.teachers import kind_name, teacher_kind

    images = min(teacher.get("train_images") or n_train, n_train)
    size = (teacher.get("epochs", 0) * images * teacher_kind(teacher).passes_per_image(teacher)
            + images * FORWARD)
    fixed = {k: v for k, v in teacher.items()
             if k not in ("seed", "epochs", "train_images", "kind")}
    return Work(canonical_json(["teacher", kind_name(teacher), fixed, fingerprint]), size)


def distill_work(config: dict[str, Any], inputs: dict[str, str]) -> Work | None:
    """A distillation's work (``config`` as its manifest records it): sets of the same
    method, inputs and options but the method's
    :attr:`~mkdt_bench.methods.Method.cost_options`, whose product is the size; None for
    a method not registered here."""
    from mkdt_bench.methods import METHODS

    try:
        cls = METHODS.get(config.get("method", ""))
    except UserError:
        return None
    scale = cls.cost_options
    options = cls.key_options(config.get("options", {}))  # older manifests: every option
    size = math.prod(float(config.get("budget", 0) if name == "budget" else options.get(name, 0))
                     for name in scale)
    fixed = {k: v for k, v in _without_seed(config).items()
             if k != "options" and not (k == "budget" and "budget" in scale)
             and not (k == "code" and not v)}  # older manifests: always a "code"
    fixed["options"] = {k: v for k, v in options.items() if k not in scale}
    return Work(canonical_json(["distilled", fixed, inputs]), size)


def encoder_work(config: dict[str, Any], set_images: int, source: Any) -> Work:
    """A pre-training's work: epochs x the set's images, for one architecture and recipe
    on sets of the same ``source`` data."""
    pretrain = config.get("pretrain", {})
    fixed = {k: v for k, v in pretrain.items() if k != "epochs"}
    return Work(canonical_json(["encoder", config.get("arch"), fixed, source]),
                float(pretrain.get("epochs", 0) * set_images))


Sample = tuple[float, float | None]  # seconds, peak MiB


class CostBook:
    """The measured costs a cache directory and a results database hold.

    Args:
        cache: the artifact cache (a read-only view is enough).
        store: the results database (:meth:`ResultStore.read_only` is enough).
        device: ``"cpu"`` or ``"cuda"``: only measurements made on that kind count.
        train_images: the training images of data sets by fingerprint (what sizes a
            stored teacher's work).
    """

    def __init__(self, cache: ArtifactCache, store: ResultStore, device: str,
                 train_images: Mapping[str, int] | None = None) -> None:
        self.gpu = device.startswith("cuda")
        self.train_images = dict(train_images or {})
        #: ``stage/key`` -> the manifest of every readable artifact
        self.manifests: dict[str, Manifest] = {}
        self._measured: dict[str, Sample] = {}
        self._like: dict[str, dict[str, Sample]] = {}
        self._rows: dict[str, dict[str, Sample]] = {}
        self._shapes: dict[str, dict[str, tuple[float, Sample]]] = {}
        self._read_manifests(cache)
        self._read_rows(store)

    def _read_manifests(self, cache: ArtifactCache) -> None:
        for stage, key in cache.artifacts():
            try:
                self.manifests[f"{stage}/{key}"] = cache.manifest(stage, key)
            except CorruptManifest:
                continue
        representations = {m.inputs.get("teacher"): m for m in self.manifests.values()
                           if m.stage == "representations"}
        for ref, m in self.manifests.items():
            if m.seconds is None or "imported_from" in m.extra or \
                    (m.peak_cuda_mib is not None) != self.gpu:
                continue
            seconds, peak = m.seconds, m.peak_mib
            if m.stage == "teacher":  # the teacher step makes both artifacts
                reps = representations.get(m.key)
                if reps is None:
                    continue
                seconds += reps.seconds or 0.0
                peak = _max(peak, reps.peak_mib)
            self._measured[ref] = (seconds, peak)
            self._like.setdefault(like(m.stage, m.config, m.inputs), {})[ref] = (seconds, peak)
            work = self._manifest_work(m)
            if work is not None and work.size > 0:
                self._shapes.setdefault(work.shape, {})[ref] = (work.size, (seconds, peak))

    def _manifest_work(self, m: Manifest) -> Work | None:
        data = m.inputs.get("data")
        if m.stage == "teacher" and data in self.train_images:
            return teacher_work(m.config, data, self.train_images[data])
        if m.stage == "distilled":
            return distill_work(m.config, m.inputs)
        if m.stage == "encoder":
            images = self.set_images(m.inputs.get("distilled", ""))
            if images is not None:
                distilled = self.manifests[f"distilled/{m.inputs['distilled']}"]
                return encoder_work(m.config, images, set_source(distilled))
        return None

    def _add(self, signature: str, source: str, seconds: float | None,
             peak: float | None) -> None:
        if seconds is not None:
            self._rows.setdefault(signature, {}).setdefault(source, (float(seconds), peak))

    def _read_rows(self, store: ResultStore) -> None:
        frame = store.frame()
        if frame.empty:
            return
        for row in frame[frame["status"] == OK].itertuples():
            if str(row.device).startswith("cuda") != self.gpu:
                continue
            given: Provenance = row.provenance
            costs: Timings = row.costs
            fingerprint, teacher = given.fingerprint, given.teacher_config
            used = {ref.stage: str(ref) for ref in given.artifacts}
            if teacher and "representations" in used:  # a method row: both artifacts
                self._add(teacher_signature(fingerprint, teacher), used["teacher"],
                          costs.teacher_s, costs.teacher_peak_mib)
            if given.method and teacher:
                options, pool = given.method_options or {}, given.train_pool or 0
                subs = [str(ref) for ref in given.artifacts if ref.stage not in _ROW_STAGES]
                if subs and costs.substages_s is not None:
                    self._add(substage_signature(fingerprint, teacher["arch"], given.method,
                                                 options, pool), "|".join(subs),
                              costs.substages_s / len(subs), costs.substages_peak_mib)
                if "distilled" in used:
                    self._add(distill_signature(fingerprint, teacher["arch"], given.method,
                                                options, row.budget, pool), used["distilled"],
                              costs.distill_s, costs.distill_peak_mib)
            if "encoder" in used and given.pretrain is not None:
                self._add(encoder_signature(fingerprint, row.method, row.budget, row.arch,
                                            given.pretrain), used["encoder"],
                          costs.pretrain_s, costs.pretrain_peak_mib)
            signature = cell_signature(row.dataset, row.arch, row.evaluator,
                                       given.evaluator_options or {}, row.task,
                                       row.fraction, row.method == TEACHER_ROW)
            self._add(signature, row.cell_key, costs.evaluate_s, None)
            if costs.evaluate_s is not None:
                self._shapes.setdefault(cell_work(signature).shape, {}).setdefault(
                    row.cell_key, (1.0, (float(costs.evaluate_s), None)))

    def set_images(self, key: str) -> int | None:
        """The images of the stored distilled set ``key`` (None where it is not stored)."""
        manifest = self.manifests.get(f"distilled/{key}")
        images = manifest.extra.get("num_images") if manifest is not None else None
        return images if isinstance(images, int) else None

    def estimate(self, step: Step, work: Work | None = None) -> Estimate:
        """The mean time and largest peak of the step's measured like; else, with the step's
        ``work``, the mean time per unit of work of its shape times its size; else no
        estimate."""
        samples: dict[str, Sample] = {}
        for peer in step.peers:
            if peer in self._measured:
                samples[peer] = self._measured[peer]
        samples.update(self._like.get(step.like, {}) if step.like else {})
        for source, sample in self._rows.get(step.signature, {}).items():
            samples.setdefault(source, sample)
        if samples:
            seconds = sum(s for s, _ in samples.values()) / len(samples)
            peaks = [p for _, p in samples.values() if p is not None]
            n = len(samples)
            return Estimate(seconds, max(peaks) if peaks else None,
                            f"measured ({n} like it{'' if n == 1 else ', mean'})")
        scaled = self._shapes.get(work.shape, {}) if work is not None else {}
        if work is None or not scaled:
            return Estimate(None)
        per_unit = sum(s / size for size, (s, _) in scaled.values()) / len(scaled)
        peaks = [p for _, (_, p) in scaled.values() if p is not None]
        n = len(scaled)
        return Estimate(per_unit * work.size, max(peaks) if peaks else None,
                        f"scaled from {n} like it at another size")


def set_source(distilled: Manifest) -> Any:
    """What a stored set's images come from (the method's inputs, or an imported set's
    content), so that pre-trainings on sets of the same data compare."""
    return distilled.inputs.get("images") or distilled.config


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def rough(passes: Passes, calibration: Calibration, channels: int, image_size: int,
          what: str) -> Estimate:
    """The rough model of a step: its passes times the calibrated seconds per image."""
    if not passes.count:
        return Estimate(0.0, None, f"{ROUGH}: {what}, without a forward or backward pass")
    per_image = calibration.per_image(passes.arch, passes.options, channels, image_size,
                                      passes.batch)
    options = "".join(f" {k}={v}" for k, v in passes.options.items())
    return Estimate(passes.count * per_image, None,
                    f"{ROUGH}: {what} = {passes.count:,.0f} passes of one image through "
                    f"{passes.arch}{options} x {per_image * 1e3:.3f} ms (timed on this "
                    "machine); start-up, data loading and augmentation are not in it")


def estimate_plan(plan: Plan, book: CostBook, calibration: Calibration,
                  dataset: ImageDataset) -> dict[tuple[str, str], Estimate]:
    """An estimate for every step of ``plan`` to compute (``dataset``: the grid's): measured,
    scaled, or the rough model."""
    distilled = {s.key: s for s in plan.steps if s.stage == "distilled"}
    sub_method = {sub: distilled[key] for key, subs in plan.distill_after.items()
                  for sub in subs}
    out = {}
    for step in plan.to_compute:
        work, passes, what = _step_work(step, plan, book, distilled, sub_method, dataset)
        estimate = book.estimate(step, work)
        if estimate.seconds is None and passes is not None:
            estimate = rough(passes, calibration, dataset.channels, dataset.image_size, what)
        out[step.stage, step.key] = estimate
    return out


def _method(step: Step) -> tuple[Any, dict[str, Any]]:
    """The method of a distillation step, and its config as the step's ``like`` holds it."""
    from mkdt_bench.methods import create_method

    _, config, _ = json.loads(step.like)
    return create_method(config["method"], **config["options"]), config


def _step_work(step: Step, plan: Plan, book: CostBook, distilled: dict[str, Step],
               sub_method: dict[tuple[str, str], Step], dataset: ImageDataset,
               ) -> tuple[Work | None, Passes | None, str]:
    """The work of a step to compute, its rough model, and the latter in words."""
    from mkdt_bench.teachers import teacher_kind

    n_train, pool = len(dataset.train_images), plan.n_source
    if step.stage == "cell":
        _, _, arch, *_ = json.loads(step.signature)
        images = n_train + len(dataset.test_images)
        return (cell_work(step.signature), Passes(arch, images * FORWARD, batch=images),
                f"encoding {images:,} images (a forward pass is a third of one)")
    _, config, inputs = json.loads(step.like) if step.like else (None, {}, {})
    if step.stage == "teacher":
        work = teacher_work(config, inputs["data"], n_train)
        images = min(config.get("train_images") or n_train, n_train)
        views = teacher_kind(config).passes_per_image(config)
        return (work, Passes(config["arch"], work.size,
                             batch=min(config.get("batch_size", 1), images) * max(views, 1)),
                f"{config.get('epochs', 0)} epochs x {images:,} images x {views} views + "
                "encoding the training set")
    if step.stage == "encoder":
        key = inputs["distilled"]
        source = book.manifests.get(f"distilled/{key}")
        if source is not None:
            images, origin = book.set_images(key) or 0, set_source(source)
        elif key not in distilled:  # a set neither stored nor planned: nothing to model
            return None, None, ""
        else:
            method, method_config = _method(distilled[key])
            images = method.set_size(method_config["budget"], pool)
            origin = json.loads(distilled[key].like)[2].get("images")
        epochs, batch = config["pretrain"]["epochs"], config["pretrain"].get("batch_size", 1)
        return (encoder_work(config, images, origin),
                Passes(config["arch"], epochs * images, batch=max(1, min(batch, images))),
                f"{epochs} epochs x {images:,} set images")
    owner = step if step.stage == "distilled" else sub_method.get((step.stage, step.key))
    if owner is None:
        return None, None, ""
    method, method_config = _method(owner)
    arch, options, count, batch = method.rough_passes(method_config["budget"], pool).get(
        step.stage, ("", {}, 0.0, 1))
    work = distill_work(config, inputs) if step.stage == "distilled" else None
    return (work, Passes(arch, count, options, batch),
            f"{method.name} {step.stage} of {method_config['budget']:,} images from {pool:,}")


def total(estimates: list[Estimate]) -> tuple[float, float | None, int]:
    """Summed seconds and largest peak of the known estimates, and how many are unknown."""
    known = [e for e in estimates if e.seconds is not None]
    peaks = [e.peak_mib for e in known if e.peak_mib is not None]
    return (sum(e.seconds for e in known),  # type: ignore[misc]
            max(peaks) if peaks else None, len(estimates) - len(known))


def critical_path(tasks: Sequence[Task], seconds: Mapping[str, float], workers: int) -> float:
    """The time to run ``tasks`` (each taking ``seconds[key]``, 0 if absent) on ``workers``
    workers as the executors schedule them: a task marked ``alone`` runs by itself once
    those listed before it are done; otherwise a free worker takes the first task in the
    given order whose dependencies are done (list scheduling; one worker: the sum)."""
    keys = {task.key for task in tasks}
    finished: dict[str, float] = {}
    clock = 0.0
    segment: list[Task] = []
    for task in [*tasks, None]:
        if task is not None and not task.alone:
            segment.append(task)
            continue
        clock = _list_schedule(segment, seconds, max(1, workers), clock, finished, keys)
        segment = []
        if task is not None:
            clock += seconds.get(task.key, 0.0)
            finished[task.key] = clock
    return clock


def _list_schedule(tasks: list[Task], seconds: Mapping[str, float], workers: int,
                   clock: float, finished: dict[str, float], keys: set[str]) -> float:
    """When the last of ``tasks`` ends, started at ``clock`` on ``workers`` workers; the
    end of each goes into ``finished``."""
    waiting = list(tasks)
    running: list[tuple[float, str]] = []
    while waiting or running:
        while len(running) < workers:
            task = next((t for t in waiting if all(finished.get(k, math.inf) <= clock
                                                   for k in t.after if k in keys)), None)
            if task is None:
                break
            waiting.remove(task)
            heapq.heappush(running, (clock + seconds.get(task.key, 0.0), task.key))
        if not running:
            raise ValueError(f"task {waiting[0].key!r} waits for a task listed after it")
        clock, key = heapq.heappop(running)
        finished[key] = clock
    return clock
