"""The library entry points (:mod:`mkdt_bench.api`): a tiny grid run by ``api.run`` returns its
rows and the command line's numbers, a dry run writes nothing, a warm plan matches every
step to the stored manifests of its like, the executor is chosen in one place, and a set
evaluated as it is is copied into the cache by a unit, not while planning."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST_FLAGS, FAST_OVERRIDES

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.cli import main
from mkdt_bench.cli.common import EXECUTORS
from mkdt_bench.config import BenchConfig, build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.pipeline.costs import like
from mkdt_bench.pipeline.executors import (
    KINDS,
    InProcessExecutor,
    ProcessExecutor,
    check_choice,
    choose,
)
from mkdt_bench.pipeline.plan import CACHED, TO_COMPUTE
from mkdt_bench.pipeline.planner import plan_external, plan_grid
from mkdt_bench.pretraining import describe_pretrain
from mkdt_bench.results import OK, ResultStore
from mkdt_bench.stages.env import Env

GRID = {"methods": ["random"], "seeds": [0], "fractions": [0.05], "evaluators": ["knn"]}
ARGS = ["--methods", "random", "--seeds", "0", "--fractions", "5%", "--evaluators", "knn",
        "--executor", "inprocess", "--threads", "1", *FAST_FLAGS]


def tiny() -> BenchConfig:
    return build_config("quick", GRID, list(FAST_OVERRIDES))  # the command line's default


def test_run_returns_the_rows_the_command_line_stores(teacher_cache, tmp_path, capsys):
    result = api.run(tiny(), cache_dir=teacher_cache, executor="inprocess", threads=1,
                     progress=False)
    frame = result.frame
    assert len(frame) == 2 and set(frame["status"]) == {OK}  # random and the teacher row
    assert set(frame["method"]) == {"random", "teacher"}
    assert result.store is not None and not result.unstored and result.unstored_report() == ""
    assert [s.status for s in result.plan.steps if s.stage == "teacher"] == [CACHED]
    rerun = api.run(tiny(), cache_dir=teacher_cache, executor="inprocess", threads=1,
                    progress=False)
    assert rerun.plan.to_compute == [] and rerun.frame.equals(frame)

    cli_cache = tmp_path / "cli"
    assert main(["run", "--cache-dir", str(cli_cache), *ARGS]) == 0
    assert "random" in capsys.readouterr().out
    stored = ResultStore.read_only(cli_cache / "results.sqlite").frame()
    mine = frame.set_index("cell_key")["accuracy"]
    assert stored.set_index("cell_key")["accuracy"].sort_index().equals(mine.sort_index())


def test_a_dry_run_writes_nothing(tmp_path):
    result = api.run(tiny(), cache_dir=tmp_path / "cache", dry_run=True, progress=False)
    assert not (tmp_path / "cache").exists()
    assert result.store is None and result.frame.empty and result.unstored == []
    assert result.plan is not None and {s.status for s in result.plan.steps} == {TO_COMPUTE}
    assert set(result.estimates) == {(s.stage, s.key) for s in result.plan.to_compute}


def test_a_warm_plan_finds_a_stored_manifest_like_every_step(teacher_cache, tmp_path):
    """One key config per stage: each artifact's manifest records the config and inputs its
    step's ``like`` is made of, so measured costs are found for every artifact step."""
    api.run(tiny(), cache_dir=teacher_cache, executor="inprocess", threads=1, progress=False)
    cache = ArtifactCache(teacher_cache, create=False)
    stored = {}
    for stage, key in cache.artifacts():
        m = cache.manifest(stage, key)
        stored[f"{stage}/{key}"] = like(stage, m.config, m.inputs)
    plan = plan_grid(tiny().to_dict(), Env(cache_dir=str(teacher_cache), progress=False),
                     ResultStore.read_only(teacher_cache / "results.sqlite"))
    artifacts = [s for s in plan.steps if s.stage != "cell"]
    assert {s.stage for s in artifacts} == {"teacher", "distilled", "encoder"}
    for step in artifacts:
        assert stored[f"{step.stage}/{step.key}"] == step.like, step.label
    # the like leaves the seed out: another seed's set is matched to the stored one
    seeded = build_config("quick", {**GRID, "seeds": [1], "shared_distillation": False},
                          list(FAST_OVERRIDES))
    other = plan_grid(seeded.to_dict(), Env(cache_dir=str(teacher_cache), progress=False),
                      ResultStore.read_only(teacher_cache / "results.sqlite"))
    distilled = [s for s in other.steps if s.stage == "distilled"]
    assert distilled[0].status == TO_COMPUTE and distilled[0].like in stored.values()


