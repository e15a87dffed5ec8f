"""``random-ssl``: the ``random`` subset pre-trained with the SSL objective itself.

The row that asks whether distillation beats plain self-supervised learning on the same
images: the same uniformly random real images as ``random`` (same seed, same indices), but
no teacher targets. The set carries an SSL recipe instead (``DistilledSet.ssl_recipe``), and
pre-training trains the encoder with lightly's loss and projection head on two augmented
views of each image (:mod:`mkdt_bench.pretraining.objectives.ssl_views`), under the grid's
``[pretrain]`` optimiser, epochs and batch size, so that it takes as many steps as a target
set of its size.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Opt
from mkdt_bench.teachers import TEACHER_BOUNDS, TEACHER_CHOICES, TEACHER_DEFAULTS

#: The SSL recipe: the ``[teacher]`` keys of the loss, projection head and views, and what
#: each is.
RECIPE_KEYS = {
    "ssl": "the SSL objective (mkdt_bench.ssl.SSL_RECIPES)",
    "proj_dim": "width of the projection head",
    "bt_lambda": "Barlow Twins' off-diagonal weight",
    "temperature": "SimCLR's NT-Xent temperature",
    "min_scale": "the smallest random crop's area share",
    "cj_strength": "colour jitter strength",
    "gaussian_blur": "probability of a Gaussian blur",
    "hf_prob": "probability of a horizontal flip",
}


@register_method("random-ssl")
class RandomSubsetSSL(Method):
    """Uniformly random real images (the ``random`` subset of the seed) without targets,
    to be pre-trained with an SSL objective.

    Options: the SSL recipe (:data:`RECIPE_KEYS`), each defaulting to the grid's
    ``[teacher]`` value of the same name, so the encoder learns with the teacher's own
    objective and views.
    """

    options = {key: Opt(TEACHER_DEFAULTS[key],
                        TEACHER_BOUNDS[key] if key in TEACHER_BOUNDS else TEACHER_CHOICES[key],
                        text)
               for key, text in RECIPE_KEYS.items()}
    teacher_options = frozenset(RECIPE_KEYS)

    def distill(self, ctx: MethodContext) -> DistilledSet:
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        no_targets = ctx.targets[idx][:, :0]
        return replace(self.make_set(ctx, ctx.images[idx], no_targets, indices=idx.tolist()),
                       ssl_recipe=dict(self.config))
