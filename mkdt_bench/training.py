"""The divergence checks of the training loops here: one optimiser step checked on the spot
(:func:`checked_step`), or per-step values read in one go later (:class:`StepRecords`)."""

from __future__ import annotations

import math

import torch

from mkdt_bench.errors import UserError


def checked_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, where: str,
                 advice: str) -> float:
    """Backward and step; a non-finite loss raises a one-line UserError first:
    ``"<where> diverged (loss <value>); <advice>"``.

    Returns the loss value. Nothing is updated when the loss is not finite, so the last
    snapshot of the caller stays a good one.
    """
    value = loss.item()  # the one host read of the step
    if not math.isfinite(value):
        raise UserError(f"{where} diverged (loss {value}); {advice}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


class StepRecords:
    """Per-step scalars (a loss, finiteness flags) kept where they were computed and read on
    the host in one go: on a GPU one synchronisation per read instead of several per step.

    Example::

        records.add(loss, torch.isfinite(images).all())   # every step, no host read
        for loss, images_ok in records.read():             # every k steps
            ...
    """

    def __init__(self) -> None:
        self._pending: list[torch.Tensor] = []

    def add(self, *values: torch.Tensor) -> None:
        """Record one step's scalars (as float64: float32 values and flags exactly)."""
        self._pending.append(torch.stack([v.detach().reshape(()).double() for v in values]))

    def read(self) -> list[list[float]]:
        """The values of the steps recorded since the last read, oldest first."""
        if not self._pending:
            return []
        rows = torch.stack(self._pending).cpu().tolist()
        self._pending = []
        return rows
