"""Baseline methods on the embedded digits data."""

from __future__ import annotations

import pytest
import torch

from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.code_version import code_key
from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS, create_evaluator
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


#: The distilled-set key of each built-in method at its defaults (budget 10, seed 0, inputs
#: "inputs"), as the planner derives it: the resolved options, ``key_options`` and the code
#: key. A change here would orphan every stored set of that method.
DISTILLED_KEYS = {
    "dm-ssl": "32b51a3913c6103c",
    "full": "84c7c85dca54137d",
    "herding": "b30b74aaab1ba76b",
    "highloss": "3ef30afc99288fdc",
    "kcenter": "c8fa153a5b4c0b0b",
    "kmeans": "eb7a7117ffb930c7",
    "krrst": "4ef1c483c3ca5618",
    "mkdt": "fed22e609678563a",
    "none": "13b23753275254a0",
    "random": "f6bc93db6ee7b502",
    "random-balanced": "0e4d1072b80d91e4",
    "random-ssl": "c52f87615f210a8c",
    "sas": "8c59c6dfbb03f44d",
}


@pytest.mark.parametrize("name", sorted(DISTILLED_KEYS))
def test_default_distilled_key_is_pinned(name):
    cls = METHODS.get(name)
    code = code_key(cls)
    config = {"method": name, "options": cls.key_options(create_method(name).config),
              "budget": 10, "seed": 0, **({"code": code} if code else {})}
    assert ArtifactCache.key("distilled", config, {"images": "inputs"}) == DISTILLED_KEYS[name]


def test_expert_keys_are_pinned():
    """MKDT's and high-loss's expert trajectories keep their keys (shared by both)."""
    for name in ("mkdt", "highloss"):
        keys = [f"{u.stage}/{u.key}" for u in create_method(name).sub_units("inputs")]
        assert len(keys) == 100
        assert keys[:2] == ["expert/f685747d618da7ff", "expert/8ae47966fdcc12a6"]


@pytest.mark.parametrize("name, digest", [
    ("finetune", "3e33a8ea8ba01a53"), ("knn", "6eaa9307b892102e"),
    ("linear", "1c32815070c93238"), ("linear-val", "44eddac8ec48635c")])
def test_default_evaluator_options_are_pinned(name, digest):
    """An evaluator's resolved default options name its cells: they must not drift."""
    assert not code_key(EVALUATORS.get(name))
    assert config_hash(create_evaluator(name).config) == digest
