"""Reference-style MTT inner loop, the baseline the engine's speed is compared with.

Written from the description of the original MTT code (a ``ReparamModule``): the module's
parameters are removed and, for every forward, replaced by views of one flat parameter
vector; each inner step calls ``torch.autograd.grad(loss, theta, create_graph=True)``, the
parameter vectors of all steps are kept in a list, and one ``backward`` of the matching
loss at the end walks the whole graph (spec ``mkdt.md`` §4).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReparamNet:
    """``module`` as a function of a flat parameter vector, by swapping in views of it."""

    def __init__(self, module: nn.Module) -> None:
        self.module = copy.deepcopy(module)
        self.slots: list[tuple[nn.Module, str, torch.Size]] = []
        for sub in self.module.modules():
            for name, param in list(sub.named_parameters(recurse=False)):
                self.slots.append((sub, name, param.shape))
                del sub._parameters[name]
        self.numels = [shape.numel() for _, _, shape in self.slots]

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        for (sub, name, shape), view in zip(self.slots, flat.split(self.numels)):
            setattr(sub, name, view.view(shape))
        return self.module(x)


def baseline_loss(net: ReparamNet, start: Tensor, target: Tensor, images: Tensor,
                  targets: Tensor, lr: Tensor, batches: Sequence[Tensor]) -> Tensor:
    """The matching loss of one iteration through the whole unrolled graph."""
    thetas = [start.clone().requires_grad_(True)]
    for idx in batches:
        loss = F.mse_loss(net(thetas[-1], images[idx]), targets[idx])
        grad = torch.autograd.grad(loss, thetas[-1], create_graph=True)[0]
        thetas.append(thetas[-1] - lr * grad)
    return (thetas[-1] - target).pow(2).sum() / (start - target).pow(2).sum()
