"""What ``make_fixtures.py`` (runs the official code) and ``tests/test_conformance.py`` (runs
this harness) must compute identically: the fixture location, the image normalisation, the
generated network weights and the error measure.

Large inputs are not stored but regenerated from a seed with numpy's PCG64 generator (whose
streams numpy keeps stable); the fixture JSON holds a sha256 of each, so a drift would fail
loudly instead of comparing different inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SETTINGS_FILE = "fixtures.json"

#: MKDT's CIFAR-10 normalisation (``utils.get_dataset``, mkdt.md §1), used for every MKDT stage.
MKDT_MEAN = (0.4914, 0.4822, 0.4465)
MKDT_STD = (0.2023, 0.1994, 0.2010)
#: KRR-ST's CIFAR-100 statistics at 32 px (``data/augmentation.py``, krrst.md §1).
KRRST_MEAN = (0.5071, 0.4866, 0.4409)
KRRST_STD = (0.2673, 0.2564, 0.2762)


def normalize(images_u8: Tensor, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: torch.dtype) -> Tensor:
    """``ToTensor`` then ``Normalize`` (torchvision's arithmetic) in ``dtype``."""
    m = torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, -1, 1, 1)
    return (images_u8.to(dtype).div(255) - m) / s


def smooth_images(n: int, seed: int, size: int = 32) -> Tensor:
    """``n`` uint8 RGB images: random 8 x 8 colour fields upsampled bilinearly plus pixel
    noise (natural-image-like spatial correlation, no data set needed)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 8, 8)))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                           align_corners=False)
    noise = torch.from_numpy(rng.normal(0, 12, (n, 3, size, size)))
    return (fine + noise).round().clamp(0, 255).to(torch.uint8)


def generated_state(template: Mapping[str, Tensor], seed: int) -> OrderedDict[str, Tensor]:
    """Weights shaped like ``template`` (a state dict, in its key order), drawn from
    ``seed``: conv / linear weights N(0, 2 / fan_in) (He), biases N(0, 0.1²), norm weights
    1 + N(0, 0.1²), norm biases and running means N(0, 0.1²), running variances
    U(0.5, 1.5); float32 values, integer buffers copied. Classification of a key is by
    its name and rank, so any torchvision / DC-style network works."""
    rng = np.random.default_rng(seed)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, like in template.items():
        shape = tuple(like.shape)
        if not like.is_floating_point():
            out[key] = like.clone()
            continue
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_mean") or (key.endswith("bias") and len(shape) == 1):
            value = rng.normal(0, 0.1, shape)
        elif key.endswith("weight") and len(shape) == 1:  # a norm layer's scale
            value = 1 + rng.normal(0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0, np.sqrt(2 / fan_in), shape)
        out[key] = torch.from_numpy(value.astype(np.float32))
    return out


def linear_teacher_weight(seed: int, dim: int, inputs: int = 3 * 32 * 32) -> Tensor:
    """The ``dim x inputs`` weight of the linear stand-in teacher of the KRR-ST fixtures
    (N(0, 1 / inputs), float32 values)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(0, 1 / np.sqrt(inputs), (dim, inputs)).astype(np.float32))


def resnet18_krrst_template() -> OrderedDict[str, Tensor]:
    """The state dict layout of KRR-ST's teacher checkpoints: torchvision ``resnet18`` with a
    3 x 3 stride-1 padding-2 ``conv1``, no ``fc`` (krrst.md §1, ``train.py`` L39-44)."""
    from torchvision.models import resnet18

    model = resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    model.fc = torch.nn.Identity()
    return OrderedDict(model.state_dict())


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """sha256 over the keys and the raw bytes of the tensors, in order."""
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected|: the error relative to the tensor's scale
    (0 for bit-identical tensors)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale else diff


def load_settings() -> dict[str, Any]:
    return json.loads((FIXTURES / SETTINGS_FILE).read_text())


def load(name: str) -> dict[str, Any]:
    return torch.load(FIXTURES / name, weights_only=True)
