"""``herding``: a herding coreset in the teacher's representation space.

Herding (Welling, ICML 2009; Chen, Welling & Smola, UAI 2010; the exemplar selection of
iCaRL, and a coreset row of dataset condensation's tables, Zhao et al., ICLR 2021) adds, one
image at a time, the image that keeps the mean of the chosen representations closest to the
mean of the whole pool. Deterministic and label-free; each chosen image keeps its teacher
target.
"""

from __future__ import annotations

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods._coreset import feature_space
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Opt


def herd(features: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """``k`` distinct indices chosen greedily: step t adds the unchosen row x minimising
    ||mu - (s + x) / t|| (mu: the mean of all rows, s: the sum of the chosen ones; ties: the
    lower index). Returns them and the final distance ||mu - s / k||."""
    features = features.double()
    mu = features.mean(0)
    sq_norms = features.pow(2).sum(1)
    total = torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool)
    chosen = []
    for t in range(1, k + 1):
        # ||mu - (s + x)/t||^2 minus the terms that are equal for every candidate x
        score = 2 * (features @ (total / t**2 - mu / t)) + sq_norms / t**2
        i = int(score.masked_fill(~available, float("inf")).argmin())
        chosen.append(i)
        available[i] = False
        total = total + features[i]
    return torch.tensor(chosen, dtype=torch.long), float((mu - total / k).norm())


@register_method("herding")
class Herding(Method):
    """Herding selection of ``budget`` real images, with their teacher targets; does not
    depend on the seed."""

    options = {"normalize": Opt(False, None, "herd L2-normalised representations (as iCaRL "
                                             "does) instead of the raw ones pre-training "
                                             "regresses")}
    seeded = False

    def distill(self, ctx: MethodContext) -> DistilledSet:
        features = feature_space(ctx.targets, self.config["normalize"])
        idx, gap = herd(features, ctx.budget)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist(),
                             mean_gap=gap)
