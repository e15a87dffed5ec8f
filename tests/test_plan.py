"""Planning before work: ``plan_grid`` produces nothing, ``run --dry-run`` lists the resolved
config and every step (cached or to compute, with measured estimates) on a cold and a warm
cache and writes nothing, and a run estimated at hours is announced with a warning."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest
from test_bad_input import image_tree

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.cli import main
from mkdt_bench.config import build_config
from mkdt_bench.pipeline.costs import Estimate
from mkdt_bench.pipeline.dryrun import WARN_SECONDS, cost_warning, render_config
from mkdt_bench.pipeline.plan import CACHED, TEACHER, TO_COMPUTE
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.env import Env

TINY = ["--threads", "1", "--methods", "random,none", "--fractions", "5%",
        "--set", "teacher.arch=convnet:width=8", "--set", "teacher.epochs=1",
        "--set", "teacher.proj_dim=16", "--set", "teacher.batch_size=128",
        "--set", "pretrain.epochs=1", "--no-progress"]


def files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def test_plan_grid_produces_nothing(tmp_path):
    """Planning derives every key without training the teacher (it used to train it)."""
    cfg = build_config(flags={"methods": ["random", "mkdt"], "seeds": [0]},
                       overrides=["teacher.arch='convnet:width=8'", "teacher.epochs=1"]
                       ).to_dict()
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    plan = plan_grid(cfg, env, ResultStore.read_only(tmp_path / "r.sqlite"))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r.sqlite").exists()
    teacher = plan.steps[0]
    assert teacher.stage == TEACHER and teacher.status == TO_COMPUTE
    assert plan.teacher is not None and plan.teacher.teacher_key == teacher.key
    stages = [s.stage for s in plan.steps]
    assert stages.count("expert") == cfg["methods"]["mkdt"]["num_experts"]
    assert stages.count("distilled") == 2 and stages.count("encoder") == 2
    assert {s.status for s in plan.steps} == {TO_COMPUTE}


def test_dry_run_on_a_cold_cache_writes_nothing(tmp_path, capsys):
    """A folder data set, a cache that does not exist: the plan is printed, and neither the
    cache (no decoded-data copy, no artifacts) nor the database comes into being."""
    folder = image_tree(tmp_path / "images")
    cache = tmp_path / "cache"
    code = main(["run", "--dry-run", "--dataset", f"imagefolder:{folder}", "--cache-dir",
                 str(cache), "--budget", "2", "--seeds", "0", *TINY, "--fractions", "50%",
                 "--set", "teacher.batch_size=4"])  # the folder's 6 images hold one batch
    out = capsys.readouterr().out
    assert code == 0
    assert not cache.exists()
    config = tomllib.loads(out.split("# plan:")[0])
    assert config["run"]["budget"] == "2" and config["teacher"]["arch"] == "convnet:width=8"
    assert "does not exist yet" in out and "budget 2 = 2 images a set" in out
    table = out.split("# plan:")[1]
    assert table.count(TO_COMPUTE) >= 1 + 2 + 2 + 3  # teacher, 2 sets, 2 encoders, 3 cells
    assert CACHED not in table.split("total:")[0]
    assert "rough model [1]" in table and "[1] teacher convnet:width=8" in table
    # nothing measured yet, and still every step has an estimate (tests/test_estimates.py)
    assert "no measurement" not in table and "not in the total" not in table


@pytest.mark.slow
def test_dry_run_on_a_warm_cache(tmp_path, capsys):
    """After a run: the same grid is all cached; a grid with a new seed lists that seed's
    steps as to compute with estimates measured by the run; nothing is written."""
    cache = tmp_path / "cache"
    args = ["run", "--cache-dir", str(cache), "--seeds", "0", "--budget", "2 %", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Table: ") and "budget 28 images (1.95 %)" in out
    assert "1,437 training images" in out
    before = files(cache)
    rows = sqlite3.connect(cache / "results.sqlite").execute(
        "SELECT COUNT(*) FROM results").fetchone()[0]

    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out.split("# plan:")[1]
    assert "total: 0 steps to compute (" in plan and TO_COMPUTE not in plan.split("total:")[0]

    assert main([*args, "--seeds", "0,1", "--dry-run"]) == 0
    plan = capsys.readouterr().out.split("# plan:")[1]
    new = [line for line in plan.splitlines() if TO_COMPUTE in line and "seed 1" in line]
    # 2 encoders and 3 cells (random, none, teacher) of seed 1; the quick preset distils
    # each method once (shared_distillation), so there is no new set
    assert len(new) == 2 + 3 and len(new) == plan.split("total:")[0].count(TO_COMPUTE), plan
    assert all("measured (" in line for line in new), plan
    assert "estimated time on cpu" in plan and "no measurement" not in plan

    # another teacher seed: the teacher is to compute, and the dry run does not train it
    assert main([*args, "--set", "teacher.seed=1", "--dry-run"]) == 0
    plan = capsys.readouterr().out.split("# plan:")[1]
    teacher = next(line for line in plan.splitlines() if line.startswith("teacher "))
    assert teacher.split()[:3] == ["teacher", "to", "compute"]
    assert files(cache) == before
    assert sqlite3.connect(cache / "results.sqlite").execute(
        "SELECT COUNT(*) FROM results").fetchone()[0] == rows
    assert ArtifactCache(cache, create=False).artifacts() == sorted(
        (p.parent.parent.name, p.parent.name) for p in cache.glob("artifacts/*/*/manifest.json"))


def test_dry_run_warns_when_the_teacher_takes_hours(tmp_path, capsys):
    code = main(["run", "--dry-run", "--cache-dir", str(tmp_path), "--seeds", "0", *TINY,
                 "--set", "teacher.epochs=2000000"])
    out = capsys.readouterr().out
    assert code == 0 and not any(tmp_path.iterdir())
    warning = out[out.index("warning: "):]
    assert "the largest step is teacher convnet:width=8" in warning
    assert "rough model" in warning and "--set teacher.epochs=" in warning
    assert "--teacher-checkpoint" in warning


def test_a_run_warns_before_its_work(tmp_path, capsys, monkeypatch):
    from mkdt_bench import api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "run_plan", interrupted)
    code = main(["run", "--cache-dir", str(tmp_path), "--seeds", "0", *TINY,
                 "--set", "teacher.epochs=2000000"])
    err = capsys.readouterr().err
    assert code == 130 and err.index("warning: ") < err.index("interrupted")


def test_cost_warning_names_settings_that_fit():
    cfg = build_config(flags={"seeds": [0]}).to_dict()  # the default 200-epoch ResNet-18
    env_cache = Path("/nonexistent")
    plan = plan_grid(cfg, Env(cache_dir=str(env_cache), progress=False),
                     ResultStore.read_only(env_cache / "r.sqlite"))

    class Cifar:
        channels, image_size = 3, 32

    teacher = plan.steps[0]
    estimates = {(teacher.stage, teacher.key): Estimate(40 * 3600.0, None, "measured (1 like it)")}
    warning = cost_warning(plan, estimates, cfg, Cifar(), "cpu")
    assert "--preset cifar10-cpu" in warning and "--set teacher.epochs=5" in warning
    already = cost_warning(plan, estimates, cfg, Cifar(), "cpu", preset="cifar10-cpu")
    assert "--preset" not in already and "--set teacher.epochs=5" in already
    assert cost_warning(plan, {(teacher.stage, teacher.key): Estimate(WARN_SECONDS / 2)}, cfg,
                        Cifar(), "cpu") is None


def test_rendered_config_reads_back_as_the_same_preset(tmp_path):
    cfg = build_config("cifar10-cpu",
                       overrides=["teacher.epochs=7", "methods.mkdt.lr_img=1e-05"]).to_dict()
    preset = tmp_path / "resolved.toml"
    preset.write_text(render_config(cfg))
    assert build_config(str(preset)).to_dict() == cfg


def test_every_stage_keeps_its_cache_key(tmp_path):
    """The keys of a fixed grid, as the code before the stages' key functions computed them:
    stored teachers, representations, expert trajectories, sets, encoders and cells stay
    valid (a bf16 run names the sets of methods that use autocast)."""
    cfg = build_config(flags={"methods": ["random", "mkdt"], "seeds": [1], "archs": ["convnet"],
                              "evaluators": ["linear"], "fractions": [0.05]},
                       overrides=["teacher.arch='convnet:width=8'", "teacher.epochs=1",
                                  "methods.mkdt.num_experts=2", "run.train_pool=500"]).to_dict()
    store = ResultStore.read_only(tmp_path / "r.sqlite")
    plan = plan_grid(cfg, Env(cache_dir=str(tmp_path / "cache"), progress=False), store)
    assert [(s.stage, s.label, s.key) for s in plan.steps] == [
        (TEACHER, "convnet:width=8 (barlow_twins, 1 epoch) + representations",
         "2affdef33521e20f"),
        ("expert", "mkdt expert 1/2", "cb635aec3a557c48"),
        ("expert", "mkdt expert 2/2", "51097a4b763c95f4"),
        ("distilled", "random seed 1 (50 images)", "7c0acf16948b705b"),
        ("distilled", "mkdt seed 1 (50 images)", "0ff0d6222c603153"),
        ("encoder", "random convnet seed 1", "ec6d11d60e462fc0"),
        ("encoder", "mkdt convnet seed 1", "59801367f151e6ee"),
        ("cell", "random convnet seed 1: linear digits @ 5%", "58013acd2342bdd9"),
        ("cell", "mkdt convnet seed 1: linear digits @ 5%", "a0f3bee4b69a6624"),
        ("cell", "teacher convnet:width=8 seed 1: linear digits @ 5%", "2ca483779ce29e31")]
    assert plan.teacher is not None and plan.teacher.representations_key == "6691813cab6dac26"
    bf16 = plan_grid(cfg, Env(cache_dir=str(tmp_path / "cache"), progress=False,
                              precision="bf16"), store)
    assert [s.key for s in bf16.steps if s.stage == "distilled"] == ["7c0acf16948b705b",
                                                                       "f891952a09458a1b"]
