"""The method interface: a method turns a :class:`MethodContext` into a DistilledSet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.options import Configurable
from mkdt_bench.progress import Progress


@dataclass
class MethodContext:
    """Everything a method may read; it must not reach into other stages.

    Attributes:
        source: name of the source data set.
        images: ``N x C x H x W`` normalised training images.
        targets: ``N x D`` teacher target representations, row i for image i.
        mean, std: the normalisation ``images`` are expressed in.
        budget: number of images the distilled set may hold.
        seed: seed for every random choice of the method.
        device: where to compute.
        cache: the artifact cache, for sub-stages worth caching (e.g. expert trajectories).
        inputs_key: cache key naming (images, targets); sub-stage keys build on it.
        scratch: a directory that survives interruption, for resumable snapshots.
        progress: progress reporter.
        load_teacher: returns the frozen teacher (eval mode, on ``device``), for methods
            that need targets of new inputs (KRR-ST's augmented real batches); ``None``
            where no teacher is at hand.
        precision: the run's float32 precision (:data:`mkdt_bench.device.PRECISIONS`);
            under "bf16" a method with :attr:`Method.uses_autocast` runs the parts that
            allow it under bfloat16 autocast.
        labels: ``N`` class labels of ``images``, given only to methods that declare
            :attr:`Method.uses_labels` (they break the SSL premise); ``None`` for the others.
    """

    source: str
    images: Tensor
    targets: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    budget: int
    seed: int
    device: torch.device
    cache: ArtifactCache
    inputs_key: str
    scratch: Path
    progress: Progress = field(default_factory=Progress)
    load_teacher: Callable[[], nn.Module] | None = None
    precision: str = "default"
    labels: Tensor | None = None


class SubUnit(Protocol):
    """A precomputable part of a method's work (e.g. one expert trajectory).

    ``run(ctx)`` produces the cache artifact ``(stage, key)`` that ``distill`` would
    otherwise compute itself; units must be picklable. ``ctx`` has budget 0 and seed 0:
    a sub-unit depends only on the inputs (``ctx.inputs_key``) and its own fields.
    """

    stage: str
    key: str

    def run(self, ctx: MethodContext) -> None: ...


class Method(Configurable):
    """Base class of distillation methods: sub-class, declare :attr:`options`, implement
    ``distill``.

    Options are plain data given to the constructor and validated against their
    declarations (:class:`~mkdt_bench.options.Opt`); the resolved dict is ``self.config``.
    """

    kind = "method"
    #: False for methods whose output does not depend on the seed (e.g. ``full``).
    seeded: ClassVar[bool] = True
    #: Options that choose how a set is computed, not which set (e.g. MKDT's ``unroll``):
    #: left out of the distilled set's cache key, so changing them reuses a stored set.
    #: Only for options whose results agree to float rounding.
    engine_options: ClassVar[frozenset[str]] = frozenset()
    #: Options added after sets were stored, with the value that reproduces the behaviour
    #: from before they existed: at that value they are left out of the cache key, so the
    #: stored sets stay valid (any other value is part of the key), and tables read a row
    #: stored without the option as having that value.
    compatible_defaults: ClassVar[dict[str, Any]] = {}
    #: The version of the method's code: raise it (2, 3, ...) with every change that makes
    #: different sets; from 2 on it is part of the sets' cache key, so stored sets of older
    #: code are not reused. mkdt-bench's methods are at 1 until they declare one; a plug-in
    #: that declares none is keyed by the sha256 of its source files (:mod:`.code_version`).
    version: ClassVar[int | None] = None
    #: True for methods that run part of their work under bfloat16 autocast when the run's
    #: precision is "bf16" (``MethodContext.precision``): the precision then names the set.
    uses_autocast: ClassVar[bool] = False
    #: True for methods that read the training labels (``ctx.labels``): they break the SSL
    #: premise, so their rows are marked (``uses_labels`` in a row's config).
    uses_labels: ClassVar[bool] = False
    #: True for methods that snapshot their state into ``ctx.scratch`` while they run and,
    #: run again after a kill, resume from the last snapshot to the same set.
    resumable: ClassVar[bool] = False
    #: Options whose default is the ``[teacher]`` option of the same name (e.g. the SSL
    #: recipe of ``random-ssl``); the config fills them in unless they are set.
    teacher_options: ClassVar[frozenset[str]] = frozenset()
    #: Options the time of ``distill`` grows in proportion to (e.g. MKDT's ``iterations``;
    #: ``"budget"`` for the set's size): a stored set that differs from a new one only in
    #: these scales to its estimate (:mod:`mkdt_bench.pipeline.costs`).
    cost_options: ClassVar[tuple[str, ...]] = ()
    #: The role of a reference row in reports (:data:`mkdt_bench.rows.REFERENCES`):
    #: ``"floor"`` (no pre-training), ``"low"`` and ``"high"`` (the marks a relative score
    #: runs between); None for a method that is compared, not compared against.
    reference: ClassVar[str | None] = None

    def distill(self, ctx: MethodContext) -> DistilledSet:
        raise NotImplementedError

    def rough_passes(self, budget: int,
                     pool: int) -> dict[str, tuple[str, dict[str, Any], float, int]]:
        """The cost model's view of the method where nothing like it was measured: for
        ``distilled`` (and each sub-unit stage, per sub-unit), the model, its options, how
        many images pass forward and backward through it and in batches of how many,
        distilling ``budget`` images from ``pool`` (default: none, a selection)."""
        return {}

    def set_size(self, budget: int, pool: int) -> int:
        """Images of the set ``distill`` makes from ``pool`` (what pre-training costs)."""
        return budget

    @classmethod
    def key_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """What names the distilled set: ``options`` without the :attr:`engine_options` and
        without :attr:`compatible_defaults` at their compatible value."""
        return {k: v for k, v in options.items() if k not in cls.engine_options
                and not (k in cls.compatible_defaults and v == cls.compatible_defaults[k])}

    def sub_units(self, inputs_key: str) -> list[SubUnit]:
        """Independent sub-stages of ``distill`` on the inputs ``inputs_key`` that an
        executor may run first, in parallel (default: none)."""
        return []

    def make_set(self, ctx: MethodContext, images: Tensor, targets: Tensor,
                 lr: float | None = None, **extra: Any) -> DistilledSet:
        """Wrap tensors as a DistilledSet carrying the context's provenance."""
        return DistilledSet(images=images.detach().cpu(), targets=targets.detach().cpu(), lr=lr,
                            source=ctx.source, mean=ctx.mean, std=ctx.std, method=self.name,
                            extra=extra)
