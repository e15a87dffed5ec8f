"""Pre-training on a DistilledSet (spec ``evaluation.md`` A.1) and its fixed-step option."""

from __future__ import annotations

import torch

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.pretraining import PRETRAIN_DEFAULTS, pretrain_encoder
from mkdt_bench.stages.pretrain import encoder_key


def _set(n: int) -> DistilledSet:
    g = torch.Generator().manual_seed(n)
    return DistilledSet(images=torch.randn(n, 1, 8, 8, generator=g),
                        targets=torch.randn(n, 4, generator=g), lr=None, source="digits",
                        mean=(0.0,), std=(1.0,), method="test")


def test_epochs_give_steps_in_proportion_to_the_set():
    cfg = dict(PRETRAIN_DEFAULTS, epochs=3, batch_size=8)
    assert pretrain_encoder(_set(20), "convnet:width=8", cfg, 0, torch.device("cpu"))[1] == 9
    assert pretrain_encoder(_set(4), "convnet:width=8", cfg, 0, torch.device("cpu"))[1] == 3


def test_fixed_steps_are_equal_for_every_set_size():
    cfg = dict(PRETRAIN_DEFAULTS, epochs=3, batch_size=8, steps=7)
    for n in (4, 20, 100):  # 7 steps: 7 epochs of one batch, or part of one epoch
        assert pretrain_encoder(_set(n), "convnet:width=8", cfg, 0, torch.device("cpu"))[1] == 7
    a, _ = pretrain_encoder(_set(20), "convnet:width=8", cfg, 1, torch.device("cpu"))
    b, _ = pretrain_encoder(_set(20), "convnet:width=8", cfg, 1, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_the_steps_option_at_its_default_keeps_stored_encoder_keys():
    old = {k: v for k, v in PRETRAIN_DEFAULTS.items() if k != "steps"}  # before it existed
    assert encoder_key("convnet", dict(PRETRAIN_DEFAULTS), 0, "d") == ArtifactCache.key(
        "encoder", {"arch": "convnet", "pretrain": old, "seed": 0}, {"distilled": "d"})
    assert encoder_key("convnet", dict(PRETRAIN_DEFAULTS, steps=5), 0, "d") != \
        encoder_key("convnet", dict(PRETRAIN_DEFAULTS), 0, "d")
