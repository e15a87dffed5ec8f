"""Pre-training on a DistilledSet (``docs/protocol.md`` A.1): its fixed-step option, its
objectives, its unit and the encoder an evaluation loads."""

from __future__ import annotations

from dataclasses import replace

import torch

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.methods.random_ssl import RECIPE_KEYS
from mkdt_bench.pretraining import PRETRAIN_DEFAULTS
from mkdt_bench.pretraining.objectives import PRETRAIN_OBJECTIVES, objective_name
from mkdt_bench.pretraining.train import build_encoder, pretrain_encoder
from mkdt_bench.rows import ArtifactRef, Provenance
from mkdt_bench.stages.env import Env, cached_dataset
from mkdt_bench.stages.evaluate import Cell, EvalUnit, run_eval
from mkdt_bench.stages.pretrain import PretrainUnit, encoder_key, load_encoder, run_pretrain
from mkdt_bench.teachers import TEACHER_DEFAULTS

CPU = torch.device("cpu")


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


def test_stored_encoder_keys_stay_valid():
    """The key the code before PretrainUnit gave (pinned), and the unit's own."""
    assert encoder_key("convnet", dict(PRETRAIN_DEFAULTS), 3, "abc") == "79b4aa055301885f"
    assert PretrainUnit("abc", "convnet", dict(PRETRAIN_DEFAULTS), 3).key == "79b4aa055301885f"


def test_a_set_picks_its_objective_from_the_registry():
    assert PRETRAIN_OBJECTIVES.names() == ["regression", "ssl"]
    recipe = dict(TEACHER_DEFAULTS, ssl="simclr")
    ssl_set = replace(_set(4), targets=torch.zeros(4, 0),
                      ssl_recipe={k: recipe[k] for k in RECIPE_KEYS})
    assert objective_name(_set(4)) == "regression" and objective_name(ssl_set) == "ssl"
    assert build_encoder(_set(4), "convnet:width=8").head.out_features == 4
    assert build_encoder(ssl_set, "convnet:width=8").head.out_features == 1


def test_pre_training_is_a_unit_and_an_evaluation_loads_its_encoder(tmp_path):
    """run_pretrain stores the encoder of a PretrainUnit; load_encoder returns it as
    trained (and pre-trains it where it is missing), with the set's facts for the row."""
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    cache = ArtifactCache(env.cache_dir)
    distilled = _set(12)
    cache.get_or_create("distilled", "d12", lambda tmp: distilled.save(tmp) and None)
    cfg = dict(PRETRAIN_DEFAULTS, epochs=2, batch_size=4)
    unit = PretrainUnit("d12", "convnet:width=8", cfg, 1)
    expected, steps = pretrain_encoder(distilled, unit.arch, cfg, 1, CPU)
    run_pretrain(unit, env)
    assert cache.exists("encoder", unit.key)
    assert cache.manifest("encoder", unit.key).extra["steps"] == 6
    model, facts = load_encoder(unit, env)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 expected.state_dict().values()))
    assert facts == {"storage_bytes": distilled.storage_bytes, "set_images": 12}
    other = replace(unit, seed=2)
    load_encoder(other, env)
    assert cache.exists("encoder", other.key)


def test_an_evaluation_unit_scores_the_encoder_it_names(tmp_path):
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    digits = cached_dataset("digits", env.data_root, env.cache_dir)
    cache = ArtifactCache(env.cache_dir)
    images = digits.normalized("train")[:16]
    distilled = DistilledSet(images=images, targets=torch.randn(16, 4), lr=None,
                             source="digits", mean=digits.mean, std=digits.std, method="test")
    cache.get_or_create("distilled", "d16", lambda tmp: distilled.save(tmp) and None)
    unit = PretrainUnit("d16", "convnet:width=8", dict(PRETRAIN_DEFAULTS, epochs=1), 0)
    cell = Cell("c", "knn", {"k": 3}, "digits", 0.05)
    provenance = Provenance(artifacts=(ArtifactRef("distilled", "d16"),
                                       ArtifactRef("encoder", unit.key)))
    (row,) = run_eval(EvalUnit("test", 0, 16, "digits", unit, (cell,), provenance), env)
    assert row.status == "ok" and row.arch == "convnet:width=8" and row.budget == 16
    assert row.timings["pretrain_steps"] == 1 and row.timings["set_images"] == 16
    assert "pretrain_s" in row.timings and "evaluate_s" in row.timings
