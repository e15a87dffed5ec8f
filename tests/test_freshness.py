"""Results of changed code or recomputed inputs are never served as current: code
versions in the keys, make's rule over ``built_from`` stamps, ``--recompute``."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import time

import pytest

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache, is_stale
from mkdt_bench.code_version import code_key, code_version
from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS
from mkdt_bench.methods import METHODS
from mkdt_bench.pipeline.plan import Recompute, parse_recompute
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.pipeline.run import run_plan
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.distill import run_distill
from mkdt_bench.stages.env import Env

FAST = ["teacher.arch='convnet:width=16'", "teacher.epochs=1", "teacher.proj_dim=32",
        "teacher.batch_size=128", "pretrain.epochs=1"]


def test_builtin_code_stays_out_of_the_keys_until_its_version_is_raised():
    for cls in (METHODS.get("random"), METHODS.get("mkdt"), EVALUATORS.get("linear")):
        assert code_version(cls) == {"version": 1} and code_key(cls) == {}

    class Raised(METHODS.get("random")):  # defined here: outside mkdt_bench, declared
        version = 2

    assert code_key(Raised) == {"version": 2}

    class Inherited(METHODS.get("random")):  # a plug-in's subclass declaring nothing
        pass

    assert set(code_key(Inherited)) == {"source_sha256"}


def test_a_plugin_without_version_is_keyed_by_its_source(tmp_path, monkeypatch):
    module = tmp_path / "herding_plugin.py"
    source = textwrap.dedent("""
        from mkdt_bench.methods import Method
        from mkdt_bench.options import Opt

        class Herding(Method):
            options = {"normalize": Opt(True)}
            STEP = 1
    """)
    module.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    first = code_key(importlib.import_module("herding_plugin").Herding)
    module.write_text(source.replace("STEP = 1", "STEP = 2"))
    sys.modules.pop("herding_plugin")
    second = code_key(importlib.import_module("herding_plugin").Herding)
    sys.modules.pop("herding_plugin")
    assert set(first) == {"source_sha256"} and first != second


def test_stale_means_another_input_stamp_or_before_fresh_after():
    manifest = {"created": 100.0, "built_from": {"distilled/a": 50.0}}
    assert not is_stale(manifest, {"distilled/a": 50.0})
    assert is_stale(manifest, {"distilled/a": 60.0})  # the set was computed again
    assert is_stale(manifest, {"distilled/a": 50.0}, fresh_after=101.0)
    legacy = {"created": 100.0}  # written before stamps: compared by creation time
    assert not is_stale(legacy, {"distilled/a": 50.0})
    assert is_stale(legacy, {"distilled/a": 150.0})


def test_a_stale_artifact_is_replaced_only_once_its_successor_is_complete(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create("encoder", "k", lambda tmp: (tmp / "w").write_text("old") and None,
                               built_from={"distilled/a": 1.0})
    seen = []

    def produce(tmp):
        seen.append((path / "w").read_text())  # the old artifact is still in place
        (tmp / "w").write_text("new")

    cache.get_or_create("encoder", "k", produce, built_from={"distilled/a": 1.0})
    assert seen == []  # current: reused
    cache.get_or_create("encoder", "k", produce, built_from={"distilled/a": 2.0})
    assert seen == ["old"] and (path / "w").read_text() == "new"
    assert cache.manifest("encoder", "k").built_from == {"distilled/a": 2.0}
    assert [p.name for p in tmp_path.joinpath("artifacts", "encoder").iterdir()
            if not p.name.endswith(".lock")] == ["k"]


@pytest.mark.slow
def test_recomputed_inputs_and_recompute_follow_through_the_grid(tmp_path):
    config = build_config(flags={"methods": ["random", "none"], "seeds": [0],
                                 "fractions": [0.05]}, overrides=FAST)
    cfg = config.to_dict()
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore(tmp_path / "results.sqlite")
    first = api.run(config, cache_dir=env.cache_dir, results_db=store.path,
                    executor="inprocess", threads=1, progress=False).frame
    assert (first["status"] == "ok").all()
    cache = ArtifactCache(env.cache_dir)
    plan = plan_grid(cfg, env, store)
    assert plan.eval_units == [] and plan.distill_units == []  # all current

    # the random set is computed again (an interrupted --recompute): whatever was computed
    # from the old set (its encoder, its rows) is stale, the rest is not
    unit = next(u for u in plan_grid(cfg, env, store, Recompute(frozenset(
        {"methods.random"}), time.time())).distill_units if u.method == "random")
    run_distill(unit, env)
    plan = plan_grid(cfg, env, store)
    assert [(u.method, len(u.cells)) for u in plan.eval_units] == [("random", 1)]
    rows = run_plan(plan, env, store)
    row = rows[rows["method"] == "random"].iloc[0]
    stamp = cache.manifest("distilled", unit.key).created
    assert json.loads(row["config"])["built_from"][f"distilled/{unit.key}"] == stamp
    encoder = json.loads(row["config"])["artifacts"][-1].split("/", 1)[1]
    assert cache.manifest("encoder", encoder).built_from == {f"distilled/{unit.key}": stamp}
    assert plan_grid(cfg, env, store).eval_units == []

    # --recompute evaluators.linear recomputes every cell and nothing else
    plan = plan_grid(cfg, env, store, parse_recompute(["evaluators.linear"], cfg))
    assert plan.distill_units and not plan.sub_units
    assert sum(len(u.cells) for u in plan.eval_units) == 3  # random, none, teacher
    # --recompute pretrain: every encoder again, with its cells (the teacher row has none)
    plan = plan_grid(cfg, env, store, parse_recompute(["pretrain"], cfg))
    assert sorted(u.method for u in plan.eval_units) == ["none", "random"]
    assert all(u.encoder.fresh_after > 0 for u in plan.eval_units)
    with pytest.raises(UserError, match="'methods.mkdt' is not a stage of this grid"):
        parse_recompute(["methods.mkdt"], cfg)


def test_builtin_keys_are_those_of_stored_caches():
    """The distilled-set key of a built-in method is the key from before versions existed
    (the formula then: method, key options, budget, seed; the inputs)."""
    from mkdt_bench.stages.distill import MethodInputs

    cls = METHODS.get("random")
    options = cls().config
    old = ArtifactCache.key("distilled", {"method": "random", "options": options,
                                          "budget": 143, "seed": 0}, {"images": "reps"})
    code = code_key(cls)
    new = ArtifactCache.key("distilled", {"method": "random", "options": cls.key_options(options),
                                          "budget": 143, "seed": 0,
                                          **({"code": code} if code else {})},
                            {"images": MethodInputs("digits", "reps", "t", "convnet").key})
    assert new == old
