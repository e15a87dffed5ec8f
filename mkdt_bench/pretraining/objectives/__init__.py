"""Pre-training objectives, one file each, registered in :data:`PRETRAIN_OBJECTIVES`:
``regression`` onto a set's targets and ``ssl`` on views of its images; a new objective (e.g.
a distillation loss) is one file plus its import below and, where a set asks for it, its
case in :func:`objective_name`."""

from __future__ import annotations

from mkdt_bench.pretraining.objectives import regression, ssl_views  # noqa: F401 - register
from mkdt_bench.pretraining.objectives.base import (
    PRETRAIN_OBJECTIVES,
    PretrainObjective,
    objective_name,
)

__all__ = ["PRETRAIN_OBJECTIVES", "PretrainObjective", "objective_name"]
