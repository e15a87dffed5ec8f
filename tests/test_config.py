"""Presets, flags and --set overrides."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from mkdt_bench.cache import config_hash
from mkdt_bench.config import (
    RUN_BOUNDS,
    RUN_DEFAULTS,
    BenchConfig,
    PretrainConfig,
    RunConfig,
    TeacherConfig,
    build_config,
    list_presets,
    parse_budget,
    resolve_budget,
)
from mkdt_bench.errors import UserError
from mkdt_bench.methods import create_method
from mkdt_bench.models import create_model


def test_presets_ship_and_resolve():
    assert {"quick", "cifar10-paper"} <= set(list_presets())
    for name in list_presets():
        cfg = build_config(name)
        assert cfg.run.methods and cfg.teacher.arch
    quick = build_config("quick")
    assert quick.run.dataset == "digits"
    assert quick.run.fractions == (0.01, 0.05)


def test_paper_preset_numbers():
    cfg = build_config("cifar10-paper")
    assert cfg.run.budget == "2%"
    assert cfg.pretrain == PretrainConfig(epochs=20, lr=0.1, use_learned_lr=True, momentum=0.9,
                                          weight_decay=1e-4, batch_size=256, steps=0)
    assert cfg.evaluators["linear"]["steps"] == 20


def test_precedence_and_overrides():
    cfg = build_config("quick", {"seeds": [5]}, ["teacher.epochs=3", "run.seeds=[7, 8]",
                                                 "pretrain.lr=0.5"])
    assert cfg.run.seeds == (7, 8)
    assert cfg.teacher.epochs == 3 and cfg.pretrain.lr == 0.5
    cfg = build_config("quick", {"seeds": [5]})
    assert cfg.run.seeds == (5,)
    assert build_config("quick", overrides=["evaluators.linear.steps=3"]).evaluators[
        "linear"]["steps"] == 3


@pytest.mark.parametrize("override, message", [
    ("teacher.nope=1", "unknown option 'nope'"),
    ("teacher.epochs=abc", "must be of type int"),
    ("teacher.ssl=byol", "not allowed"),
    ("bogus.x=1", "key must start with"),
    ("teacher.epochs", "must look like"),
    ("methods.nosuch.x=1", "unknown method 'nosuch'"),
    ("run.fractions=[0.5, 2.0]", "must be a number in (0, 1]"),
    ("run.seeds=[]", "run.seeds is empty"),
    ("run.seeds=[-1]", "seeds holds -1; each value must be an int in"),
    ("run.device='tpu'", "must be cpu"),
    ("run.evaluators=['nope']", "unknown evaluator 'nope'"),
])
def test_bad_overrides(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config("quick", overrides=[override])


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'nope'; known: .*quick"):
        build_config("nope")


def test_budget():
    assert parse_budget("2%") == ("fraction", 0.02)
    assert parse_budget(1000) == ("count", 1000)
    assert resolve_budget("10%", 1437) == 143
    assert resolve_budget("50", 1437) == 50
    for bad in ("0", "-3", "0%", "150%", "abc"):
        with pytest.raises(UserError, match="budget"):
            parse_budget(bad)
    with pytest.raises(UserError, match="larger than the training set"):
        resolve_budget(2000, 1437)


@pytest.mark.parametrize("override, message", [
    ("run.archs=['nosuch']", "unknown model 'nosuch'"),
    ("teacher.arch='nosuch'", "unknown model 'nosuch'"),
    ("run.dataset='nosuch'", "unknown dataset 'nosuch'"),
    ("run.tasks=['digits', 'nosuch']", "unknown dataset 'nosuch'"),
])
def test_names_are_checked_before_any_work(override, message):
    with pytest.raises(UserError, match=message):
        build_config("quick", overrides=[override])


@pytest.mark.parametrize("preset, size, parameters", [
    ("cifar10-paper", 32, 5_675_520), ("cifar100-paper", 32, 5_675_520),
    ("tiny-paper", 64, 5_747_712), ("krrst-protocol", 32, 5_675_520)])
def test_paper_presets_build_krrsts_networks_and_statistics(preset, size, parameters):
    """krrst.md §7: the pool is KRR-ST's convnet_128_256_512_bn (32 px) or
    convnet_64_128_256_512_bn (64 px), not a constant-width ConvNet, and real batches are
    normalised with KRR-ST's statistics (its released teacher's)."""
    cfg = build_config(preset)
    method = create_method("krrst", **cfg.methods["krrst"])
    assert method.config["input_stats"] == "krrst"
    ctx = SimpleNamespace(images=torch.zeros(1, 3, size, size), targets=torch.zeros(1, 512),
                          device=torch.device("cpu"))
    pool = method._build(ctx, 0)
    assert sum(p.numel() for p in pool.parameters()) == parameters
    for arch in cfg.run.archs if preset == "krrst-protocol" else []:
        net = create_model(arch, in_channels=3, image_size=size, out_dim=512)
        assert sum(p.numel() for p in net.parameters()) == parameters


#: ``config_hash`` of the config each preset resolved to before the config was typed (what
#: the cache keys of its artifacts hash): the typed config must give the same plain data.
RESOLVED_HASHES = {
    "cifar10-cpu": "412512ae3b04f3a5", "cifar10-cpu-v2": "c3f4c63f6f31adef",
    "cifar10-paper": "4e3746f595e2fcd0", "cifar10-paper-5": "a2d4c161ae97a9e2",
    "cifar100-paper": "20901eebafc5dfcc", "cifar100-paper-5": "ff31ded7fb0d158f",
    "krrst-protocol": "0f324bd6bd0d99c7", "quick": "0b3a5488cd4667fc",
    "quick-baselines": "a183846955621f91", "tiny-paper": "7797a83c3a00194d",
    "tiny-paper-5": "69da1d0aebf6a470",
}


def test_the_typed_config_gives_every_preset_the_plain_data_it_had():
    assert set(RESOLVED_HASHES) == set(list_presets())
    for name, digest in RESOLVED_HASHES.items():
        typed = build_config(name)
        plain = typed.to_dict()
        assert config_hash(plain) == digest, name
        assert BenchConfig.from_dict(plain) == typed
        assert json.dumps(BenchConfig.from_dict(plain).to_dict()) == json.dumps(plain)
    flags = build_config("quick", {"methods": ["random", "mkdt[iterations=5]", "krrst"],
                                   "seeds": [3]},
                         ["teacher.epochs=2", "pretrain.steps=7", "evaluators.linear.steps=3"])
    assert config_hash(flags.to_dict()) == "9a762a5d5bd818ed"
    assert config_hash(build_config().to_dict()) == "ec594a9857473c59"


def test_the_typed_config_reads_as_fields_and_cannot_be_changed():
    cfg = build_config("quick", {"seeds": [5, 6]}, ["teacher.epochs=3"])
    assert cfg.run.seeds == (5, 6) and cfg.run.dataset == "digits"
    assert cfg.teacher.epochs == 3 and isinstance(cfg.pretrain.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seeds = (1,)  # type: ignore[misc]
    plain = cfg.to_dict()
    plain["run"]["seeds"].append(9)
    assert cfg.run.seeds == (5, 6)  # to_dict hands out a copy


def test_every_typed_option_is_declared_once_with_help_and_bounds():
    from mkdt_bench.pretraining import PRETRAIN_BOUNDS, PRETRAIN_DEFAULTS
    from mkdt_bench.teachers import TEACHER_BOUNDS, TEACHER_DEFAULTS

    for record, defaults, bounds in ((RunConfig, RUN_DEFAULTS, RUN_BOUNDS),
                                     (TeacherConfig, TEACHER_DEFAULTS, TEACHER_BOUNDS),
                                     (PretrainConfig, PRETRAIN_DEFAULTS, PRETRAIN_BOUNDS)):
        declared = dataclasses.fields(record)
        assert [f.name for f in declared] == list(defaults), record.__name__
        for f in declared:
            assert f.metadata["help"], f"{record.__name__}.{f.name} has no help"
            assert f.metadata["bounds"] == bounds.get(f.name), f.name
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            assert default == defaults[f.name], f.name
    assert dataclasses.asdict(RunConfig()) == {k: tuple(v) if isinstance(v, list) else v
                                               for k, v in RUN_DEFAULTS.items()}
