"""Reference points every table needs (spec ``evaluation.md`` §C rows 1, 2 and 8).

- ``random``: a uniformly random real subset of the budget with teacher targets.
- ``none``: no pre-training; an empty set, so the encoder is probed at random init.
- ``full``: the whole training set with teacher targets (full data + KD).
"""

from __future__ import annotations

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods import register_method
from mkdt_bench.methods.base import Method, MethodContext


@register_method("random")
class RandomSubset(Method):
    """Uniformly random real images (without replacement) with their teacher targets."""

    def distill(self, ctx: MethodContext) -> DistilledSet:
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist())


@register_method("none")
class NoPretraining(Method):
    """The floor row: nothing to pre-train on."""

    seeded = False

    def distill(self, ctx: MethodContext) -> DistilledSet:
        return self.make_set(ctx, ctx.images[:0], ctx.targets[:0])


@register_method("full")
class FullData(Method):
    """The whole training set with teacher targets (budget ignored)."""

    seeded = False

    def distill(self, ctx: MethodContext) -> DistilledSet:
        return self.make_set(ctx, ctx.images, ctx.targets)
