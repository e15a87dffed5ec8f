"""The Ray executor on a local two-CPU instance: same rows as in-process, retries, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from conftest import FAST_OVERRIDES

from mkdt_bench import api
from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError
from mkdt_bench.pipeline.executors import (
    RAY_HINT,
    InProcessExecutor,
    RayExecutor,
    Task,
    WorkerLost,
    map_units,
)
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.env import Env
from mkdt_bench.stages.evaluate import EvalUnit, run_eval

ray = pytest.importorskip("ray")

TESTS = str(Path(__file__).resolve().parent)
OVERRIDES = [*FAST_OVERRIDES, "methods.mkdt.iterations=3", "methods.mkdt.num_experts=3",
             "methods.mkdt.train_epochs=3"]


@pytest.fixture(scope="module")
def local_ray():
    # Workers import this module by name to run the test-only unit functions below.
    ray.init(num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": TESTS, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def die_once(marker: str, env: Env) -> str:
    """Kills its own worker process the first time (``marker`` does not exist yet)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def double_or_raise(x: int, env: Env) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return 2 * x


def fail_none_method(unit: object, env: Env) -> object:
    """run_eval, except that the evaluation units of the ``none`` method raise."""
    if isinstance(unit, EvalUnit) and unit.method == "none":
        raise KeyError("injected failure")
    return run_eval(unit, env)


class FailingNone:
    """Wraps an executor so that ``fail_none_method`` runs instead of run_eval."""

    def __init__(self, inner: RayExecutor) -> None:
        self.inner = inner

    def device_env(self, env):
        return self.inner.device_env(env)

    def run(self, tasks, env):
        tasks = [replace(t, fn=fail_none_method) if t.fn is run_eval else t for t in tasks]
        return self.inner.run(tasks, env)


def manifests(cache: Path, stage: str) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in (cache / "artifacts" / stage).glob("*/manifest.json")}


def accuracies(frame) -> dict[str, float]:
    return dict(zip(frame["cell_key"], frame["accuracy"]))


@pytest.fixture(scope="module")
def grids(local_ray, tmp_path_factory, fast_teacher_template):
    """The tiny quick grid in-process (cache A) and on Ray (cache B), from a stored teacher
    (the teacher trained on Ray: test_workers_killed_in_every_stage_...)."""
    root = tmp_path_factory.mktemp("grids")
    cfg = build_config("quick", flags={"methods": ["random", "mkdt", "none"], "seeds": [0, 1]},
                       overrides=OVERRIDES)
    out = {"cfg": cfg, "root": root}
    for name, executor in (("A", InProcessExecutor()), ("B", RayExecutor(num_cpus=2))):
        shutil.copytree(fast_teacher_template, root / name)
        out[name] = grid_rows(cfg, root / name, executor, root / f"{name}.sqlite")
    return out


@pytest.mark.slow
def test_ray_grid_matches_in_process(grids):
    a, b = grids["A"], grids["B"]
    assert len(a) == len(b) > 0
    assert set(a["status"]) == set(b["status"]) == {"ok"}
    assert accuracies(a) == accuracies(b)
    experts = manifests(grids["root"] / "B", "expert")
    assert len(experts) == 3  # the mkdt experts, shared by both seeds
    assert sorted(m["config"]["index"] for m in experts.values()) == [0, 1, 2]
    assert experts.keys() == manifests(grids["root"] / "A", "expert").keys()  # same cache keys
    # Trained as their own tasks, before any mkdt distillation started.
    distilled = [m for m in manifests(grids["root"] / "B", "distilled").values()
                 if m["config"]["method"] == "mkdt"]
    assert distilled
    assert max(m["created"] for m in experts.values()) < min(
        m["created"] - m["seconds"] for m in distilled)


@pytest.mark.slow
def test_failed_eval_unit_becomes_failed_rows(grids):
    cfg, root = grids["cfg"], grids["root"]
    frame = grid_rows(cfg, root / "B", FailingNone(RayExecutor()), root / "failing.sqlite")
    failed = frame[frame["status"] == "failed"]
    assert set(failed["method"]) == {"none"} and len(failed) > 0
    assert set(failed["error"]) == {"KeyError: 'injected failure'"}
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == len(frame) - len(failed) and accuracies(ok).items() <= accuracies(
        grids["B"]).items()
    # A rerun computes only the missing (failed) cells.
    rerun = grid_rows(cfg, root / "B", RayExecutor(), root / "failing.sqlite")
    assert set(rerun["status"]) == {"ok"} and accuracies(rerun) == accuracies(grids["B"])


def test_killed_worker_is_retried(local_ray, tmp_path):
    marker = str(tmp_path / "marker")
    env = Env(cache_dir=str(tmp_path))
    results = list(map_units(RayExecutor(retries=2), die_once, [marker], env))
    assert results == [(marker, "survived")]
    assert Path(marker).read_text() == "died"


def test_killed_worker_without_retries_is_a_failure(local_ray, tmp_path):
    marker = str(tmp_path / "marker")
    [(unit, result)] = map_units(RayExecutor(retries=0), die_once, [marker],
                                 Env(str(tmp_path)))
    assert unit == marker and isinstance(result, WorkerLost)  # a UserError: one line
    assert str(result).startswith("0: the Ray worker or node running it died, once")
    assert "\n" not in str(result)


