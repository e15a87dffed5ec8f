"""The grid runner: the training pool (``run.train_pool``) and methods that need the teacher."""

from __future__ import annotations

import torch

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.results import ResultStore
from mkdt_bench.runner import Env, plan_grid, pool_indices, run_grid

FAST = ["teacher.arch='convnet:width=16'", "teacher.epochs=1", "teacher.proj_dim=32",
        "teacher.batch_size=128", "pretrain.epochs=1",
        "methods.krrst.width=8", "methods.krrst.pool_size=2",
        "methods.krrst.online_iterations=3", "methods.krrst.outer_steps=3",
        "methods.krrst.real_batch=64", "methods.krrst.snapshot_every=3"]


def test_pool_indices_are_a_fixed_sorted_subset():
    idx = pool_indices(100, 30)
    assert len(idx) == 30 and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, pool_indices(100, 30)) and len(set(idx.tolist())) == 30
    assert pool_indices(100, 0) is None and pool_indices(100, 100) is None


def test_pool_sets_the_budget_and_krrst_runs_in_the_grid(tmp_path):
    cfg = build_config(flags={"methods": ["random", "krrst"], "seeds": [0], "fractions": [0.05],
                              "train_pool": 400, "budget": "10%", "teacher_row": False},
                       overrides=FAST)
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore(tmp_path / "results.sqlite")
    plan = plan_grid(cfg, env, store)
    assert plan.budget == 40  # 10 % of the 400-image pool, not of the 1,437 images
    assert {u.inputs.pool for u in plan.distill_units} == {400}
    frame = run_grid(cfg, env, store)
    assert set(frame["method"]) == {"random", "krrst"} and (frame["status"] == "ok").all()
    cache = ArtifactCache(tmp_path / "cache")
    train = load_dataset("digits").normalized("train")
    pool = pool_indices(len(train), 400)
    sets = {u.method: DistilledSet.load(cache.path("distilled", u.key))
            for u in plan.distill_units}
    assert all(len(s) == 40 for s in sets.values())
    # indices are positions in the pool: the random set holds exactly those pool images
    chosen = pool[sets["random"].extra["indices"]]
    assert torch.equal(sets["random"].images, train[chosen])
    assert sets["krrst"].extra["indices"] == sets["random"].extra["indices"]  # same init
