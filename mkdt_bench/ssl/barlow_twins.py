"""Barlow Twins (Zbontar et al. 2021): BYOL's asymmetric views, a 3-layer projector and the
cross-correlation loss with off-diagonal weight ``bt_lambda`` (spec ``mkdt.md`` §1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mkdt_bench.ssl.base import SSLRecipe, ViewTransform, view_options
from mkdt_bench.ssl.registry import SSL_RECIPES

if TYPE_CHECKING:
    from torch import nn


@SSL_RECIPES.register("barlow_twins")
class BarlowTwins(SSLRecipe):
    """lightly's ``BYOLTransform``, ``BarlowTwinsProjectionHead`` (``proj_dim`` wide) and
    ``BarlowTwinsLoss``."""

    display_name = "Barlow Twins"

    def parts(self, options: Mapping[str, Any], mean: tuple[float, ...],
              std: tuple[float, ...], size: int,
              feature_dim: int) -> tuple[ViewTransform, nn.Module, nn.Module]:
        from lightly.loss import BarlowTwinsLoss
        from lightly.models.modules import BarlowTwinsProjectionHead
        from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

        common = view_options(options, mean, std, size)
        transform = BYOLTransform(view_1_transform=BYOLView1Transform(**common),
                                  view_2_transform=BYOLView2Transform(**common))
        head = BarlowTwinsProjectionHead(feature_dim, options["proj_dim"], options["proj_dim"])
        return transform, head, BarlowTwinsLoss(lambda_param=options["bt_lambda"])
