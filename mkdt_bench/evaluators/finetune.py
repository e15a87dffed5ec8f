"""Full fine-tuning with a new head (spec ``evaluation.md`` A.6; KRR-ST's B.3 by options).

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
from mkdt_bench.evaluators import register_evaluator
from mkdt_bench.evaluators.base import Evaluator, labelled_subset, test_scores
from mkdt_bench.models import Encoder
from mkdt_bench.options import Interval
from mkdt_bench.training import checked_step


@register_evaluator("finetune")
class FineTune(Evaluator):
    """Options: ``epochs`` (50) or ``steps`` (0 = use epochs), ``lr_head`` (0.05),
    ``lr_backbone`` (0.005), ``momentum`` (0.9), ``weight_decay`` (0.0), ``batch_size``
    (256), ``augment`` (False)."""

    defaults = {"epochs": 50, "steps": 0, "lr_head": 0.05, "lr_backbone": 0.005,
                "momentum": 0.9, "weight_decay": 0.0, "batch_size": 256, "augment": False}
    bounds = {"epochs": Interval(int, 0, None), "steps": Interval(int, 0, None, note="0 = use "
                                                                  "epochs"),
              "lr_head": Interval(float, 0, None, closed="neither"),
              "lr_backbone": Interval(float, 0, None, note="0 = a frozen backbone"),
              "momentum": Interval(float, 0, 1, closed="left"),
              "weight_decay": Interval(float, 0, None), "batch_size": Interval(int, 1, None)}

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