def test_raising_unit_is_a_result_and_the_others_finish(local_ray, tmp_path):
    results = dict(map_units(RayExecutor(), double_or_raise, [1, 2, 3, 4],
                             Env(str(tmp_path))))
    assert {k: v for k, v in results.items() if k != 3} == {1: 2, 2: 4, 4: 8}
    assert isinstance(results[3], ValueError) and "three is not allowed" in str(results[3])


def test_in_process_executor_returns_exceptions(tmp_path):
    results = dict(map_units(InProcessExecutor(), double_or_raise, [2, 3], Env(str(tmp_path))))
    assert results[2] == 4 and isinstance(results[3], ValueError)


def test_without_ray_the_hint_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError) as info:
        RayExecutor()
    assert str(info.value) == RAY_HINT and "\n" not in RAY_HINT
    assert "pip install 'mkdt-bench[ray]'" in RAY_HINT


def test_a_cluster_that_does_not_answer_is_one_line():
    """Refused at once (``ray.init`` would retry for minutes), whether Ray runs here or not."""
    with pytest.raises(UserError) as info:
        RayExecutor(address="127.0.0.1:1")
    assert str(info.value).startswith("--ray-address 127.0.0.1:1: no Ray cluster answers")
    assert "\n" not in str(info.value)


def test_cli_with_a_cluster_that_does_not_answer_writes_nothing(tmp_path, cli_here):
    """Refused after planning, before the cache or the database is written (issue 29 §4)."""
    status, _, err = cli_here("run", "--executor", "ray", "--ray-address", "127.0.0.1:1",
                              "--methods", "random", "--seeds", "0", "--cache-dir",
                              str(tmp_path / "cache"), "--no-progress")
    assert status == 2, err
    assert err.strip().splitlines()[-1].startswith("error: --ray-address 127.0.0.1:1")
    assert not (tmp_path / "cache" / "results.sqlite").exists()
    assert not (tmp_path / "cache" / "artifacts").exists()


def test_cli_without_ray(tmp_path, cli_here, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # not installed
    status, _, err = cli_here("run", "--executor", "ray", "--cache-dir", str(tmp_path),
                              "--no-progress")
    assert status == 2
    assert err.strip() == f"error: {RAY_HINT}"


def test_cli_unknown_executor(tmp_path, cli_here):
    status, _, err = cli_here("run", "--executor", "nosuch", "--cache-dir", str(tmp_path))
    assert status == 2 and "invalid choice: 'nosuch'" in err


def sleep_then(seconds: float, env: Env) -> float:
    time.sleep(seconds)
    return time.time()


def finish_time(_: object, env: Env) -> float:
    return time.time()


def test_task_starts_when_its_inputs_exist(local_ray, tmp_path):
    """A dependant of a fast task finishes while an unrelated slow task still runs."""
    tasks = [Task("slow", sleep_then, 4.0), Task("fast", sleep_then, 0.1),
             Task("after-fast", finish_time, None, after=("fast",))]
    done = {t.key: r for t, r in RayExecutor().run(tasks, Env(str(tmp_path)))}
    assert done["fast"] <= done["after-fast"] < done["slow"]


def test_dependants_of_a_failed_task_are_not_run(tmp_path):
    tasks = [Task("bad", double_or_raise, 3), Task("child", double_or_raise, 1, after=("bad",)),
             Task("free", double_or_raise, 2)]
    done = {t.key: r for t, r in InProcessExecutor().run(tasks, Env(str(tmp_path)))}
    assert isinstance(done["bad"], ValueError) and done["child"] is done["bad"]
    assert done["free"] == 4


def test_ray_dependants_of_a_failed_task_get_its_error(local_ray, tmp_path):
    tasks = [Task("bad", double_or_raise, 3), Task("child", double_or_raise, 1, after=("bad",)),
             Task("free", double_or_raise, 2)]
    done = {t.key: r for t, r in RayExecutor().run(tasks, Env(str(tmp_path)))}
    assert isinstance(done["child"], ValueError) and "three" in str(done["child"])
    assert done["free"] == 4


# -- workers killed inside a grid (issue 29 §6) ---------------------------------------------

SMALL = {"methods": ["random", "none"], "seeds": [0], "fractions": [0.05]}


def dies_during(marker: str, fn: Callable[[object, Env], object], unit: object,
                env: Env) -> object:
    """``fn(unit, env)``; on the first attempt (no ``marker`` yet) its worker process is
    killed with SIGKILL half a second into the work, or as the work would return."""
    if Path(marker).exists():
        return fn(unit, env)
    Path(marker).write_text(str(os.getpid()))
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGKILL)).start()
    fn(unit, env)
    os.kill(os.getpid(), signal.SIGKILL)


