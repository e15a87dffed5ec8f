"""Pre-training: a fresh encoder trained on a DistilledSet (:mod:`.train`) by the set's
objective (:mod:`.objectives`, a registry: ``regression`` onto targets, ``ssl`` on views),
under the ``[pretrain]`` options (:mod:`.options`, re-exported here). Importing this package
imports no torch (reports read the options)."""

from __future__ import annotations

from mkdt_bench.pretraining.options import (
    COMPATIBLE_DEFAULTS,
    PRETRAIN_BOUNDS,
    PRETRAIN_DEFAULTS,
    describe_pretrain,
    pretrain_key,
)

__all__ = ["COMPATIBLE_DEFAULTS", "PRETRAIN_BOUNDS", "PRETRAIN_DEFAULTS", "describe_pretrain",
           "pretrain_key"]
