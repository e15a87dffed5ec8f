"""Linear probe with the L2 strength chosen on a validation split: the standard transfer protocol.

Not the paper's protocol (``docs/protocol.md`` A.2 fixes ``l2`` = 1e-3). The labelled
subset (A.3, the same draw as ``linear``) is split at random (seeded by the run seed) into
a fit part and a validation part of ``int(n * val_fraction)`` images; one probe per
``l2_grid`` value is fitted on the fit part and scored on the validation part; the best
(first in grid order on ties) is refitted on the whole labelled subset, and only then are
the test images encoded and scored, once. The probe is ``linear``'s L-BFGS fit (A.2).
"""

from __future__ import annotations

from typing import Any

import torch

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators._lbfgs import accuracy, fit_linear_lbfgs
from mkdt_bench.evaluators.base import (
    Evaluator,
    encode_test_set,
    extract_features,
    labelled_subset,
    test_scores,
)
from mkdt_bench.evaluators.registry import register_evaluator
from mkdt_bench.models import Encoder
from mkdt_bench.options import Each, Interval, Opt


@register_evaluator("linear-val")
class LinearValProbe(Evaluator):
    """``linear``'s probe with ``l2`` chosen on a validation split (module doc)."""

    options = {
        "l2_grid": Opt([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                       Each(Interval(float, 0, None), min_len=1),
                       "the l2 strengths tried, in order (the first wins ties)"),
        "val_fraction": Opt(0.2, Interval(float, 0, 1, closed="neither"),
                            "share of the labelled subset held out for validation"),
        "steps": Opt(20, Interval(int, 1, None), "L-BFGS .step calls (as linear's)"),
        "max_iter": Opt(20, Interval(int, 1, None), "L-BFGS inner iterations (as linear's)"),
        "lr": Opt(1.0, Interval(float, 0, None, closed="neither"),
                  "L-BFGS learning rate (as linear's)"),
    }
    test_options = {"l2_grid": [1e-3, 1e-1], "steps": 2, "max_iter": 5}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.config["l2_grid"] = [float(v) for v in self.config["l2_grid"]]

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        cfg = self.config
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        n_val = int(len(idx) * cfg["val_fraction"])
        if not 0 < n_val < len(idx):
            raise UserError(f"evaluator {self.name!r}: val_fraction={cfg['val_fraction']} of "
                            f"{len(idx)} labelled images gives {n_val} validation and "
                            f"{len(idx) - n_val} fit images; each needs at least one")
        x = extract_features(encoder, task.normalized("train", idx), device)
        y = task.train_labels[idx]
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))
        val, fit = perm[:n_val], perm[n_val:]

        def fit_probe(xs: torch.Tensor, ys: torch.Tensor, l2: float) -> torch.nn.Linear:
            return fit_linear_lbfgs(xs, ys, task.num_classes, l2, cfg["steps"], seed,
                                    lr=cfg["lr"], max_iter=cfg["max_iter"])

        scores = [accuracy(fit_probe(x[fit], y[fit], l2), x[val], y[val])
                  for l2 in cfg["l2_grid"]]
        best = max(range(len(scores)), key=scores.__getitem__)  # first maximum on ties
        clf = fit_probe(x, y, cfg["l2_grid"][best])
        x_test = encode_test_set(encoder, task, device)
        with torch.no_grad():
            pred = clf(x_test).argmax(1)
        return {**test_scores(pred, task.test_labels), "labelled": float(len(idx)),
                "l2": cfg["l2_grid"][best], "val_accuracy": scores[best]}
