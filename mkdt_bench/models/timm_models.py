"""Any timm architecture as ``timm:<name>`` (evaluation.md B.5: architecture generalisation).

``timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)``, with
``img_size=image_size`` for models that take it (ViTs); ``num_classes=0`` makes the model
return its pooled features.
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from torch import Tensor, nn

from mkdt_bench.errors import UserError
from mkdt_bench.models.base import Encoder
from mkdt_bench.models.registry import MODELS


class TimmEncoder(Encoder):
    """A timm backbone; ``feature_dim`` is measured by a dummy forward at ``image_size``."""

    def __init__(self, name: str, *, in_channels: int, image_size: int, out_dim: int) -> None:
        super().__init__()
        common = dict(pretrained=False, num_classes=0, in_chans=in_channels)
        try:
            self.backbone: nn.Module = timm.create_model(name, img_size=image_size, **common)
        except TypeError:  # the model has no img_size argument (e.g. CNNs)
            self.backbone = timm.create_model(name, **common)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(torch.zeros(1, in_channels, image_size, image_size))
        except (RuntimeError, AssertionError, ValueError) as e:
            raise UserError(
                f"timm model {name!r} does not run on {in_channels}×{image_size}×{image_size} "
                f"inputs: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        finally:
            self.backbone.train(was_training)
        self.feature_dim = out.flatten(1).shape[1]
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(1)


@MODELS.register_prefix("timm")
def timm_model(name: str) -> Callable[..., TimmEncoder]:
    """Resolve ``timm:<name>`` to a factory; unknown timm names raise a UserError."""
    if not timm.is_model(name):
        raise UserError(
            f"unknown timm model {name!r}; list the available ones with "
            f"timm.list_models('*{name[:8]}*')"
        )

    def factory(*, in_channels: int, image_size: int, out_dim: int) -> TimmEncoder:
        return TimmEncoder(name, in_channels=in_channels, image_size=image_size, out_dim=out_dim)

    return factory
