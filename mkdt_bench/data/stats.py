"""Per-data-set normalisation statistics of the two reference codes, and re-normalisation.

- :data:`MKDT_STATS`: MKDT's ``utils.get_dataset`` constants (spec ``mkdt.md`` §1), which the
  ``cifar10``, ``cifar100`` and ``tinyimagenet`` data sets declare; MKDT feeds its teacher,
  experts and probe with them.
- :data:`KRRST_STATS`: KRR-ST's ``data/augmentation.py`` statistics (``krrst.md`` §1) at the
  resolution KRR-ST distils each set at (32 px; 64 px for Tiny-ImageNet). KRR-ST normalises
  its real batches and its teacher's inputs with them; ``krrst`` uses them with
  ``input_stats="krrst"``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mkdt_bench.errors import UserError

Stats = tuple[tuple[float, ...], tuple[float, ...]]

MKDT_STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2009, 0.1984, 0.2023)),
    "tinyimagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

KRRST_STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}


def lookup(table: dict[str, Stats], name: str, what: str) -> Stats:
    """``table[name]``, or a UserError naming the sets that have statistics."""
    if name not in table:
        raise UserError(f"{what} has no statistics for {name!r}; known: "
                        f"{', '.join(sorted(table))}")
    return table[name]


def _floats(stats: Stats) -> Stats:
    return tuple(float(v) for v in stats[0]), tuple(float(v) for v in stats[1])


def renormalize(images: Tensor, source: Stats, target: Stats) -> Tensor:
    """Images normalised with ``source`` (mean, std) re-expressed in ``target``:
    ``((x · std_s + mean_s) − mean_t) / std_t`` per channel (the same pixels)."""
    source, target = _floats(source), _floats(target)
    if source == target:
        return images

    def column(values: tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)

    raw = images * column(source[1]) + column(source[0])
    return (raw - column(target[0])) / column(target[1])
