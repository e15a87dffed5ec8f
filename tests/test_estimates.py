"""Estimates a user can plan with (``mkdt_bench.pipeline.costs``): a cold plan estimates every
step from a calibration of the machine; after one run, a grid that shares stages or differs in
one size option estimates every step, scaled from the measured unit costs in the right
direction; the total follows the executor's critical path; a hostile calibration file is
refused and made again. No assertion depends on how fast this machine is."""

from __future__ import annotations

import json
import math
import shutil
from contextlib import closing
from pathlib import Path

import pytest
from conftest import FAST_OVERRIDES

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import build_config
from mkdt_bench.pipeline.calibration import (
    CALIBRATION_FILE,
    MAX_BYTES,
    Calibration,
    read_calibration,
)
from mkdt_bench.pipeline.costs import ROUGH, critical_path
from mkdt_bench.pipeline.dryrun import plan_estimates, plan_seconds, render_plan
from mkdt_bench.pipeline.executors import InProcessExecutor, Task
from mkdt_bench.pipeline.plan import TO_COMPUTE, Plan
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.pipeline.run import run_plan
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.env import Env, cached_dataset

MKDT = ["methods.mkdt.width=8", "methods.mkdt.num_experts=2", "methods.mkdt.train_epochs=3",
        "methods.mkdt.expert_batch=16", "methods.mkdt.iterations=4",
        "methods.mkdt.syn_steps=2", "methods.mkdt.batch_syn=4", "methods.mkdt.eval_it=2",
        "methods.mkdt.lr_img=10.0"]
GRID = {"methods": ["random", "mkdt", "none"], "seeds": [0], "fractions": [0.05],
        "evaluators": ["knn"]}


def config(*overrides: str, **flags: object) -> dict:
    """The tiny grid on the quick preset's teacher as the suite trains it once a session."""
    return build_config("quick", {**GRID, **flags},
                        [*FAST_OVERRIDES, *MKDT, *overrides]).to_dict()


def estimated(cache_dir: Path, cfg: dict) -> tuple[Plan, dict, Calibration]:
    """The grid's plan and the estimate of every step to compute, writing nothing."""
    env = Env(cache_dir=str(cache_dir), progress=False, threads=1)
    store = ResultStore.read_only(cache_dir / "results.sqlite")
    cache = ArtifactCache(cache_dir, create=False)
    plan = plan_grid(cfg, env, store, None, cache)
    dataset = cached_dataset(cfg["run"]["dataset"], env.data_root, env.cache_dir)
    calibration = Calibration(cache_dir, env.torch_device)
    return plan, plan_estimates(plan, cache, store, dataset, calibration), calibration


def step(plan: Plan, stage: str, label: str):
    return next(s for s in plan.to_compute if s.stage == stage and s.label.startswith(label))


def seconds_of(cache_dir: Path, stage: str, key: str) -> float:
    seconds = ArtifactCache(cache_dir, create=False).manifest(stage, key).seconds
    assert seconds is not None
    return seconds


def test_a_cold_plan_estimates_every_step_and_writes_nothing(tmp_path):
    cache_dir = tmp_path / "cache"
    plan, estimates, calibration = estimated(cache_dir, config())
    stages = {s.stage for s in plan.to_compute}
    assert stages == {"teacher", "expert", "distilled", "encoder", "cell"}
    assert all(estimates[s.stage, s.key].seconds is not None for s in plan.to_compute)
    assert all(estimates[s.stage, s.key].basis.startswith(ROUGH) for s in plan.to_compute)
    mkdt = estimates["distilled", step(plan, "distilled", "mkdt").key]
    random = estimates["distilled", step(plan, "distilled", "random").key]
    assert mkdt.seconds > 0 and random.seconds == 0.0  # a selection passes nothing
    text = render_plan(plan, estimates, config(), "cpu")
    times = [line.split()[3] for line in text.split("total:")[0].splitlines()
             if TO_COMPUTE in line]
    assert len(times) == len(plan.to_compute) and "?" not in times
    assert "not in the total" not in text
    assert calibration.timed and not cache_dir.exists()  # a dry run keeps what it timed


