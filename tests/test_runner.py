"""The grid runner: the training pool (``run.train_pool``) and methods that need the teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import BenchConfig, build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.distill import pool_indices
from mkdt_bench.stages.env import Env

FAST = ["teacher.arch='convnet:width=16'", "teacher.epochs=1", "teacher.proj_dim=32",
        "teacher.batch_size=128", "pretrain.epochs=1",
        "methods.krrst.width=8", "methods.krrst.pool_size=2",
        "methods.krrst.online_iterations=3", "methods.krrst.outer_steps=3",
        "methods.krrst.real_batch=64", "methods.krrst.snapshot_every=3"]


def tiny_run(cfg: BenchConfig, cache: Path, db: Path) -> pd.DataFrame:
    """The grid's rows, run in this process on one thread as the library runs it."""
    return api.run(cfg, cache_dir=cache, results_db=db, executor="inprocess", threads=1,
                   progress=False).frame


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
    plan = plan_grid(cfg.to_dict(), env, store)
    assert plan.budget == 40  # 10 % of the 400-image pool, not of the 1,437 images
    assert {u.inputs.pool for u in plan.distill_units} == {400}
    frame = tiny_run(cfg, tmp_path / "cache", tmp_path / "results.sqlite")
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


def test_cache_prune_keeps_what_rows_use(tmp_path):
    cache_dir = tmp_path / "cache"
    cfg = build_config(flags={"methods": ["random", "none"], "seeds": [0],
                              "fractions": [0.05]}, overrides=FAST[:5])
    tiny_run(cfg, cache_dir, cache_dir / "results.sqlite")
    cache = ArtifactCache(cache_dir)
    used = cache.artifacts()
    stray = cache.get_or_create("distilled", "0123456789abcdef",
                                lambda tmp: (tmp / "x.pt").write_bytes(b"x" * 2048) and None)
    aside = cache.path("encoder", "feedface.corrupt-1")
    aside.mkdir(parents=True)

    dry = cli("cache", "prune", "--cache-dir", str(cache_dir))
    assert dry.returncode == 0, dry.stderr
    assert f"would remove: {stray}" in dry.stdout and f"would remove: {aside}" in dry.stdout
    assert dry.stdout.count("would remove") == 2 and "dry run" in dry.stdout
    assert stray.is_dir() and aside.is_dir()

    applied = cli("cache", "prune", "--apply", "--cache-dir", str(cache_dir))
    assert applied.returncode == 0 and applied.stdout.count("removed: ") == 2
    assert not stray.exists() and not aside.exists() and cache.artifacts() == used
    before = {p: p.stat().st_mtime for p in (cache_dir / "artifacts").rglob("manifest.json")}
    tiny_run(cfg, cache_dir, cache_dir / "results.sqlite")  # nothing to recompute
    assert {p: p.stat().st_mtime for p in (cache_dir / "artifacts").rglob("manifest.json")} \
        == before


def test_cache_prune_needs_the_database(tmp_path):
    (tmp_path / "artifacts").mkdir()
    out = cli("cache", "prune", "--cache-dir", str(tmp_path))
    assert out.returncode == 2 and "results database" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args], capture_output=True,
                          text=True, timeout=300)


def _digits_set(directory, seed: int = 0) -> DistilledSet:
    digits = load_dataset("digits")
    idx = torch.randperm(len(digits.train_images), generator=torch.Generator().manual_seed(seed))
    images = digits.normalized("train")[idx[:30]]
    distilled = DistilledSet(images=images, targets=torch.randn(30, 5), lr=None,
                             source="digits", mean=digits.mean, std=digits.std,
                             method="external")
    distilled.save(directory)
    return distilled


def test_eval_a_stored_set_without_teacher(tmp_path):
    _digits_set(tmp_path / "myset")
    args = ("eval", "--distilled", str(tmp_path / "myset"), "--seeds", "0,1", "--fractions",
            "0.05", "--set", "pretrain.epochs=1", "--no-progress", "--cache-dir",
            str(tmp_path / "cache"))
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    rows = [ln for ln in first.stdout.splitlines() if ln.startswith("| import:myset")]
    assert len(rows) == 1 and "±" in rows[0]
    assert not (tmp_path / "cache" / "artifacts" / "teacher").exists()  # no teacher trained
    again = cli(*args)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert "2 cells" in again.stderr


def test_import_method_in_a_grid_equals_eval(tmp_path):
    _digits_set(tmp_path / "myset")
    cfg = build_config(flags={"methods": [f"import:{tmp_path / 'myset'}"], "seeds": [0],
                              "fractions": [0.05], "teacher_row": False},
                       overrides=FAST[:5])
    frame = tiny_run(cfg, tmp_path / "cache", tmp_path / "results.sqlite")
    assert (frame["status"] == "ok").all() and frame["budget"].tolist() == [143]
    cache = ArtifactCache(tmp_path / "cache")
    (stage, key), = [a for a in cache.artifacts() if a[0] == "distilled"]
    assert torch.equal(DistilledSet.load(cache.path(stage, key)).images,
                       DistilledSet.load(tmp_path / "myset").images)


