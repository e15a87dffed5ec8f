"""``random-ssl``: the ``random`` subset pre-trained with the SSL objective itself.

The row that asks whether distillation beats plain self-supervised learning on the same
images: the same uniformly random real images as ``random`` (same seed, same indices), but
no teacher targets. The set carries an SSL recipe instead (``DistilledSet.ssl_recipe``), and
pre-training trains the encoder with lightly's loss and projection head on two augmented
views of each image (``pretraining.py``), under the grid's ``[pretrain]`` optimiser,
epochs and batch size, so that it takes as many steps as a target set of its size.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods import register_method
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.teachers.ssl import TEACHER_BOUNDS, TEACHER_CHOICES, TEACHER_DEFAULTS

#: The SSL recipe: the ``[teacher]`` keys of the loss, projection head and views.
RECIPE_KEYS = ("ssl", "proj_dim", "bt_lambda", "temperature", "min_scale", "cj_strength",
               "gaussian_blur", "hf_prob")


@register_method("random-ssl")
class RandomSubsetSSL(Method):
    """Uniformly random real images (the ``random`` subset of the seed) without targets,
    to be pre-trained with an SSL objective.

    Options (the SSL recipe, each defaulting to the grid's ``[teacher]`` value of the same
    name, so the encoder learns with the teacher's own objective and views): ``ssl``
    (barlow_twins or simclr), ``proj_dim``, ``bt_lambda``, ``temperature``, ``min_scale``,
    ``cj_strength``, ``gaussian_blur``, ``hf_prob`` (see ``teacher.TEACHER_DEFAULTS``).
    """

    defaults = {key: TEACHER_DEFAULTS[key] for key in RECIPE_KEYS}
    choices = {"ssl": TEACHER_CHOICES["ssl"]}
    bounds = {key: TEACHER_BOUNDS[key] for key in RECIPE_KEYS if key in TEACHER_BOUNDS}
    teacher_options = frozenset(RECIPE_KEYS)

    def distill(self, ctx: MethodContext) -> DistilledSet:
        generator = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        no_targets = ctx.targets[idx][:, :0]
        return replace(self.make_set(ctx, ctx.images[idx], no_targets, indices=idx.tolist()),
                       ssl_recipe=dict(self.config))
