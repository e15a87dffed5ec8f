"""The local worker-process executor: same rows as in-process, dependencies, failures, and
the command line's choice of executor."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_OVERRIDES

from mkdt_bench import api
from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError
from mkdt_bench.pipeline.executors import InProcessExecutor, ProcessExecutor, Task, choose
from mkdt_bench.stages.env import Env, prepare_threads

OVERRIDES = [*FAST_OVERRIDES, "methods.mkdt.iterations=3", "methods.mkdt.num_experts=3",
             "methods.mkdt.train_epochs=3"]


def double_or_raise(x: int, env: Env) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return 2 * x


def sleep_then(seconds: float, env: Env) -> float:
    time.sleep(seconds)
    return time.time()


def pid_and_time(_: object, env: Env) -> tuple[int, float, int]:
    """Its process, the time, and the torch threads it runs on (set as every unit does)."""
    import torch

    prepare_threads(env)
    return os.getpid(), time.time(), torch.get_num_threads()


def die(_: object, env: Env) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run(executor, tasks, tmp_path: Path, threads: int = 0) -> dict:
    return {t.key: r for t, r in executor.run(tasks, Env(str(tmp_path), threads=threads))}


@pytest.mark.slow
def test_grid_matches_in_process_with_one_thread(tmp_path, fast_teacher_template):
    cfg = build_config("quick", flags={"methods": ["random", "mkdt", "none"], "seeds": [0, 1]},
                       overrides=OVERRIDES)
    frames = {}
    for name, executor in (("here", InProcessExecutor()), ("pool", ProcessExecutor(2, 1))):
        shutil.copytree(fast_teacher_template, tmp_path / name)
        frames[name] = api.run(cfg, cache_dir=tmp_path / name,
                               results_db=tmp_path / f"{name}.sqlite", executor=executor,
                               threads=1, progress=False).frame
    here, pool = frames["here"], frames["pool"]
    assert len(here) == len(pool) > 0 and set(pool["status"]) == {"ok"}
    assert dict(zip(here["cell_key"], here["accuracy"])) == \
        dict(zip(pool["cell_key"], pool["accuracy"]))


def test_units_run_in_workers_with_their_threads_and_alone_tasks_here(tmp_path):
    tasks = [Task("first", sleep_then, 1.0), Task("alone", pid_and_time, None, alone=True),
             Task("after", pid_and_time, None)]
    done = run(ProcessExecutor(2, threads=1), tasks, tmp_path, threads=2)
    assert done["alone"][0] == os.getpid() and done["alone"][2] == 2
    assert done["after"][0] != os.getpid() and done["after"][2] == 1
    assert done["first"] <= done["alone"][1] <= done["after"][1]


def test_task_starts_when_its_inputs_exist(tmp_path):
    """A dependant of a fast task finishes while an unrelated slow task still runs."""
    tasks = [Task("slow", sleep_then, 4.0), Task("fast", sleep_then, 0.1),
             Task("after-fast", pid_and_time, None, after=("fast",))]
    done = run(ProcessExecutor(2), tasks, tmp_path)
    assert done["fast"] <= done["after-fast"][1] < done["slow"]


def test_a_free_worker_takes_the_first_ready_task_in_list_order(tmp_path):
    """The list order is the priority: a task that becomes ready (MKDT's distillation once
    its experts exist) runs before tasks listed after it that were ready earlier (the
    pre-trainings of other sets), instead of queueing behind them."""
    tasks = [Task("expert", sleep_then, 0.5), Task("distill", pid_and_time, None,
                                                   after=("expert",)),
             *(Task(f"pretrain-{i}", sleep_then, 0.2) for i in range(3))]
    done = run(ProcessExecutor(1), tasks, tmp_path)
    assert done["expert"] <= done["distill"][1] < min(done[f"pretrain-{i}"] for i in range(3))


def test_failures_are_results_and_reach_the_dependants(tmp_path):
    tasks = [Task("bad", double_or_raise, 3), Task("child", double_or_raise, 1, after=("bad",)),
             Task("free", double_or_raise, 2)]
    done = run(ProcessExecutor(2), tasks, tmp_path)
    assert isinstance(done["bad"], ValueError) and "three is not allowed" in str(done["bad"])
    assert done["child"] is done["bad"] and done["free"] == 4


def test_a_dead_worker_fails_its_task_instead_of_hanging(tmp_path):
    done = run(ProcessExecutor(1), [Task("dies", die, None)], tmp_path)
    assert isinstance(done["dies"], Exception)
    assert "terminated abruptly" in str(done["dies"])


def test_a_dependency_listed_later_is_refused(tmp_path):
    tasks = [Task("child", double_or_raise, 1, after=("parent",)),
             Task("parent", double_or_raise, 2, after=("child",))]
    with pytest.raises(ValueError, match="'child' waits for a task not listed before it"):
        run(ProcessExecutor(1), tasks, tmp_path)


def test_bad_worker_counts_are_user_errors():
    with pytest.raises(UserError, match=r"ProcessExecutor\(workers=0\): workers must be 1 or"):
        ProcessExecutor(0)
    with pytest.raises(UserError, match=r"ProcessExecutor\(threads=0\): threads per worker"):
        ProcessExecutor(2, threads=0)


def chosen(device: str = "cpu", executor: str = "auto", **kw: Any) -> Any:
    """The executor ``mkdt-bench run --executor EXECUTOR`` with the flags ``kw`` runs on."""
    return choose(executor, device=device, **kw)


@pytest.mark.parametrize("cores, kw, expected", [
    ("2", {}, (ProcessExecutor, 2, 1)),
    ("1", {}, (InProcessExecutor,)),
    ("2", {"threads": 2}, (InProcessExecutor,)),
    ("4", {"threads": 2}, (ProcessExecutor, 2, 2)),
    ("4", {"workers": 2}, (ProcessExecutor, 2, 2)),
    ("2", {"executor": "inprocess"}, (InProcessExecutor,)),
    ("1", {"executor": "processes"}, (ProcessExecutor, 1, 1)),
])
def test_auto_executor_on_the_cpu(monkeypatch, tmp_path, cores, kw, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", cores)
    executor = chosen(**kw)
    assert type(executor) is expected[0]
    if expected[0] is ProcessExecutor:
        assert (executor.workers, executor.threads) == expected[1:]


def test_auto_executor_on_a_gpu_runs_in_process(monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert type(chosen("cuda")) is InProcessExecutor


@pytest.mark.parametrize("kw, message", [
    ({"workers": -1}, "--workers -1 must be 0 (one per core) or more"),
    ({"executor": "inprocess", "workers": 2}, "--workers 2 needs --executor processes or auto, "
                                              "not inprocess"),
    ({"executor": "processes", "ray_address": "auto"}, "--ray-address needs --executor ray, "
                                                       "not processes"),
])
def test_executor_flags_that_do_not_go_together(tmp_path, kw, message):
    with pytest.raises(UserError) as info:
        chosen(**kw)
    assert str(info.value) == message


INTERRUPTED = ["--methods", "random,mkdt,none", "--seeds", "0,1", "--fractions", "0.05",
               "--executor", "processes", "--workers", "2", "--threads", "1", "--no-progress",
               *[a for o in OVERRIDES for a in ("--set", o)]]


def default_sigint() -> None:
    """SIGINT as in a terminal's foreground job: a suite started in the background of a
    non-interactive shell inherits it ignored, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(cache: Path) -> subprocess.Popen:
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache))
    return subprocess.Popen([sys.executable, "-m", "mkdt_bench.cli", "run", *INTERRUPTED],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=default_sigint)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def reference_table(tmp_path_factory, fast_teacher_template) -> list[str]:
    cache = tmp_path_factory.mktemp("reference") / "cache"
    shutil.copytree(fast_teacher_template, cache)
    reference = start_run(cache)
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err
    return [r for r in out.splitlines() if r.startswith("|")]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["group", "driver"])
def test_interrupt_stops_the_workers_and_a_rerun_resumes(teacher_cache, reference_table,
                                                         target):
    """SIGINT to the process group (Ctrl-C) or to the main process alone (``kill -INT``)."""
    cache = teacher_cache
    victim = start_run(cache)
    deadline = time.time() + 300
    while not list((cache / "artifacts" / "expert").glob("*/manifest.json")):
        assert victim.poll() is None and time.time() < deadline, "no expert appeared"
        time.sleep(0.05)
    if target == "group":
        os.killpg(victim.pid, signal.SIGINT)
    else:
        victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert "interrupted; finished work is cached, rerun to resume" in err
    deadline = time.time() + 30
    while group_alive(victim.pid):
        assert time.time() < deadline, "worker processes outlived the interrupted run"
        time.sleep(0.1)

    rerun = start_run(cache)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert [r for r in out.splitlines() if r.startswith("|")] == reference_table
