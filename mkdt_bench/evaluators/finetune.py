"""Full fine-tuning with a new head (``docs/protocol.md`` A.6; KRR-ST's B.3 by options).

Defaults = MKDT's recipe ([O] ``full_finetune.py``): cross-entropy, SGD momentum 0.9,
50 epochs over the labelled subset, cosine annealing to 0, weight decay 0, head lr 0.05,
backbone lr 0.005, batch 256, no augmentation. KRR-ST's recipe (B.3) is
``steps=10000`` (5000 for the fine-grained sets), ``lr_head = lr_backbone = 0.01``,
``weight_decay=5e-4``, ``augment=true`` (crop with padding 4 + flip); the
``krrst-protocol`` preset sets it. The encoder given is not modified (a copy is trained).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mkdt_bench.augment import crop_flip
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators.base import Evaluator, labelled_subset, test_scores
from mkdt_bench.evaluators.registry import register_evaluator
from mkdt_bench.models import Encoder
from mkdt_bench.options import Interval, Opt
from mkdt_bench.training import checked_step


@register_evaluator("finetune")
class FineTune(Evaluator):
    """Encoder and a new linear head trained together on the labelled subset (module doc)."""

    options = {
        "epochs": Opt(50, Interval(int, 0, None), "passes over the labelled subset"),
        "steps": Opt(0, Interval(int, 0, None, note="0 = use epochs"),
                     "SGD steps instead of epochs (KRR-ST B.3: 10000)"),
        "lr_head": Opt(0.05, Interval(float, 0, None, closed="neither"), "the head's lr"),
        "lr_backbone": Opt(0.005, Interval(float, 0, None, note="0 = a frozen backbone"),
                           "the encoder's lr"),
        "momentum": Opt(0.9, Interval(float, 0, 1, closed="left"), "SGD momentum"),
        "weight_decay": Opt(0.0, Interval(float, 0, None), "SGD weight decay"),
        "batch_size": Opt(256, Interval(int, 1, None), "images per SGD step"),
        "augment": Opt(False, None, "random crop (padding 4) + flip of the training images"),
    }
    test_options = {"epochs": 1, "batch_size": 64}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cfg = self.config
        if cfg["steps"] == 0 and cfg["epochs"] == 0:
            raise UserError(f"evaluator 'finetune': epochs={cfg['epochs']}, "
                            f"steps={cfg['steps']}; give a positive number of epochs or steps")

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        cfg = self.config
        idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
        images, labels = task.normalized("train", idx), task.train_labels[idx].long()
        model = copy.deepcopy(encoder).to(device)
        with torch.no_grad():
            model.eval()
            dim = model.features(images[:1].to(device)).shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Linear(dim, task.num_classes).to(device)
        per_epoch = math.ceil(len(idx) / cfg["batch_size"])
        total = cfg["steps"] or cfg["epochs"] * per_epoch
        opt = torch.optim.SGD([{"params": model.parameters(), "lr": cfg["lr_backbone"]},
                               {"params": head.parameters(), "lr": cfg["lr_head"]}],
                              momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        generator = torch.Generator().manual_seed(seed)
        mean = torch.tensor(task.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(task.std, device=device).view(1, -1, 1, 1)
        model.train()
        step, order = 0, torch.empty(0, dtype=torch.long)
        while step < total:
            if len(order) == 0:  # a new epoch: a fresh permutation, the last batch kept
                order = torch.randperm(len(idx), generator=generator)
            batch, order = order[:cfg["batch_size"]], order[cfg["batch_size"]:]
            x = images[batch].to(device)
            if cfg["augment"]:
                x = crop_flip(x, mean, std, 4, generator)
            loss = F.cross_entropy(head(model.features(x)), labels[batch].to(device))
            checked_step(opt, loss, f"fine-tuning at step {step + 1}",
                         f"lower evaluators.finetune.lr_head ({cfg['lr_head']:g}) or "
                         f"lr_backbone ({cfg['lr_backbone']:g})")
            sched.step()
            step += 1
        model.eval()
        test = task.normalized("test")
        with torch.no_grad():
            pred = torch.cat([head(model.features(test[i:i + 512].to(device))).argmax(1).cpu()
                              for i in range(0, len(test), 512)])
        return {**test_scores(pred, task.test_labels), "labelled": float(len(idx)),
                "steps": float(total)}
