"""What a plan is made of: the steps of a grid with what each needs, the plan's units, and
the stages ``--recompute`` forces (data only; :mod:`mkdt_bench.pipeline.planner` makes a
plan, :mod:`mkdt_bench.pipeline.run` runs one)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mkdt_bench.errors import UserError
from mkdt_bench.stages.distill import DistillUnit, ImportUnit, MethodSubUnit
from mkdt_bench.stages.evaluate import EvalUnit
from mkdt_bench.stages.teacher import TeacherUnit
from mkdt_bench.variants import parse_label

#: Task key of the teacher (and its representations), the grid's first task.
TEACHER = "teacher"
#: Key prefix of the tasks whose results are result rows.
EVALUATE = "evaluate:"

#: What a step of the plan needs: computing, nothing (in the cache, or a cell in the
#: database), or nothing because every cell that would use it is stored already.
TO_COMPUTE, CACHED, NOT_NEEDED, NO_DATA = "to compute", "cached", "not needed", "n/a (no data)"


@dataclass(frozen=True)
class Step:
    """One piece of a grid's work as planned: an artifact or a cell, what it needs
    (``status``), the executor task that computes it, and what its cost is matched on
    (:mod:`mkdt_bench.pipeline.costs`): ``like`` (manifests of the same stage and config, seed
    aside), ``peers`` (artifacts of the same work, e.g. the other expert trajectories of
    a method) and ``signature`` (result rows of the same configuration)."""

    stage: str
    key: str
    label: str
    status: str
    task: str = ""
    like: str = ""
    peers: tuple[str, ...] = ()
    signature: str = ""


@dataclass
class Plan:
    """The resolved grid: units still to run, the keys of every cell it covers, and every
    step with its status (what ``--dry-run`` lists and the progress weighs)."""

    sub_units: list[MethodSubUnit]
    distill_units: list[DistillUnit]
    distill_after: dict[str, tuple[tuple[str, str], ...]]  # distilled key -> its sub-units
    eval_units: list[EvalUnit]
    cell_keys: list[str]
    budget: int
    teacher: TeacherUnit | None = None
    steps: list[Step] = field(default_factory=list)
    n_train: int = 0
    n_source: int = 0
    #: When the plan was made: a cell another process stores after it is not computed again.
    planned_at: float = field(default_factory=time.time)
    #: ``{"stage/key": problems}`` of the corrupt artifacts the plan computes again.
    corrupt: dict[str, list[str]] = field(default_factory=dict)
    #: Sets evaluated as they are (``eval``) to copy into the cache first.
    imports: list[ImportUnit] = field(default_factory=list)

    @property
    def to_compute(self) -> list[Step]:
        return [s for s in self.steps if s.status == TO_COMPUTE]


@dataclass(frozen=True)
class Recompute:
    """Stages to compute again although their results are stored (``--recompute``).

    What the named stages stored before ``since`` counts as stale: the teacher (and its
    representations), a method's sub-units, sets and what it cached for them, the
    encoders (``pretrain``), or an evaluator's cells. Everything computed from a stale
    artifact follows it (:class:`~mkdt_bench.cache.ArtifactCache` freshness), and each
    replacement takes the old one's place only once complete.
    """

    stages: frozenset[str]
    since: float

    def after(self, stage: str) -> float:
        """``since`` for a named stage, else 0 (nothing forced)."""
        return self.since if stage in self.stages else 0.0


def parse_recompute(stages: list[str], cfg: dict[str, Any]) -> Recompute:
    """Check ``--recompute`` values against the grid; a UserError names a bad one and
    lists what this grid has."""
    run = cfg["run"]
    allowed = ["teacher", "pretrain",
               *dict.fromkeys(f"methods.{parse_label(label)[0]}" for label in run["methods"]),
               *(f"evaluators.{name}" for name in run["evaluators"])]
    for stage in stages:
        if stage not in allowed:
            raise UserError(f"--recompute {stage!r} is not a stage of this grid; choose from "
                            f"{', '.join(allowed)}")
    return Recompute(frozenset(stages), time.time())