@pytest.fixture(scope="module")
def ran(tmp_path_factory, fast_teacher_template) -> Path:
    """A cache and database after one run of the tiny grid (on the session's teacher), its
    calibration stored."""
    cache_dir = tmp_path_factory.mktemp("estimates") / "cache"
    shutil.copytree(fast_teacher_template, cache_dir)
    cfg = config()
    plan, _, calibration = estimated(cache_dir, cfg)
    env = Env(cache_dir=str(cache_dir), progress=False, threads=1)
    ArtifactCache(cache_dir)
    calibration.save()
    with closing(ResultStore(cache_dir / "results.sqlite")) as store:
        frame = run_plan(plan, env, store, InProcessExecutor())
    assert (frame["status"] == "ok").all()
    return cache_dir


def test_the_same_grid_after_a_run_is_all_stored(ran):
    plan, estimates, _ = estimated(ran, config())
    assert plan.to_compute == [] and estimates == {}


def test_more_iterations_scale_the_measured_distillation(ran):
    """Only ``mkdt.iterations`` differs: the experts are stored, and MKDT's set is scaled
    from the measured one by 8/4 (its cost option), not a rough model or "?"."""
    cfg = config("methods.mkdt.iterations=8")
    plan, estimates, _ = estimated(ran, cfg)
    assert {s.stage for s in plan.to_compute} == {"distilled", "encoder", "cell"}
    assert all(estimates[s.stage, s.key].seconds is not None for s in plan.to_compute)
    cache = ArtifactCache(ran, create=False)
    stored = next(key for stage, key in cache.artifacts() if stage == "distilled"
                  and cache.manifest(stage, key).config["method"] == "mkdt")
    estimate = estimates["distilled", step(plan, "distilled", "mkdt").key]
    assert estimate.basis.startswith("scaled")
    assert math.isclose(estimate.seconds, 2 * seconds_of(ran, "distilled", stored))
    encoder = estimates["encoder", step(plan, "encoder", "mkdt").key]
    assert not encoder.basis.startswith(ROUGH)  # another set of the same size and data


def test_more_pretraining_epochs_and_a_smaller_budget_scale_the_encoders(ran):
    cache = ArtifactCache(ran, create=False)
    measured = {cache.manifest("distilled", cache.manifest("encoder", key).inputs[
        "distilled"]).extra["method"]: cache.manifest("encoder", key).seconds
        for stage, key in cache.artifacts() if stage == "encoder"}
    epochs = "pretrain.epochs=4"  # FAST_OVERRIDES: 2
    plan, estimates, _ = estimated(ran, config(epochs))
    assert all(estimates[s.stage, s.key].seconds is not None for s in plan.to_compute)
    for method in ("random", "mkdt"):
        encoder = estimates["encoder", step(plan, "encoder", method).key]
        assert encoder.basis.startswith("scaled")
        per_unit = sum(measured[m] for m in ("random", "mkdt")) / 2  # both: 143 images
        assert math.isclose(encoder.seconds, 2 * per_unit)

    plan, estimates, _ = estimated(ran, config(budget="5%"))  # smaller sets than 10 %
    assert all(estimates[s.stage, s.key].seconds is not None for s in plan.to_compute)
    encoder = estimates["encoder", step(plan, "encoder", "random").key]
    assert encoder.basis.startswith("scaled") and plan.budget < 143
    assert math.isclose(encoder.seconds,
                        plan.budget / 143 * (measured["random"] + measured["mkdt"]) / 2)


def test_another_teacher_epoch_count_scales_the_teacher(ran):
    cache = ArtifactCache(ran, create=False)
    teacher = next(key for stage, key in cache.artifacts() if stage == "teacher")
    representations = next(key for stage, key in cache.artifacts()
                           if stage == "representations")
    measured = seconds_of(ran, "teacher", teacher) + seconds_of(ran, "representations",
                                                                representations)
    plan, estimates, _ = estimated(ran, config("teacher.epochs=3"))
    estimate = estimates["teacher", step(plan, "teacher", "").key]
    assert estimate.basis.startswith("scaled")
    # 3 epochs x 2 views + a third for the representations, against 1 x 2 + a third
    assert math.isclose(estimate.seconds, measured * (3 * 2 + 1 / 3) / (1 * 2 + 1 / 3))
    assert all(estimates[s.stage, s.key].seconds is not None for s in plan.to_compute)


def test_the_critical_path_of_two_workers_is_shorter_than_the_sum(ran):
    cfg = config(seeds=[0, 1, 2])  # 6 new encoders and their cells, independent
    plan, estimates, _ = estimated(ran, cfg)
    serial = sum(estimates[s.stage, s.key].seconds for s in plan.to_compute)
    assert math.isclose(plan_seconds(plan, estimates, 1), serial)
    assert plan_seconds(plan, estimates, 2) < serial
    text = render_plan(plan, estimates, cfg, "cpu", workers=2)
    assert "on 2 workers (the critical path;" in text


