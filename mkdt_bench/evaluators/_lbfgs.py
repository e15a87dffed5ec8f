"""The full-batch L-BFGS fit of a linear classifier shared by ``linear`` and ``linear-val``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fit_linear_lbfgs(x: Tensor, y: Tensor, num_classes: int, l2: float, steps: int, seed: int,
                     lr: float = 1.0, max_iter: int = 20) -> nn.Linear:
    """``nn.Linear`` fitted as in ``docs/protocol.md`` A.2.

    ``torch.manual_seed(seed)`` before building the layer (in ``x``'s dtype), then ``steps``
    L-BFGS ``.step`` calls (``lr``, ``max_iter`` inner iterations, no line search) on the
    full-batch loss cross-entropy + ``l2``·‖W‖² (bias not penalised). The reference
    (``linear_evaluation.py`` ``le_run``) draws the layer after building a throw-away
    network from the same seed, so its initial weights differ (a documented deviation).
    """
    torch.manual_seed(seed)
    clf = nn.Linear(x.shape[1], num_classes, dtype=x.dtype)
    opt = torch.optim.LBFGS(clf.parameters(), lr=lr, max_iter=max_iter)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return clf


@torch.no_grad()
def accuracy(clf: nn.Linear, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of ``clf`` on ``(x, y)`` in percent."""
    return (clf(x).argmax(1) == y).float().mean().item() * 100
