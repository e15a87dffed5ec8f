"""Cosine k-nearest-neighbour accuracy on frozen features: a cheap monitor.

The standard kNN monitor of self-supervised learning (Wu et al. 2018, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", use a similarity-weighted
kNN). It is **not** one of the paper's protocols (``docs/protocol.md`` A.2 is the
linear probe); use it for quick comparisons only.

The bank is the labelled subset of ``docs/protocol.md`` A.3 (the same draw as
``linear``); each test image takes the majority vote of its ``k`` most cosine-similar
bank entries (``k`` clipped to the bank size), each vote counting 1 (``uniform``) or its
cosine similarity (``similarity``). Ties go to the smallest class index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.evaluators.base import (
    Evaluator,
    encode_test_set,
    extract_features,
    labelled_subset,
    test_scores,
)
from mkdt_bench.evaluators.registry import register_evaluator
from mkdt_bench.models import Encoder
from mkdt_bench.options import Interval, Opt


def knn_predict(bank: Tensor, bank_labels: Tensor, queries: Tensor, k: int, num_classes: int,
                weighting: str = "uniform", chunk: int = 1024) -> Tensor:
    """Predicted class of each query row: cosine kNN vote over ``bank`` rows.

    Only classes among the neighbours can win, also when similarity votes are negative.
    ``queries`` are processed ``chunk`` rows at a time, so memory is ``chunk x len(bank)``.
    """
    bank = F.normalize(bank, dim=1)
    k = min(k, len(bank))
    preds = []
    for start in range(0, len(queries), chunk):
        sims = F.normalize(queries[start:start + chunk], dim=1) @ bank.T
        top_sims, top_idx = sims.topk(k, dim=1)
        labels = bank_labels[top_idx]
        votes = torch.zeros(len(sims), num_classes, dtype=sims.dtype, device=sims.device)
        if weighting == "similarity":
            votes.scatter_add_(1, labels, top_sims)
            # similarities can be negative: a class without neighbours must not win with 0
            present = torch.zeros_like(votes, dtype=torch.bool).scatter_(1, labels, True)
            votes.masked_fill_(~present, float("-inf"))
        else:
            votes.scatter_add_(1, labels, torch.ones_like(top_sims))
        preds.append(votes.argmax(1))  # first maximum: the smallest class index
    return torch.cat(preds)


@register_evaluator("knn")
class KNNMonitor(Evaluator):
    """Majority vote of the ``k`` most cosine-similar labelled images (module doc)."""

    options = {
        "k": Opt(20, Interval(int, 1, None), "neighbours that vote (clipped to the bank size)"),
        "weighting": Opt("uniform", ("uniform", "similarity"),
                         "each vote counts 1, or its cosine similarity"),
    }

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        bank = extract_features(encoder, task.normalized("train", idx), device).to(device)
        queries = encode_test_set(encoder, task, device).to(device)
        pred = knn_predict(bank, task.train_labels[idx].to(device), queries, self.config["k"],
                           task.num_classes, self.config["weighting"])
        return {**test_scores(pred, task.test_labels), "labelled": float(len(idx)),
                "k": float(min(self.config["k"], len(idx)))}
