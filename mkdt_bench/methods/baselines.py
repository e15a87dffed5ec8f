"""Reference points every table needs (``docs/protocol.md``, Baselines).

- ``random``: a uniformly random real subset of the budget with teacher targets.
- ``none``: no pre-training; an empty set, so the encoder is probed at random init.
- ``full``: the whole training set with teacher targets (full data + KD).
- ``random-balanced``: a class-balanced random real subset with teacher targets; it reads
  the training labels (``uses_labels``), so its rows are marked as breaking the SSL premise.
"""

from __future__ import annotations

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method


@register_method("random")
class RandomSubset(Method):
    """Uniformly random real images (without replacement) with their teacher targets."""

    reference = "low"

    def distill(self, ctx: MethodContext) -> DistilledSet:
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist())


@register_method("none")
class NoPretraining(Method):
    """The floor row: nothing to pre-train on."""

    reference = "floor"
    seeded = False

    def set_size(self, budget: int, pool: int) -> int:
        return 0

    def distill(self, ctx: MethodContext) -> DistilledSet:
        return self.make_set(ctx, ctx.images[:0], ctx.targets[:0])


@register_method("full")
class FullData(Method):
    """The whole training set with teacher targets (budget ignored)."""

    reference = "high"
    seeded = False

    def set_size(self, budget: int, pool: int) -> int:
        return pool

    def distill(self, ctx: MethodContext) -> DistilledSet:
        return self.make_set(ctx, ctx.images, ctx.targets)


@register_method("random-balanced")
class RandomBalancedSubset(Method):
    """Random real images, the same number from every class (to one), with teacher targets.

    Round robin: the classes, in a seeded random order, each take their next image of a
    seeded random order of the images until the budget is full; class counts therefore
    differ by at most one, and a class that runs out of images is skipped. SAS's
    ``rand-balanced`` subsets and DC-BENCH's random row are balanced this way. Uses the
    training labels.
    """

    uses_labels = True

    def distill(self, ctx: MethodContext) -> DistilledSet:
        if ctx.labels is None:
            raise UserError("method 'random-balanced' needs the training labels, but the "
                            "context has none")
        generator = torch.Generator().manual_seed(ctx.seed)
        perm = torch.randperm(len(ctx.images), generator=generator)
        labels = ctx.labels[perm]
        classes = labels.unique()
        turn = torch.empty(len(perm), dtype=torch.long)  # the round in which each image comes
        for position, c in enumerate(classes[torch.randperm(len(classes), generator=generator)]):
            members = (labels == c).nonzero().squeeze(1)
            turn[members] = torch.arange(len(members)) * len(classes) + position
        idx = perm[turn.argsort()[: ctx.budget]]
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist())