def test_divergence_fails_its_cells_and_the_grid_finishes(tmp_path):
    cache = tmp_path / "cache"
    sets = [f"--set={o}" for o in FAST[:5]] + [
        "--set=methods.mkdt.width=8", "--set=methods.mkdt.num_experts=2",
        "--set=methods.mkdt.train_epochs=3", "--set=methods.mkdt.iterations=30",
        "--set=methods.mkdt.eval_it=5", "--set=methods.mkdt.lr_img=1e30"]
    out = cli("run", "--methods", "random,mkdt", "--seeds", "0", "--fractions", "0.05",
              "--no-progress", "--cache-dir", str(cache), *sets)
    assert out.returncode == 1, out.stderr  # a failed cell, not bad input
    assert "mkdt diverged at iteration" in out.stderr and "lower lr_img (now 1e+30)" in out.stderr
    rows = {ln.split("|")[1].strip(): ln.split("|")[2].strip()
            for ln in out.stdout.splitlines() if ln.startswith("| ")}
    assert rows["mkdt"] == "failed"  # one seed: the others are values without "± 0.00"
    assert float(rows["random"]) > 0 and float(rows["teacher"]) > 0
    snapshot = next((cache / "scratch" / "distilled").glob("*/mkdt_state.pt"))
    assert torch.isfinite(torch.load(snapshot, weights_only=True)["images"]).all()
    store = ResultStore(cache / "results.sqlite").frame()
    failed = store[store["status"] == "failed"]
    assert list(failed["method"]) == ["mkdt"]
    assert failed["error"].iloc[0].startswith("UserError: mkdt diverged at iteration")
    table = cli("table", "--cache-dir", str(cache))
    assert "| mkdt " in table.stdout and "failed" in table.stdout


def test_missing_task_is_na_and_the_rest_of_the_grid_runs(tmp_path):
    """A downstream task without files gives ``n/a (missing: <path>)`` cells, exit 0, and
    the cells of the tasks that are there; the n/a cells are not done, so a rerun retries
    them."""
    from test_finegrained import make_cub

    cache, data = tmp_path / "cache", tmp_path / "data"
    args = ("run", "--methods", "random", "--seeds", "0", "--fractions", "0.05", "--tasks",
            "digits,cub2011", "--data-root", str(data), "--no-progress", "--cache-dir",
            str(cache), *[f"--set={o}" for o in FAST[:5]])
    out = cli(*args)
    assert out.returncode == 0, out.stderr
    missing = data / "CUB_200_2011" / "images.txt"
    assert f"n/a (missing: {missing})" in out.stdout
    assert "4 cells (0 failed, 2 n/a for missing data)" in out.stderr
    frame = ResultStore(cache / "results.sqlite").frame()
    assert set(frame.loc[frame["task"] == "digits", "status"]) == {"ok"}
    assert set(frame.loc[frame["task"] == "cub2011", "status"]) == {"missing"}
    store = ResultStore(cache / "results.sqlite")
    assert not any(store.has(k) for k in frame.loc[frame["task"] == "cub2011", "cell_key"])

    # CUB's images are RGB, digits' grey: once present, the channel check refuses the grid.
    make_cub(data)
    again = cli(*args)
    assert again.returncode == 2 and "task 'cub2011' has 3-channel images" in again.stderr


def test_rows_record_the_compute_budget(tmp_path):
    cfg = build_config(flags={"methods": ["random", "krrst"], "seeds": [0], "fractions": [0.05],
                              "train_pool": 400, "budget": "10%"}, overrides=FAST)
    frame = tiny_run(cfg, tmp_path / "cache", tmp_path / "results.sqlite")
    timings = {m: json.loads(t) for m, t in zip(frame["method"], frame["timings"])}
    for method in ("random", "krrst"):
        t = timings[method]
        assert t["storage_bytes"] > 40 * 64 * 4  # 40 images of 1x8x8 floats and more
        assert t["teacher_s"] > 0 and t["teacher_peak_mib"] > 0
        assert t["distill_s"] >= 0 and t["distill_peak_mib"] > 0
        assert t["pretrain_steps"] == 1 and t["evaluate_s"] > 0  # 40 images, batch 256, 1 ep
        assert t["set_images"] == 40
    assert timings["krrst"]["distill_s"] > timings["random"]["distill_s"]
    assert set(timings["teacher"]) == {"teacher_s", "teacher_peak_mib", "evaluate_s"}


def test_a_cell_another_run_stored_after_planning_is_not_computed_again(tmp_path, monkeypatch):
    """Two ``run`` processes on one database: the cell the other stored while this one was
    pre-training is taken from the database, not evaluated a second time."""
    from dataclasses import replace

    from mkdt_bench.evaluators.linear import LinearProbe
    from mkdt_bench.pipeline.run import run_plan
    from mkdt_bench.results import ResultRow

    cfg = build_config(flags={"methods": ["random"], "seeds": [0], "fractions": [0.01, 0.05],
                              "teacher_row": False}, overrides=FAST[:5]).to_dict()
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore(tmp_path / "results.sqlite")
    plan = plan_grid(cfg, env, store)
    (unit,) = plan.eval_units
    other = next(c for c in unit.cells if c.fraction == 0.05)
    ResultStore(tmp_path / "results.sqlite").add([ResultRow(
        other.key, "digits", "random", unit.budget, unit.arch, "linear", "digits", 0.05, 0,
        12.34)])
    calls = []
    evaluate = LinearProbe.evaluate
    monkeypatch.setattr(LinearProbe, "evaluate",
                        lambda self, *a, **k: calls.append(a[2]) or evaluate(self, *a, **k))
    frame = run_plan(plan, env, store).set_index("fraction")
    assert calls == [0.01]
    assert frame.loc[0.05, "accuracy"] == 12.34 and frame.loc[0.01, "accuracy"] != 12.34
    # a row stored before the plan was made is the planner's business, not skipped here
    calls.clear()
    run_plan(replace(plan_grid(cfg, env, store), eval_units=plan.eval_units,
                     planned_at=plan.planned_at + 1e6), env, store)
    assert calls == [0.01, 0.05]