def test_the_executor_is_chosen_in_one_place():
    assert KINDS == EXECUTORS  # what the command line offers is what the library takes
    assert isinstance(choose("auto", threads=1, device="cuda"), InProcessExecutor)
    assert isinstance(choose("inprocess"), InProcessExecutor)
    processes = choose("processes", workers=2, threads=1)
    assert isinstance(processes, ProcessExecutor) and processes.workers == 2
    for kind, kwargs, message in [
            ("threads", {}, "'threads' is not an executor"),
            ("processes", {"workers": -1}, "--workers -1 must be 0"),
            ("processes", {"workers": 257}, "at most 256"),
            ("inprocess", {"workers": 2}, "--workers 2 needs --executor processes or auto"),
            ("auto", {"ray_address": "auto"}, "--ray-address needs --executor ray, not auto"),
            ("auto", {"retries": -1}, "--retries -1 must be 0 or more")]:
        with pytest.raises(UserError, match=message):
            check_choice(kind, **kwargs)


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="'methods.mkdt' is not a stage of this grid"):
        api.run(tiny(), cache_dir=tmp_path / "cache", recompute=["methods.mkdt"])
    with pytest.raises(UserError, match="--name 'random' is reserved"):
        api.evaluate_set(tmp_path, tiny(), name="random", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_evaluate_set_plans_without_writing_and_copies_the_set_as_a_unit(tmp_path):
    digits = load_dataset("digits")
    DistilledSet(images=digits.normalized("train")[:20], targets=torch.randn(20, 4), lr=None,
                 source="digits", mean=digits.mean, std=digits.std,
                 method="external").save(tmp_path / "myset")
    cfg = build_config(flags={"dataset": "digits", "seeds": [0], "fractions": [0.05],
                              "evaluators": ["knn"], "teacher_row": False},
                       overrides=["pretrain.epochs=1"])
    cache = tmp_path / "cache"
    env = Env(cache_dir=str(cache), progress=False, threads=1)
    plan = plan_external(cfg.to_dict(), env, ResultStore.read_only(tmp_path / "r.sqlite"),
                         tmp_path / "myset", "import:myset")
    assert not cache.exists() and len(plan.imports) == 1
    assert [s.status for s in plan.steps if s.stage == "distilled"] == [TO_COMPUTE]
    lines: list[str] = []
    result = api.evaluate_set(tmp_path / "myset", cfg, cache_dir=cache, threads=1,
                              progress=False, notify=lines.append)
    assert list(result.frame["method"]) == ["import:myset"] and set(result.frame["status"]) \
        == {OK}
    assert lines == ["pre-training recipe: the built-in defaults (no --preset): "
                     f"{describe_pretrain(cfg.to_dict()['pretrain'])}"]
    (key,) = [k for stage, k in ArtifactCache(cache).artifacts() if stage == "distilled"]
    assert key == plan.imports[0].key
    again = plan_external(cfg.to_dict(), env, ResultStore.read_only(cache / "results.sqlite"),
                          tmp_path / "myset", "import:myset")
    assert again.imports == [] and again.eval_units == []
    assert [s.status for s in again.steps if s.stage == "distilled"] == [CACHED]
