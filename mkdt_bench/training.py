"""One optimiser step with the divergence check every training loop here needs."""

from __future__ import annotations

import torch

from mkdt_bench.errors import UserError


def checked_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, where: str,
                 advice: str) -> float:
    """Backward and step; a non-finite loss raises a one-line UserError first:
    ``"<where> diverged (loss <value>); <advice>"``.

    Returns the loss value. Nothing is updated when the loss is not finite, so the last
    snapshot of the caller stays a good one.
    """
    value = loss.item()
    if not torch.isfinite(loss):
        raise UserError(f"{where} diverged (loss {value}); {advice}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value
