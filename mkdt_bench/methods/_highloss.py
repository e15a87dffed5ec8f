"""The high-loss initialisation of MKDT (spec ``mkdt.md`` §3): every training image scored
by its KD loss under the experts' epoch-1 snapshots (:func:`high_loss_scores`, cached), and
the top-``budget`` images (:func:`select_high_loss`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.device import resident, to_device
from mkdt_bench.methods._experts import (
    build_student,
    ensure_experts,
    expert_inputs,
    load_trajectories,
)
from mkdt_bench.methods._unroll import FlatNet
from mkdt_bench.methods.base import MethodContext
from mkdt_bench.safeload import corrupt_artifact, load_artifact

#: The snapshot the high-loss initialisation scores with: after epoch 1 (§3; bug 12).
SCORE_EPOCH = 1


@torch.no_grad()
def kd_losses(net: FlatNet, theta: Tensor, images: Tensor, targets: Tensor,
              device: torch.device, batch: int = 512) -> Tensor:
    """Per-image KD loss (1/D)‖g_θ(xᵢ) − yᵢ‖² of every image, on the CPU (read back once)."""
    theta = to_device(theta, device).to(net.dtype)
    out = [(net(theta, to_device(images[i:i + batch], device))
            - to_device(targets[i:i + batch], device)).pow(2).mean(1)
           for i in range(0, len(images), batch)]
    return torch.cat(out).cpu()


def high_loss_scores(ctx: MethodContext, cfg: dict[str, Any],
                     trajectories: Sequence[Tensor]) -> Tensor:
    """sᵢ = (1/K) Σₖ (1/D)‖g_{θ₁ᵏ}(xᵢ) − yᵢ‖² for every training image (§3); cached."""
    key = ctx.cache.key("expert-scores", {**cfg, "epoch": SCORE_EPOCH}, expert_inputs(ctx))

    def produce(tmp: Path) -> dict[str, Any]:
        model = build_student(cfg, ctx.images, int(ctx.targets.shape[1]), 0).to(ctx.device)
        net = FlatNet(model)
        images, targets = resident(ctx.images, ctx.device), resident(ctx.targets, ctx.device)
        total = torch.zeros(len(ctx.images), dtype=torch.float64)
        for trajectory in trajectories:
            total += kd_losses(net, trajectory[SCORE_EPOCH], images, targets,
                               ctx.device).double()
        torch.save((total / len(trajectories)).float(), tmp / "scores.pt")
        return {"epoch": SCORE_EPOCH, "experts": len(trajectories)}

    path = ctx.cache.get_or_create("expert-scores", key, produce,
                                   config={**cfg, "epoch": SCORE_EPOCH}, inputs=expert_inputs(ctx))
    scores = load_artifact(path / "scores.pt")
    if not (isinstance(scores, Tensor) and scores.is_floating_point()
            and scores.shape == (len(ctx.images),)):
        raise corrupt_artifact(path / "scores.pt",
                               f"not one score for each of the {len(ctx.images)} images")
    return scores


def high_loss_indices(scores: Tensor, budget: int) -> Tensor:
    """The ``budget`` highest-scoring indices, highest first (ties: lower index first)."""
    return torch.sort(scores, descending=True, stable=True).indices[:budget]


def select_high_loss(ctx: MethodContext, cfg: dict[str, Any]) -> Tensor:
    """The §3 high-loss subset of ``ctx.budget`` images (experts trained if missing)."""
    trajectories = load_trajectories(ensure_experts(ctx, cfg))
    return high_loss_indices(high_loss_scores(ctx, cfg, trajectories), ctx.budget)
