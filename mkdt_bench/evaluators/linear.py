"""MKDT's linear probe (spec ``evaluation.md`` A.2).

Frozen features; ``nn.Linear`` trained full-batch with L-BFGS (torch defaults: lr 1,
20 inner iterations, no line search) for ``steps`` ``.step`` calls on the loss
cross-entropy + ``l2``·‖W‖² (bias not penalised). 20 steps reproduce the logged
reference numbers ([J]); 100 is [O]'s count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.evaluators import register_evaluator
from mkdt_bench.evaluators.base import Evaluator, extract_features, labelled_subset
from mkdt_bench.models import Encoder


@register_evaluator("linear")
class LinearProbe(Evaluator):
    defaults = {"steps": 20, "l2": 1e-3, "max_iter": 20, "lr": 1.0}

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        x_train = extract_features(encoder, task.normalized("train")[idx], device)
        y_train = task.train_labels[idx]
        x_test = extract_features(encoder, task.normalized("test"), device)
        torch.manual_seed(seed)
        clf = nn.Linear(x_train.shape[1], task.num_classes)
        opt = torch.optim.LBFGS(clf.parameters(), lr=self.config["lr"],
                                max_iter=self.config["max_iter"])

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(clf(x_train), y_train)
            loss = loss + self.config["l2"] * clf.weight.pow(2).sum()
            loss.backward()
            return loss

        for _ in range(self.config["steps"]):
            opt.step(closure)
        with torch.no_grad():
            pred = clf(x_test).argmax(1)
        accuracy = (pred == task.test_labels).float().mean().item() * 100
        return {"accuracy": accuracy, "labelled": float(len(idx))}
