"""``kmeans``: a k-means coreset in the teacher's representation space.

The k-means row of dataset-distillation tables (DC-BENCH, Cui et al., NeurIPS 2022 Datasets
and Benchmarks; KRR-ST's Table 1) clusters each class's images and keeps the real image
nearest each centroid. Without labels (the SSL setting) the clustering runs once over the
whole training pool, in the teacher's representation space, with ``budget`` clusters; each
chosen image keeps its teacher target, as in ``random``.
"""

from __future__ import annotations

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods._coreset import feature_space, kmeans
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Interval, Opt


def nearest_distinct(centroids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """For each centroid in turn, the index of the nearest row of ``features`` not yet
    taken by an earlier centroid (Euclidean; ties: the lower index)."""
    distances = torch.cdist(centroids.to(features.dtype), features)
    taken = torch.zeros(len(features), dtype=torch.bool)
    chosen = []
    for row in distances:
        i = int(row.masked_fill(taken, float("inf")).argmin())
        taken[i] = True
        chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


@register_method("kmeans")
class KMeansCoreset(Method):
    """The real image nearest each of ``budget`` k-means centroids of the teacher
    representations, with its teacher target.

    The k-means++ initialisation is seeded by the run seed.
    """

    options = {
        "normalize": Opt(False, None, "cluster L2-normalised representations (cosine "
                                      "geometry) instead of the raw ones pre-training regresses"),
        "minibatch": Opt(False, None, "scikit-learn's MiniBatchKMeans instead of KMeans "
                                      "(Lloyd), for paper-scale pools"),
        "max_iter": Opt(300, Interval(int, 1, None), "k-means iterations (scikit-learn's "
                                                     "default)"),
    }
    test_options = {"max_iter": 20}

    def distill(self, ctx: MethodContext) -> DistilledSet:
        cfg = self.config
        features = feature_space(ctx.targets, cfg["normalize"])
        clusters, centroids = kmeans(features, ctx.budget, ctx.seed, cfg["minibatch"],
                                     cfg["max_iter"])
        idx = nearest_distinct(centroids, features)
        sizes = torch.bincount(clusters, minlength=ctx.budget)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist(),
                             cluster_sizes=sizes.tolist())
