"""ResNet-10/18 with a small-image stem (evaluation.md A.7, B.5; mkdt.md §1; krrst.md §1).

torchvision's ``ResNet`` with ``conv1`` a 3×3 stride-1 conv (``stem_padding`` 1, or 2 as in
the KRR-ST / MKDT Barlow-Twins teacher), no max-pool and no ``fc``. It is stored as
``self.backbone`` so that ``backbone.state_dict()`` has torchvision's key names.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from mkdt_bench.errors import UserError
from mkdt_bench.models.base import Encoder
from mkdt_bench.models.registry import MODELS

NORMS = ("batchnorm", "groupnorm", "instancenorm")


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels, channels)  # instance norm with affine, as [O]


class ResNetEncoder(Encoder):
    """BasicBlock ResNet; ``features`` is the 512-d global-average-pooled output.

    ``norm`` is ``batchnorm`` (as [J]) or ``groupnorm``/``instancenorm`` (GroupNorm with one
    group per channel, as [O]). ``image_size`` is accepted for the common signature; the
    pooled feature size does not depend on it.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        out_dim: int,
        layers: list[int],
        norm: str = "batchnorm",
        stem_padding: int = 1,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise UserError(f"unknown ResNet norm {norm!r}; known: {', '.join(NORMS)}")
        norm_layer = nn.BatchNorm2d if norm == "batchnorm" else _group_norm
        self.backbone = ResNet(
            BasicBlock, layers, norm_layer=norm_layer, zero_init_residual=zero_init_residual
        )
        self.backbone.conv1 = nn.Conv2d(
            in_channels, 64, kernel_size=3, stride=1, padding=stem_padding, bias=False
        )
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        self.description = (
            f"resnet{2 * sum(layers) + 2} (BasicBlock {layers}, {in_channels}-channel 3×3 stem "
            f"padding {stem_padding}, {norm})"
        )
        self.feature_dim = 512
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def load_backbone_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a plain torchvision ResNet state dict (``fc.*`` dropped), strict otherwise."""
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        own = self.backbone.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        wrong = [
            f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
            for k, v in own.items()
            if k in sd and sd[k].shape != v.shape
        ]
        problems = [
            f"{len(keys)} {label}: {', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", wrong),
            )
            if keys
        ]
        if problems:
            raise UserError(f"state dict does not fit {self.description}: {'; '.join(problems)}")
        self.backbone.load_state_dict(sd, strict=True)


@MODELS.register("resnet10")
def resnet10(
    *,
    in_channels: int,
    image_size: int,
    out_dim: int,
    norm: str = "batchnorm",
    stem_padding: int = 1,
    zero_init_residual: bool = False,
) -> ResNetEncoder:
    """ResNet-10: BasicBlock [1, 1, 1, 1] (evaluation.md A.7, B.5)."""
    return ResNetEncoder(
        in_channels=in_channels,
        image_size=image_size,
        out_dim=out_dim,
        layers=[1, 1, 1, 1],
        norm=norm,
        stem_padding=stem_padding,
        zero_init_residual=zero_init_residual,
    )


@MODELS.register("resnet18")
def resnet18(
    *,
    in_channels: int,
    image_size: int,
    out_dim: int,
    norm: str = "batchnorm",
    stem_padding: int = 1,
    zero_init_residual: bool = False,
) -> ResNetEncoder:
    """ResNet-18: BasicBlock [2, 2, 2, 2] (evaluation.md A.7)."""
    return ResNetEncoder(
        in_channels=in_channels,
        image_size=image_size,
        out_dim=out_dim,
        layers=[2, 2, 2, 2],
        norm=norm,
        stem_padding=stem_padding,
        zero_init_residual=zero_init_residual,
    )


@MODELS.register("resnet18-teacher")
def resnet18_teacher(*, in_channels: int, image_size: int, out_dim: int) -> ResNetEncoder:
    """The KRR-ST Barlow-Twins teacher layout: resnet18, BatchNorm, stem padding 2 (mkdt.md §1)."""
    return ResNetEncoder(
        in_channels=in_channels,
        image_size=image_size,
        out_dim=out_dim,
        layers=[2, 2, 2, 2],
        stem_padding=2,
    )
