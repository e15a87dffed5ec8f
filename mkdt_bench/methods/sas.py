"""``sas``: the SAS subset for contrastive SSL (Joshi & Mirzasoleiman, ICML 2023), the
"SAS subset + KD" row of MKDT's tables. Spec and deviations: ``docs/sas.md``.

Approximate latent classes are k-means clusters of the teacher's representations (the
label-free option of SAS, with the teacher as its proxy encoder). Within each class, images
are chosen greedily by a submodular gain: the summed (thresholded) cosine similarity of an
image to its class, minus its similarity to the images already chosen (``docs/sas.md`` §3);
the budget is split over the classes in proportion to their sizes (§4). Each chosen image
keeps its teacher target, as in ``random``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods._coreset import kmeans, proportional_counts
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Interval, Opt

#: Rows of the similarity matrix computed at once for the class sums (memory only).
BLOCK = 1024


def similarities(unit: Tensor, rows: Tensor, threshold: float) -> Tensor:
    """s(i, j) for i in ``rows`` and every j: the cosine similarity of the L2-normalised
    ``unit`` rows, 0 where it is below ``threshold`` (``docs/sas.md`` §2)."""
    sim = unit[rows] @ unit.T
    return sim.masked_fill(sim < threshold, 0.0)


def class_similarity(unit: Tensor, threshold: float) -> Tensor:
    """a(i) = sum over j of s(i, j) for every row of one latent class (diagonal included)."""
    return torch.cat([similarities(unit, rows, threshold).sum(1)
                      for rows in torch.arange(len(unit)).split(BLOCK)])


def greedy_in_class(unit: Tensor, count: int, threshold: float) -> Tensor:
    """``count`` positions chosen greedily by gain(i | S) = a(i) - sum over k in S of
    s(k, i) (``docs/sas.md`` §3; ties: the lower index)."""
    gains = class_similarity(unit, threshold)
    available = torch.ones(len(unit), dtype=torch.bool)
    chosen = []
    for _ in range(count):
        i = int(gains.masked_fill(~available, float("-inf")).argmax())
        chosen.append(i)
        available[i] = False
        gains -= similarities(unit, torch.tensor([i]), threshold)[0]
    return torch.tensor(chosen, dtype=torch.long)


def reference_in_class(unit: Tensor, count: int, threshold: float) -> Tensor:
    """The reference code's effective choice (``docs/sas.md`` §5): the ``count`` largest
    a(i), ties towards the larger position (its max-heap of (gain, index) pairs)."""
    descending_index = torch.arange(len(unit) - 1, -1, -1)
    totals = class_similarity(unit, threshold)[descending_index]
    order = torch.sort(totals, descending=True, stable=True).indices
    return descending_index[order][:count]


@register_method("sas")
class SAS(Method):
    """SAS subset of ``budget`` real images with their teacher targets (``docs/sas.md``).

    The k-means initialisation is seeded by the run seed; no labels are used.
    """

    options = {
        "latent_classes": Opt(10, Interval(int, 1, None),
                              "k of the k-means latent classes (SAS: the number of downstream "
                              "classes; 100 for CIFAR-100, 200 for Tiny-ImageNet)"),
        "threshold": Opt(0.0, Interval(float, 0, 1, note="negative similarities would break "
                                       "submodularity"),
                         "cosine similarities below it count as 0"),
        "reference_objective": Opt(False, None,
                                   "reproduce the reference code, whose redundancy term is "
                                   "always 0 (docs/sas.md §5)"),
    }
    test_options = {"latent_classes": 3}

    def distill(self, ctx: MethodContext) -> DistilledSet:
        cfg = self.config
        if cfg["latent_classes"] > len(ctx.images):
            raise UserError(f"method 'sas': latent_classes={cfg['latent_classes']} is larger "
                            f"than the {len(ctx.images)} training images; lower it")
        features = ctx.targets.detach().float().cpu()
        classes, _ = kmeans(features, cfg["latent_classes"], ctx.seed)
        sizes = torch.bincount(classes, minlength=cfg["latent_classes"])
        counts = proportional_counts(sizes, ctx.budget)
        unit = F.normalize(features.double(), dim=1)
        select = reference_in_class if cfg["reference_objective"] else greedy_in_class
        chosen = []
        for c, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            members = (classes == c).nonzero().squeeze(1)
            chosen.append(members[select(unit[members], count, cfg["threshold"])])
        idx = torch.cat(chosen)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist(),
                             latent_class=classes[idx].tolist(), class_sizes=sizes.tolist(),
                             class_counts=counts.tolist())
