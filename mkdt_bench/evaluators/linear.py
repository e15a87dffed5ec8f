"""MKDT's linear probe (``docs/protocol.md`` A.2).

Frozen features; ``nn.Linear`` trained full-batch with L-BFGS (torch defaults: lr 1,
20 inner iterations, no line search) for ``steps`` ``.step`` calls on the loss
cross-entropy + ``l2``·‖W‖² (bias not penalised). 20 steps reproduce the logged
reference numbers ([J]); 100 is [O]'s count.

How the labelled subset is encoded (``labelled_mode``): ``"eval"`` (default) uses the
frozen encoder in eval mode for the labelled and the test images alike, the usual linear
protocol: each image's feature is a fixed function of the image. The reference
(``evaluation/linear_evaluation.py`` ``le_run``) never calls ``eval()`` before encoding
the labelled subset, so a BatchNorm encoder (the ResNets of A.7) normalises it with the
statistics of each batch of ``encode_batch`` = 256 images and folds them into its running
statistics, and only then encodes the test set in eval mode with the updated statistics;
``"train"`` reproduces that (on a copy of the encoder). Instance-norm ConvNets give the
same features either way.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.evaluators._lbfgs import fit_linear_lbfgs
from mkdt_bench.evaluators.base import (
    Evaluator,
    encode_test_set,
    extract_features,
    feature_dtype,
    labelled_subset,
    test_scores,
)
from mkdt_bench.evaluators.registry import register_evaluator
from mkdt_bench.models import Encoder
from mkdt_bench.options import Interval, Opt


@torch.no_grad()
def train_mode_features(encoder: Encoder, images: Tensor, batch_size: int,
                        device: torch.device) -> Tensor:
    """``encoder.features`` in train mode, ``batch_size`` images at a time in order (the
    reference's encoding of the labelled subset): batch-norm layers use each batch's
    statistics and update their running statistics. Leaves ``encoder`` in eval mode."""
    encoder.train()
    chunks = [feature_dtype(encoder.features(images[i:i + batch_size].to(device)))
              for i in range(0, len(images), batch_size)]
    encoder.eval()
    return torch.cat(chunks)


@register_evaluator("linear")
class LinearProbe(Evaluator):
    """A linear head on frozen features, fitted with L-BFGS (module doc)."""

    options = {
        "steps": Opt(20, Interval(int, 1, None),
                     "L-BFGS .step calls (20 reproduce [J]'s logged numbers; [O] uses 100)"),
        "l2": Opt(1e-3, Interval(float, 0, None), "weight of l2·‖W‖² (bias not penalised)"),
        "max_iter": Opt(20, Interval(int, 1, None), "L-BFGS inner iterations per step"),
        "lr": Opt(1.0, Interval(float, 0, None, closed="neither"), "L-BFGS learning rate"),
        "labelled_mode": Opt("eval", ("eval", "train"),
                             "encode the labelled subset in eval mode, or in train mode as the "
                             "reference does (module doc)"),
        "encode_batch": Opt(256, Interval(int, 1, None),
                            "batch of the labelled subset's encoding in \"train\" mode"),
    }
    # rows stored before the two options existed encoded the labelled subset in eval mode
    compatible_defaults = {"labelled_mode": "eval", "encode_batch": 256}
    test_options = {"steps": 2, "max_iter": 5}

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        cfg = self.config
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        images = task.normalized("train", idx)
        if cfg["labelled_mode"] == "train":
            encoder = copy.deepcopy(encoder)  # its running statistics change
            x_train = train_mode_features(encoder, images, cfg["encode_batch"], device)
        else:
            x_train = extract_features(encoder, images, device)
        x_test = encode_test_set(encoder, task, device)
        clf = fit_linear_lbfgs(x_train, task.train_labels[idx], task.num_classes, cfg["l2"],
                               cfg["steps"], seed, lr=cfg["lr"], max_iter=cfg["max_iter"])
        with torch.no_grad():
            pred = clf(x_test).argmax(1)
        return {**test_scores(pred, task.test_labels), "labelled": float(len(idx))}
