"""``kcenter``: a greedy k-center coreset in the teacher's representation space.

Farthest-first traversal (Gonzalez, 1985; the coreset of Sener & Savarese, ICLR 2018, and a
coreset row of dataset condensation's tables, Zhao et al., ICLR 2021):
starting from one seeded random image, repeatedly add the image farthest from every image
chosen so far, which covers the pool within twice the optimal radius. Distances are between
teacher representations; no labels. Each chosen image keeps its teacher target.
"""

from __future__ import annotations

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods._coreset import feature_space
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Opt


def k_center_greedy(features: torch.Tensor, k: int, first: int) -> tuple[torch.Tensor, float]:
    """``k`` indices by farthest-first traversal from ``first`` (ties: the lower index) and
    the covering radius: the largest distance from any row to its nearest chosen row."""
    features = features.double()
    sq_norms = features.pow(2).sum(1)

    def squared_distances(i: int) -> torch.Tensor:  # ||x - x_i||² for every row x
        return (sq_norms - 2 * (features @ features[i]) + sq_norms[i]).clamp_min(0)

    nearest = squared_distances(first)
    chosen = [first]
    for _ in range(k - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, squared_distances(i))
    return torch.tensor(chosen, dtype=torch.long), float(nearest.max().sqrt())


@register_method("kcenter")
class KCenterGreedy(Method):
    """Greedy k-center selection of ``budget`` real images, with their teacher targets; the
    first image is drawn uniformly from the run seed."""

    options = {"normalize": Opt(False, None, "distances between L2-normalised representations "
                                             "instead of the raw ones pre-training regresses")}

    def distill(self, ctx: MethodContext) -> DistilledSet:
        features = feature_space(ctx.targets, self.config["normalize"])
        generator = torch.Generator().manual_seed(ctx.seed)
        first = int(torch.randint(len(features), (1,), generator=generator))
        idx, radius = k_center_greedy(features, ctx.budget, first)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist(),
                             radius=radius)
