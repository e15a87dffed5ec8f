"""SimCLR (Chen et al. 2020): two views of one transform, a 2-layer projector to 128 and the
NT-Xent loss at ``temperature``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mkdt_bench.ssl.base import SSLRecipe, ViewTransform, view_options
from mkdt_bench.ssl.registry import SSL_RECIPES

if TYPE_CHECKING:
    from torch import nn


@SSL_RECIPES.register("simclr")
class SimCLR(SSLRecipe):
    """lightly's ``SimCLRTransform``, ``SimCLRProjectionHead`` (``proj_dim`` hidden, 128 out)
    and ``NTXentLoss``."""

    display_name = "SimCLR"

    def parts(self, options: Mapping[str, Any], mean: tuple[float, ...],
              std: tuple[float, ...], size: int,
              feature_dim: int) -> tuple[ViewTransform, nn.Module, nn.Module]:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        transform = SimCLRTransform(**view_options(options, mean, std, size))
        head = SimCLRProjectionHead(feature_dim, options["proj_dim"], 128)
        return transform, head, NTXentLoss(temperature=options["temperature"])
