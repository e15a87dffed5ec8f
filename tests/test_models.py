"""Tests for mkdt_bench.models: shapes, spec parameter counts, functional double backward."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.func import functional_call

from mkdt_bench.errors import UserError
from mkdt_bench.models import MODELS, Encoder, create_model, list_models

VIT = "timm:vit_tiny_patch16_224"

# (model name, image size, expected feature_dim)
SHAPE_CASES = [
    ("convnet", 8, 128),
    ("convnet", 32, 2048),
    ("convnet", 64, 2048),
    ("convnet-d3", 8, 128),
    ("convnet-d3", 32, 2048),
    ("convnet-d4", 32, 512),
    ("convnet-d4", 64, 2048),
    ("resnet10", 8, 512),
    ("resnet10", 32, 512),
    ("resnet18", 8, 512),
    ("resnet18", 32, 512),
    ("resnet18-teacher", 8, 512),
    ("resnet18-teacher", 32, 512),
    ("timm:resnet18", 8, 512),
    ("timm:resnet18", 32, 512),
    (VIT, 32, 192),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models() -> None:
    builtins = {"convnet", "convnet-d3", "convnet-d4", "resnet10", "resnet18", "resnet18-teacher"}
    assert builtins <= set(list_models())
    assert "timm:resnet18" in MODELS


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(("name", "size", "feature_dim"), SHAPE_CASES)
def test_shapes(name: str, size: int, feature_dim: int, in_channels: int) -> None:
    model = create_model(name, in_channels=in_channels, image_size=size, out_dim=7)
    assert isinstance(model, Encoder)
    assert model.feature_dim == feature_dim
    x = torch.randn(2, in_channels, size, size)
    assert model.features(x).shape == (2, feature_dim)
    assert model(x).shape == (2, 7)


def test_spec_parameter_counts() -> None:
    """mkdt.md §2: ConvNet-D3 at 32 px and ConvNet-D4 at 64 px with a 512-d head."""
    d3 = create_model("convnet-d3", in_channels=3, image_size=32, out_dim=512)
    d4 = create_model("convnet-d4", in_channels=3, image_size=64, out_dim=512)
    assert n_params(d3) == 1_348_608
    assert n_params(d4) == 1_496_448
    default = create_model("convnet", in_channels=3, image_size=32, out_dim=512)
    assert n_params(default) == 1_348_608
    assert any(isinstance(m, nn.GroupNorm) for m in d3.modules())
    assert list(d3.buffers()) == []


def test_convnet_options() -> None:
    bn = create_model("convnet", in_channels=3, image_size=32, out_dim=4, norm="batchnorm")
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    plain = create_model("convnet-d3", in_channels=3, image_size=32, out_dim=4, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    narrow = create_model("convnet", in_channels=3, image_size=64, out_dim=4, width=16, depth=2)
    assert narrow.feature_dim == 16 * 16 * 16
    with pytest.raises(UserError, match="norm 'layernorm'"):
        create_model("convnet", in_channels=3, image_size=32, out_dim=4, norm="layernorm")


def test_convnet_body_loads_across_image_sizes() -> None:
    """evaluation.md A.2: the probe rebuilds at the test size and loads conv/norm weights."""
    small = create_model("convnet-d3", in_channels=3, image_size=32, out_dim=512)
    big = create_model("convnet-d3", in_channels=3, image_size=64, out_dim=512)
    body = {k: v for k, v in small.state_dict().items() if not k.startswith("head.")}
    result = big.load_state_dict(body, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"]
    assert big.feature_dim == 8192


def test_convnet_functional_double_backward() -> None:
    """One unrolled SGD step through functional_call, backpropagated to the input (mkdt.md §4)."""
    torch.manual_seed(0)
    model = create_model("convnet-d3", in_channels=3, image_size=32, out_dim=8)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    y = torch.randn(4, 8)
    loss = nn.functional.mse_loss(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    stepped = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    outer = sum(((stepped[k] - params[k].detach()) ** 2).sum() for k in params)
    outer = outer + nn.functional.mse_loss(functional_call(model, stepped, (x,)), y)
    outer.backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def _teacher_like_torchvision_state_dict() -> dict[str, torch.Tensor]:
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    return net.state_dict()  # still holds fc.*: load_backbone_state_dict drops it


def test_load_backbone_state_dict_accepts_krrst_layout() -> None:
    sd = _teacher_like_torchvision_state_dict()
    teacher = create_model("resnet18-teacher", in_channels=3, image_size=32, out_dim=512)
    teacher.load_backbone_state_dict(sd)
    assert torch.equal(teacher.backbone.conv1.weight, sd["conv1.weight"])
    assert torch.equal(teacher.backbone.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])
    assert teacher.backbone.conv1.padding == (2, 2)
    assert set(teacher.backbone.state_dict()) == {k for k in sd if not k.startswith("fc.")}


def test_load_backbone_state_dict_rejects_resnet50() -> None:
    teacher = create_model("resnet18-teacher", in_channels=3, image_size=32, out_dim=512)
    with pytest.raises(UserError, match="resnet18") as info:
        teacher.load_backbone_state_dict(torchvision.models.resnet50().state_dict())
    message = str(info.value)
    assert "\n" not in message
    assert "unexpected" in message and "shape mismatch" in message


def test_resnet_norm_options() -> None:
    gn = create_model("resnet10", in_channels=3, image_size=32, out_dim=4, norm="groupnorm")
    assert any(isinstance(m, nn.GroupNorm) for m in gn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    with pytest.raises(UserError, match="norm 'layernorm'"):
        create_model("resnet18", in_channels=3, image_size=32, out_dim=4, norm="layernorm")


def test_unknown_model_lists_known() -> None:
    with pytest.raises(UserError, match="unknown model 'convnet-d9'.*convnet-d3.*resnet18"):
        create_model("convnet-d9", in_channels=3, image_size=32, out_dim=4)


def test_unknown_timm_model() -> None:
    with pytest.raises(UserError, match=r"unknown timm model 'no_such_net'.*timm\.list_models"):
        create_model("timm:no_such_net", in_channels=3, image_size=32, out_dim=4)


def test_timm_model_too_small_input() -> None:
    with pytest.raises(UserError, match="does not run on 3×8×8"):
        create_model(VIT, in_channels=3, image_size=8, out_dim=4)


def test_timm_restores_train_mode() -> None:
    model = create_model("timm:resnet18", in_channels=3, image_size=32, out_dim=4)
    assert model.training and model.backbone.training


def test_unknown_kwarg() -> None:
    with pytest.raises(UserError, match="'depth'.*allowed: width, norm"):
        create_model("convnet-d3", in_channels=3, image_size=32, out_dim=4, depth=4)
    with pytest.raises(UserError, match="'stem_padding'"):
        create_model("resnet18-teacher", in_channels=3, image_size=32, out_dim=4, stem_padding=1)


def test_image_too_small_for_depth() -> None:
    with pytest.raises(UserError, match="depth 4.*image_size 8"):
        create_model("convnet-d4", in_channels=3, image_size=8, out_dim=4)
    with pytest.raises(UserError, match="depth 6.*image_size 32"):
        create_model("convnet", in_channels=3, image_size=32, out_dim=4, depth=6)


def test_convnet_options_prefix():
    m = create_model("convnet:width=16,norm=batchnorm,depth=2", in_channels=3, image_size=32,
                     out_dim=5)
    assert m.feature_dim == 16 * 8 * 8 and isinstance(m.body[1], torch.nn.BatchNorm2d)
    assert create_model("convnet:", in_channels=3, image_size=32, out_dim=5).feature_dim == 2048
    with pytest.raises(UserError, match=r"bad ConvNet option 'size=3'.*width, widths, depth, "
                                        "norm"):
        create_model("convnet:size=3", in_channels=3, image_size=32, out_dim=5)
    with pytest.raises(UserError, match=r"width='wide' must be an integer"):
        create_model("convnet:width=wide", in_channels=3, image_size=32, out_dim=5)
    with pytest.raises(UserError, match="unknown ConvNet norm 'layer'"):
        create_model("convnet:norm=layer", in_channels=3, image_size=32, out_dim=5)


def test_convnet_per_block_widths_build_krrst_networks():
    """KRR-ST's pool / evaluation nets (krrst.md §7): ``convnet_128_256_512_bn`` at 32 px
    (CIFAR-100: 8,192 features, 5.68 M parameters with the 512-d head) and
    ``convnet_64_128_256_512_bn`` at 64 px (Tiny-ImageNet: 8,192, 5.75 M)."""
    cifar = create_model("convnet:widths=128-256-512,norm=batchnorm", in_channels=3,
                         image_size=32, out_dim=512)
    tiny = create_model("convnet:widths=64-128-256-512,norm=batchnorm", in_channels=3,
                        image_size=64, out_dim=512)
    assert (cifar.feature_dim, n_params(cifar)) == (8192, 5_675_520)
    assert (tiny.feature_dim, n_params(tiny)) == (8192, 5_747_712)
    convs = [m for m in cifar.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]
    assert all(isinstance(m, nn.BatchNorm2d) for m in cifar.body if "Norm" in type(m).__name__)
    assert cifar.features(torch.randn(2, 3, 32, 32)).shape == (2, 8192)
    direct = create_model("convnet", in_channels=3, image_size=32, out_dim=512,
                          widths=[128, 256, 512], norm="batchnorm")
    assert n_params(direct) == 5_675_520


def test_convnet_widths_errors():
    with pytest.raises(UserError, match="depth=3 does not match widths=8-8"):
        create_model("convnet:widths=8-8,depth=3", in_channels=3, image_size=32, out_dim=5)
    with pytest.raises(UserError, match="widths '8-x' must be positive integers"):
        create_model("convnet:widths=8-x", in_channels=3, image_size=32, out_dim=5)
    with pytest.raises(UserError, match="widths '8-0' must be positive integers"):
        create_model("convnet:widths=8-0", in_channels=3, image_size=32, out_dim=5)
    with pytest.raises(UserError, match="depth 6 does not fit image_size 32"):
        create_model("convnet:widths=1-1-1-1-1-1", in_channels=3, image_size=32, out_dim=5)
