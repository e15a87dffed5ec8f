"""MKDT's linear probe (spec ``evaluation.md`` A.2).

Frozen features; ``nn.Linear`` trained full-batch with L-BFGS (torch defaults: lr 1,
20 inner iterations, no line search) for ``steps`` ``.step`` calls on the loss
cross-entropy + ``l2``·‖W‖² (bias not penalised). 20 steps reproduce the logged
reference numbers ([J]); 100 is [O]'s count.
"""

from __future__ import annotations

import torch

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.evaluators import register_evaluator
from mkdt_bench.evaluators._lbfgs import fit_linear_lbfgs
from mkdt_bench.evaluators.base import (
    Evaluator,
    extract_features,
    labelled_subset,
    test_scores,
)
from mkdt_bench.models import Encoder


@register_evaluator("linear")
class LinearProbe(Evaluator):
    defaults = {"steps": 20, "l2": 1e-3, "max_iter": 20, "lr": 1.0}

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        cfg = self.config
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        x_train = extract_features(encoder, task.normalized("train")[idx], device)
        x_test = extract_features(encoder, task.normalized("test"), device)
        clf = fit_linear_lbfgs(x_train, task.train_labels[idx], task.num_classes, cfg["l2"],
                               cfg["steps"], seed, lr=cfg["lr"], max_iter=cfg["max_iter"])
        with torch.no_grad():
            pred = clf(x_test).argmax(1)
        return {**test_scores(pred, task.test_labels), "labelled": float(len(idx))}
