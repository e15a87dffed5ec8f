"""What the coreset methods share: the teacher-representation space they select in,
k-means clusters of it, and a budget split in proportion to group sizes."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from mkdt_bench.errors import UserError


def feature_space(targets: Tensor, normalize: bool) -> Tensor:
    """The teacher representations as float32, L2-normalised per row if ``normalize``."""
    features = targets.detach().float().cpu()
    return F.normalize(features, dim=1) if normalize else features


def kmeans(features: Tensor, k: int, seed: int, minibatch: bool = False,
           max_iter: int = 300) -> tuple[Tensor, Tensor]:
    """scikit-learn k-means (k-means++ initialisation, one run, seeded) of ``features``;
    returns each row's cluster (``N``, long) and the centroids (``k x D``).

    ``minibatch`` uses ``MiniBatchKMeans`` (batches of 1,024), for large N x k.
    """
    if not 1 <= k <= len(features):
        raise UserError(f"k-means needs 1 <= clusters <= {len(features)} images, got {k}")
    x = features.numpy().astype(np.float32, copy=False)
    if minibatch:
        model = MiniBatchKMeans(n_clusters=k, batch_size=1024, max_iter=max_iter, n_init=1,
                                random_state=seed)
    else:
        model = KMeans(n_clusters=k, max_iter=max_iter, n_init=1, random_state=seed)
    with warnings.catch_warnings():  # duplicate points may leave fewer distinct clusters
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(x)
    return torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(model.cluster_centers_)


def proportional_counts(sizes: Tensor, budget: int) -> Tensor:
    """Split ``budget`` over groups in proportion to ``sizes`` (largest remainder: each
    group gets floor(budget·size/total), one more for the largest remainders; ties go to
    the larger group, then the lower index). No group gets more than its size."""
    sizes = sizes.long()
    total = int(sizes.sum())
    if not 0 <= budget <= total:
        raise UserError(f"cannot split a budget of {budget} over groups of {total} images")
    exact = sizes.double() * budget / total
    counts = exact.floor().long()
    remainder = exact - counts
    order = sorted(range(len(sizes)), key=lambda g: (-float(remainder[g]), -int(sizes[g]), g))
    for g in order[: budget - int(counts.sum())]:
        counts[g] += 1
    return counts
