"""Baseline methods on the embedded digits data."""

from __future__ import annotations

import pytest
import torch

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, MethodContext, create_method


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def context(digits, tmp_path, budget=50, seed=0):
    images = digits.normalized("train")
    targets = torch.randn(len(images), 32, generator=torch.Generator().manual_seed(0))
    return MethodContext(source="digits", images=images, targets=targets, mean=digits.mean,
                         std=digits.std, budget=budget, seed=seed, device=torch.device("cpu"),
                         cache=ArtifactCache(tmp_path), inputs_key="test",
                         scratch=tmp_path / "scratch")


def test_baselines_registered():
    assert {"random", "none", "full"} <= set(METHODS.names())


def test_random_subset(digits, tmp_path):
    ctx = context(digits, tmp_path)
    a = create_method("random").distill(ctx)
    b = create_method("random").distill(ctx)
    c = create_method("random").distill(context(digits, tmp_path, seed=1))
    assert a.images.shape == (50, 1, 8, 8) and a.targets.shape == (50, 32)
    assert a.lr is None and a.method == "random" and a.source == "digits"
    idx = torch.tensor(a.extra["indices"])
    assert len(set(idx.tolist())) == 50
    assert torch.equal(a.images, ctx.images[idx]) and torch.equal(a.targets, ctx.targets[idx])
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_none_and_full(digits, tmp_path):
    ctx = context(digits, tmp_path)
    none = create_method("none").distill(ctx)
    full = create_method("full").distill(ctx)
    assert len(none) == 0 and none.targets.shape == (0, 32)
    assert len(full) == len(ctx.images)


def test_unknown_option():
    with pytest.raises(UserError, match="unknown option 'size'"):
        create_method("random", size=3)


def test_engine_options_and_compatible_defaults_stay_out_of_the_set_key():
    from mkdt_bench.methods import METHODS, create_method

    mkdt = METHODS.get("mkdt")
    base = create_method("mkdt").config
    assert mkdt.key_options({**base, "unroll": "checkpoint", "expert_group": 4}) == \
        mkdt.key_options(base)
    assert "expert_half" not in mkdt.key_options(base)  # the behaviour before the option
    assert mkdt.key_options({**base, "expert_half": True})["expert_half"] is True
    krrst = METHODS.get("krrst")
    kbase = create_method("krrst").config
    assert krrst.key_options({**kbase, "teacher_channels_last": False}) == \
        krrst.key_options(kbase)
    assert krrst.key_options({**kbase, "teacher_views": 4})["teacher_views"] == 4
    assert METHODS.get("random").key_options({"a": 1}) == {"a": 1}