def tasks(*spec: tuple[str, tuple[str, ...], bool]) -> list[Task]:
    return [Task(key, print, None, after, alone) for key, after, alone in spec]


def test_critical_path_follows_the_executors_schedule():
    independent = tasks(*((k, (), False) for k in "abcd"))
    seconds = dict.fromkeys("abcd", 1.0)
    assert critical_path(independent, seconds, 1) == 4.0
    assert critical_path(independent, seconds, 2) == 2.0
    chain = tasks(("a", (), False), ("b", ("a",), False), ("c", ("b",), False))
    assert critical_path(chain, seconds, 4) == 3.0
    # the teacher runs alone, first; then two workers share what waits for it
    grid = tasks(("t", (), True), ("a", ("t",), False), ("b", ("t",), False),
                 ("c", ("a",), False))
    assert critical_path(grid, {"t": 5.0, "a": 2.0, "b": 1.0, "c": 2.0}, 2) == 9.0
    # list scheduling: a free worker takes the first ready task in the given order
    assert critical_path(tasks(("a", (), False), ("b", (), False), ("c", (), False)),
                         {"a": 3.0, "b": 1.0, "c": 1.0}, 2) == 3.0


@pytest.mark.parametrize("content", [
    b"not json", b"[1, 2]", b'{"x": NaN}', b'{"x": -1.0}', b'{"x": 0}', b'{"x": "1"}',
    b'{"x": true}', b'{"x": 1e999}', b'{"x": {"y": 1}}', b"[" * 100_000,
    b'{"x": 1.0, "pad": "' + b"a" * MAX_BYTES + b'"}'])
def test_a_hostile_calibration_file_is_refused_and_made_again(tmp_path, content):
    import torch

    path = tmp_path / CALIBRATION_FILE
    path.write_bytes(content)
    assert read_calibration(path) is None
    calibration = Calibration(tmp_path, _cpu(), threads=1)
    assert calibration.seconds == {}
    threads = torch.get_num_threads()
    seconds = calibration.per_image("convnet", {"width": 4}, 1, 8, 4)
    assert seconds > 0 and calibration.timed and torch.get_num_threads() == threads
    assert ", 1 thread |" in calibration.name("convnet", {"width": 4}, 1, 8, 4)
    calibration.save()
    stored = json.loads(path.read_text())
    assert stored == {calibration.name("convnet", {"width": 4}, 1, 8, 4): seconds}
    assert read_calibration(path) == stored


def test_a_calibration_is_read_back_and_a_symbolic_link_is_not(tmp_path):
    calibration = Calibration(tmp_path, _cpu())
    name = calibration.name("convnet", {}, 3, 8, 64)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({name: 0.25}))
    again = Calibration(tmp_path, _cpu())
    assert again.per_image("convnet", {}, 3, 8, 64) == 0.25 and not again.timed
    again.save()  # nothing timed: nothing written
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text()) == {name: 0.25}
    link = tmp_path / "other"
    link.mkdir()
    (link / CALIBRATION_FILE).symlink_to(tmp_path / CALIBRATION_FILE)
    assert Calibration(link, _cpu()).seconds == {}


def _cpu():
    import torch

    return torch.device("cpu")


def test_a_set_stored_before_the_one_key_config_scales_too():
    """Manifests written before issue 30 hold every option and an empty ``code``; their
    work has the shape of the key config a plan now gives its step."""
    from mkdt_bench.methods import METHODS
    from mkdt_bench.pipeline.costs import distill_work

    options = METHODS.get("mkdt")(iterations=100).config
    old = {"method": "mkdt", "options": options, "budget": 143, "seed": 0, "code": {}}
    new = {"method": "mkdt", "options": {**METHODS.get("mkdt").key_options(options),
                                         "iterations": 200}, "budget": 143, "seed": 0}
    inputs = {"images": "0123abcd"}
    assert distill_work(old, inputs).shape == distill_work(new, inputs).shape
    assert distill_work(new, inputs).size == 2 * distill_work(old, inputs).size
    other = {**new, "budget": 71}  # not a cost option of mkdt: other work
    assert distill_work(other, inputs).shape != distill_work(new, inputs).shape
