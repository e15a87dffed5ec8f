"""The DC/MTT ConvNet student (mkdt.md §2; krrst.md §7 for the BatchNorm variant).

``depth`` blocks of [3×3 conv (padding 1) → norm → ReLU → 2×2 AvgPool], all ``width``
channels wide (or block i ``widths[i]`` wide: KRR-ST's ``convnet_128_256_512_bn`` is
``widths=(128, 256, 512), norm="batchnorm"``, krrst.md §7), then a flatten and a linear
head. Parameter names (``body.*``) do not depend
on the image size, so a probe can rebuild the encoder at another size and load them with
``strict=False``; only ``head`` does. Activations are never modified in place, and the
default instance norm has no buffers, so the net works under ``torch.func.functional_call``
with double backward (trajectory matching, mkdt.md §4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from mkdt_bench.errors import UserError
from mkdt_bench.models.base import Encoder
from mkdt_bench.models.registry import MODELS

NORMS = ("instancenorm", "batchnorm", "none")


def default_depth(image_size: int) -> int:
    """3 blocks up to 32 px (CIFAR; 8 px digits go 8→4→2→1), 4 above (Tiny, 64 px)."""
    return 3 if image_size <= 32 else 4


def _norm(norm: str, width: int) -> list[nn.Module]:
    if norm == "instancenorm":  # the reference's "instancenorm" (mkdt.md §2)
        return [nn.GroupNorm(width, width, affine=True)]
    if norm == "batchnorm":
        return [nn.BatchNorm2d(width, affine=True)]
    if norm == "none":
        return []
    raise UserError(f"unknown ConvNet norm {norm!r}; known: {', '.join(NORMS)}")


def block_widths(width: int, depth: int | None, widths: Sequence[int] | None,
                 image_size: int) -> list[int]:
    """The channel width of each block: ``widths`` if given (``depth``, if also given, must
    be its length; ``width`` is then unused), else ``width`` repeated ``depth`` (or
    :func:`default_depth`) times."""
    if depth is not None and depth < 1:
        raise UserError(f"ConvNet depth must be at least 1, got {depth}")
    if widths is None:
        return [width] * (default_depth(image_size) if depth is None else depth)
    widths = list(widths)
    if depth is not None and depth != len(widths):
        raise UserError(f"ConvNet depth={depth} does not match widths={format_widths(widths)} "
                        f"({len(widths)} blocks); give one of them")
    if not all(isinstance(w, int) and w >= 1 for w in widths):
        raise UserError(f"ConvNet widths={widths!r} must be positive integers, one per block")
    return widths


def format_widths(widths: Sequence[int]) -> str:
    """``[128, 256, 512]`` -> ``"128-256-512"`` (the ``convnet:widths=`` syntax)."""
    return "-".join(str(w) for w in widths)


def parse_widths(text: str) -> list[int]:
    """``"128-256-512"`` -> ``[128, 256, 512]``; a UserError names a malformed value."""
    try:
        widths = [int(part) for part in text.split("-")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise UserError(f"ConvNet widths {text!r} must be positive integers joined by '-', "
                        "one per block, e.g. 128-256-512")
    return widths


@MODELS.register("convnet")
class ConvNet(Encoder):
    """DC/MTT ConvNet; ``depth=None`` picks :func:`default_depth` from ``image_size``;
    ``widths`` gives each block its own width (and the depth)."""

    def __init__(
        self,
        *,
        in_channels: int,
        image_size: int,
        out_dim: int,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = block_widths(width, depth, widths, image_size)
        depth = len(widths)
        side = image_size // 2**depth
        if side == 0:
            raise UserError(
                f"ConvNet depth {depth} does not fit image_size {image_size}: each block "
                f"halves the side, so depth {depth} needs at least {2**depth} px"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for out in widths:
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), *_norm(norm, out)]
            layers += [nn.ReLU(), nn.AvgPool2d(kernel_size=2, stride=2)]
            channels = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = channels * side * side
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: Tensor) -> Tensor:
        """The flattened conv output (last width · (image_size / 2^depth)²)."""
        return self.body(x)


@MODELS.register("convnet-d3")
def convnet_d3(
    *, in_channels: int, image_size: int, out_dim: int, width: int = 128, norm: str = "instancenorm"
) -> ConvNet:
    """ConvNet with 3 blocks (the CIFAR student, mkdt.md §2)."""
    return ConvNet(
        in_channels=in_channels,
        image_size=image_size,
        out_dim=out_dim,
        width=width,
        depth=3,
        norm=norm,
    )


@MODELS.register("convnet-d4")
def convnet_d4(
    *, in_channels: int, image_size: int, out_dim: int, width: int = 128, norm: str = "instancenorm"
) -> ConvNet:
    """ConvNet with 4 blocks (the Tiny-ImageNet student ``ConvNetD4``, mkdt.md §2)."""
    return ConvNet(
        in_channels=in_channels,
        image_size=image_size,
        out_dim=out_dim,
        width=width,
        depth=4,
        norm=norm,
    )


_OPTIONS: dict[str, Callable[[str], object]] = {"width": int, "depth": int, "norm": str,
                                                "widths": parse_widths}


@MODELS.register_prefix("convnet")
def convnet_options(argument: str) -> Callable[..., ConvNet]:
    """``convnet:width=32,depth=3,norm=batchnorm`` or ``convnet:widths=128-256-512,
    norm=batchnorm``: a ConvNet with those options (any subset)."""
    options: dict[str, object] = {}
    for item in filter(None, argument.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _OPTIONS:
            raise UserError(f"bad ConvNet option {item!r} in 'convnet:{argument}'; use "
                            "key=value with key in width, widths, depth, norm")
        try:
            options[key] = _OPTIONS[key](value)
        except ValueError:
            raise UserError(f"ConvNet option {key}={value!r} must be an integer") from None

    def factory(*, in_channels: int, image_size: int, out_dim: int) -> ConvNet:
        return ConvNet(in_channels=in_channels, image_size=image_size, out_dim=out_dim,
                       **options)  # type: ignore[arg-type]

    return factory
