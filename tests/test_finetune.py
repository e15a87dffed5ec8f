"""The ``finetune`` evaluator (spec ``evaluation.md`` A.6, B.3 by options)."""

from __future__ import annotations

import pytest
import torch
from test_evaluators_protocols import make_task
from torch import nn

from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import create_evaluator
from mkdt_bench.models import create_model

CPU = torch.device("cpu")


class LinearEncoder(nn.Module):
    """A trainable encoder for 1 x 1 x C 'images': one linear layer over the pixels."""

    def __init__(self, channels: int = 3, dim: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(channels, dim)

    def features(self, x):
        return torch.relu(self.body(x.flatten(1)))


def test_separable_near_perfect_random_at_chance():
    ft = create_evaluator("finetune", epochs=30, lr_head=0.5, lr_backbone=0.1)
    good = ft.evaluate(LinearEncoder(), make_task(), 0.5, 0, CPU)
    assert good["accuracy"] > 95 and good["labelled"] == 200
    assert good["steps"] == 30  # 200 images at batch 256: one step an epoch
    chance = ft.evaluate(LinearEncoder(2), make_task(separable=False, classes=2), 0.5, 0, CPU)
    assert 30 < chance["accuracy"] < 70


def test_trains_a_copy_deterministically():
    encoder = LinearEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    ft = create_evaluator("finetune", steps=7, batch_size=16)
    a = ft.evaluate(encoder, make_task(), 0.2, 3, CPU)
    b = ft.evaluate(encoder, make_task(), 0.2, 3, CPU)
    assert a == b and a["steps"] == 7
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())


def test_krrst_recipe_runs_on_images_with_augmentation():
    digits = load_dataset("digits")
    encoder = create_model("convnet", in_channels=1, image_size=8, out_dim=4, width=8)
    out = create_evaluator("finetune", steps=3, lr_head=0.01, lr_backbone=0.01,
                           weight_decay=5e-4, augment=True).evaluate(encoder, digits, 0.05, 0,
                                                                     CPU)
    assert out["steps"] == 3 and 0 <= out["accuracy"] <= 100


def test_bad_options():
    with pytest.raises(UserError, match="epochs=0, steps=0"):
        create_evaluator("finetune", epochs=0)
    with pytest.raises(UserError, match="batch_size=0"):
        create_evaluator("finetune", batch_size=0)
