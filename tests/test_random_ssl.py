"""``random-ssl``: the random subset without targets, pre-trained with the SSL objective
under the same optimiser, epochs and batches as target sets (equal steps)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods import MethodContext, create_method
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.pretraining import PRETRAIN_DEFAULTS
from mkdt_bench.pretraining.objectives.ssl_views import raw_uint8
from mkdt_bench.pretraining.train import pretrain_encoder
from mkdt_bench.report.groups import pretraining_note
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.env import Env

RECIPE = {"ssl": "simclr", "proj_dim": 16, "bt_lambda": 5e-3, "temperature": 0.5,
          "min_scale": 0.3, "cj_strength": 0.5, "gaussian_blur": 0.0, "hf_prob": 0.0}
TINY_TEACHER = ["teacher.arch='convnet:width=8'", "teacher.epochs=1", "teacher.proj_dim=16",
                "teacher.batch_size=128", "teacher.ssl='simclr'", "pretrain.epochs=2",
                "pretrain.batch_size=32"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def context(digits, tmp_path, budget=33, seed=0):
    images = digits.normalized("train")
    targets = torch.randn(len(images), 12, generator=torch.Generator().manual_seed(0))
    return MethodContext(source="digits", images=images, targets=targets, mean=digits.mean,
                         std=digits.std, budget=budget, seed=seed, device=torch.device("cpu"),
                         cache=ArtifactCache(tmp_path), inputs_key="t", scratch=tmp_path / "s")


def test_the_random_subset_without_targets(digits, tmp_path):
    ctx = context(digits, tmp_path)
    ssl = create_method("random-ssl", **RECIPE).distill(ctx)
    plain = create_method("random").distill(ctx)
    assert ssl.extra["indices"] == plain.extra["indices"]  # the same images as `random`
    assert torch.equal(ssl.images, plain.images)
    assert ssl.targets.shape == (33, 0) and ssl.lr is None
    assert ssl.storage_bytes == ssl.images.numel() * 4  # images only
    assert ssl.ssl_recipe == RECIPE
    again = DistilledSet.load(ssl.save(tmp_path / "set"))
    assert again.ssl_recipe == RECIPE and again.targets.shape == (33, 0)
    plain.save(tmp_path / "plain")
    assert "ssl_recipe" not in json.loads((tmp_path / "plain" / "distilled.json").read_text())
    assert DistilledSet.load(tmp_path / "plain").ssl_recipe is None


def test_a_set_with_a_recipe_and_targets_is_refused(digits, tmp_path):
    plain = create_method("random").distill(context(digits, tmp_path))
    with pytest.raises(UserError, match="SSL recipe has no targets"):
        DistilledSet(images=plain.images, targets=plain.targets, lr=None, source="digits",
                     mean=plain.mean, std=plain.std, method="x", ssl_recipe=RECIPE)


def test_recipe_defaults_to_the_teachers(tmp_path):
    cfg = build_config(overrides=["teacher.ssl='simclr'", "teacher.proj_dim=64",
                                  "teacher.min_scale=0.3"],
                       flags={"methods": ["random-ssl"]}).to_dict()
    assert cfg["methods"]["random-ssl"]["ssl"] == "simclr"
    assert cfg["methods"]["random-ssl"]["proj_dim"] == 64
    assert cfg["methods"]["random-ssl"]["min_scale"] == 0.3
    own = build_config(overrides=["teacher.ssl='simclr'", "methods.random-ssl.ssl="
                                  "'barlow_twins'"], flags={"methods": ["random-ssl"]}).to_dict()
    assert own["methods"]["random-ssl"]["ssl"] == "barlow_twins"  # an explicit value wins
    variant = build_config(overrides=["teacher.proj_dim=64"],
                           flags={"methods": ["random-ssl[temperature=0.2]"]}).to_dict()
    assert variant["methods"]["random-ssl[temperature=0.2]"]["proj_dim"] == 64
    assert variant["methods"]["random-ssl[temperature=0.2]"]["temperature"] == 0.2
    with pytest.raises(UserError, match="ssl='byol' is not allowed"):
        create_method("random-ssl", ssl="byol")


def test_raw_pixels_are_recovered_exactly(digits, tmp_path):
    ssl = create_method("random-ssl", **RECIPE).distill(context(digits, tmp_path))
    assert torch.equal(raw_uint8(ssl), digits.train_images[ssl.extra["indices"]])


@pytest.mark.parametrize("ssl_kind", ["simclr", "barlow_twins"])
@pytest.mark.parametrize("budget", [33, 65])  # 65 = 2 x 32 + 1: a last batch of one image
def test_ssl_pretraining_takes_the_regression_steps(digits, tmp_path, ssl_kind, budget):
    ctx = context(digits, tmp_path, budget=budget)
    ssl = create_method("random-ssl", **{**RECIPE, "ssl": ssl_kind}).distill(ctx)
    plain = create_method("random").distill(ctx)
    cfg = {**PRETRAIN_DEFAULTS, "epochs": 2, "batch_size": 32}
    model, steps = pretrain_encoder(ssl, "convnet:width=8", cfg, 0, torch.device("cpu"))
    _, regression_steps = pretrain_encoder(plain, "convnet:width=8", cfg, 0,
                                           torch.device("cpu"))
    assert steps == regression_steps == 2 * math.ceil(budget / 32)
    again, _ = pretrain_encoder(ssl, "convnet:width=8", cfg, 0, torch.device("cpu"))
    fresh, _ = pretrain_encoder(ssl, "convnet:width=8", {**cfg, "epochs": 0}, 0,
                                torch.device("cpu"))
    state, same, start = model.state_dict(), again.state_dict(), fresh.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)  # deterministic
    assert not all(torch.equal(state[k], start[k]) for k in state)  # and it learned
    assert state["head.weight"].shape == (1, model.feature_dim)  # the unused placeholder
    assert torch.isfinite(model.features(ssl.images[:4])).all()


def test_in_a_grid_ssl_rows_get_equal_steps_and_own_keys(tmp_path):
    cfg = build_config(flags={"methods": ["random", "random-ssl"], "seeds": [0],
                              "fractions": [0.05], "teacher_row": False},
                       overrides=TINY_TEACHER)
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore(tmp_path / "r.sqlite")
    plan = plan_grid(cfg.to_dict(), env, store)
    assert len({u.key for u in plan.distill_units}) == 2  # the sets differ (targets, recipe)
    frame = api.run(cfg, cache_dir=env.cache_dir, results_db=store.path, executor="inprocess",
                    threads=1, progress=False).frame
    assert (frame["status"] == "ok").all() and set(frame["method"]) == {"random", "random-ssl"}
    line = pretraining_note(frame)
    assert line.startswith("equal pre-training steps"), line
    assert "10 steps for 143 images" in line  # 2 epochs x ceil(143 / 32)
    config = json.loads(frame[frame["method"] == "random-ssl"]["config"].iloc[0])
    assert config["method_options"]["ssl"] == "simclr"  # from [teacher]
    cache = ArtifactCache(tmp_path / "cache")
    ssl_key = next(u.key for u in plan.distill_units if u.method == "random-ssl")
    assert DistilledSet.load(cache.path("distilled", ssl_key)).ssl_recipe["proj_dim"] == 16