class KillsWorkers:
    """Wraps an executor: the first task of each stage in ``stages`` (``teacher``,
    ``distilled``, ``encoder``, ``evaluate``) kills its worker on its first attempt."""

    def __init__(self, inner: RayExecutor, markers: Path, stages: tuple[str, ...]) -> None:
        self.inner, self.markers, self.stages = inner, markers, stages

    def device_env(self, env):
        return self.inner.device_env(env)

    def run(self, tasks, env):
        first = {}
        for task in tasks:
            first.setdefault(task.key.split(":")[0], task.key)
        victims = {first[stage] for stage in self.stages}
        self.markers.mkdir(parents=True, exist_ok=True)
        tasks = [replace(t, fn=partial(dies_during, str(self.markers / t.key.replace(":", "_")),
                                       t.fn)) if t.key in victims else t for t in tasks]
        return self.inner.run(tasks, env)


def holders_of(lock: Path) -> list[int]:
    """The processes that hold ``lock`` open (the producer of its artifact)."""
    out = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(lock) for fd in fd_dir.iterdir()):
                out.append(int(fd_dir.parent.name))
        except OSError:
            continue
    return out


def kill_producer(stage_dir: Path, stop: threading.Event) -> list[int]:
    """SIGKILLs the process that produces an artifact in ``stage_dir``, once one does."""
    killed: list[int] = []
    while not killed and not stop.wait(0.05):
        for lock in stage_dir.glob("*.lock"):
            for pid in holders_of(lock):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def grid_rows(cfg, cache: Path, executor, db: Path | None = None):
    """The grid's rows, its units run by ``executor`` on one thread each."""
    return api.run(cfg, cache_dir=cache, results_db=db, executor=executor, threads=1,
                   progress=False).frame


def grid(cache: Path, executor, db: Path | None = None):
    return grid_rows(build_config("quick", flags=SMALL, overrides=OVERRIDES), cache, executor, db)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fast_teacher_template):
    """The small grid's accuracies in-process from the stored teacher, which the killed
    grids train again (on Ray workers, on one thread each: the same weights)."""
    cache = tmp_path_factory.mktemp("uninterrupted") / "cache"
    shutil.copytree(fast_teacher_template, cache)
    return accuracies(grid(cache, InProcessExecutor()))


@pytest.mark.slow
def test_workers_killed_in_every_stage_are_retried_to_the_same_numbers(local_ray, tmp_path,
                                                                        uninterrupted):
    stages = ("teacher", "distilled", "encoder", "evaluate")
    frame = grid(tmp_path / "cache", KillsWorkers(RayExecutor(retries=1), tmp_path / "died",
                                                   stages))
    assert len(list((tmp_path / "died").iterdir())) == len(stages)  # each died once
    assert set(frame["status"]) == {"ok"}
    assert accuracies(frame) == uninterrupted
    assert not list((tmp_path / "cache" / "artifacts").rglob(".*.tmp"))


@pytest.mark.slow
def test_workers_killed_without_retries_lose_nothing_finished(local_ray, tmp_path,
                                                               uninterrupted):
    cache = tmp_path / "cache"
    # The teacher's worker killed from outside while it trains: the run stops in one line.
    stop = threading.Event()
    killer = ThreadWithResult(kill_producer, cache / "artifacts" / "teacher", stop)
    with pytest.raises(WorkerLost) as info:
        grid(cache, RayExecutor(retries=0))
    stop.set()
    assert killer.join() and "\n" not in str(info.value)
    assert str(info.value).startswith("teacher: the Ray worker or node running it died")
    assert "run the same command again" in str(info.value)
    finished = accuracies(ResultStore(cache / "results.sqlite").frame())
    assert finished.items() <= uninterrupted.items()  # rows stored before the stop are kept
    # A pre-training's worker killed: its cells fail in one line, every other cell is stored.
    frame = grid(cache, KillsWorkers(RayExecutor(retries=0), tmp_path / "died", ("encoder",)))
    failed = frame[frame["status"] == "failed"]
    assert len(failed) > 0 and (frame["status"] == "ok").sum() > 0
    assert all(error.startswith("WorkerLost: ") and "\n" not in error
               for error in failed["error"])
    ok = accuracies(frame[frame["status"] == "ok"])
    assert ok.items() <= uninterrupted.items()
    stored = ResultStore(cache / "results.sqlite").frame()
    created = dict(zip(stored["cell_key"], stored["created"]))
    # The rerun computes the rest: the same numbers as a run never killed, the cells that
    # finished before are not computed again.
    rerun = grid(cache, RayExecutor(retries=0))
    assert set(rerun["status"]) == {"ok"} and accuracies(rerun) == uninterrupted
    again = dict(zip(rerun["cell_key"], rerun["created"]))
    assert {key: again[key] for key in ok} == {key: created[key] for key in ok}
    assert not list((cache / "artifacts").rglob(".*.tmp"))


class ThreadWithResult(threading.Thread):
    """A daemon thread running ``fn(*args)``; :meth:`join` returns its result."""

    def __init__(self, fn, *args) -> None:
        super().__init__(daemon=True)
        self.fn, self.args, self.result = fn, args, None
        self.start()

    def run(self) -> None:
        self.result = self.fn(*self.args)

    def join(self, timeout: float | None = 60):
        super().join(timeout)
        return self.result
