"""Faults for real: a run killed with SIGKILL resumes to the same numbers; two runs share
one cache and one database without corruption or duplicate rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

FAST = ["--methods", "random,none", "--seeds", "0", "--set", "teacher.arch=convnet", "--set",
        "teacher.proj_dim=64", "--set", "teacher.batch_size=128", "--set",
        "pretrain.epochs=2", "--no-progress"]


def start(cache: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mkdt_bench.cli", "run", *FAST, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def table(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_kill_during_teacher_training_then_resume(tmp_path):
    reference = start(tmp_path / "ref", "--set", "teacher.epochs=3")
    ref_out, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err

    cache = tmp_path / "cut"
    victim = start(cache, "--set", "teacher.epochs=3")
    deadline = time.time() + 300
    snapshots = cache / "scratch" / "teacher"
    while not list(snapshots.glob("*/teacher_state.pt")):
        assert victim.poll() is None and time.time() < deadline, "no teacher snapshot appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert not (cache / "artifacts" / "teacher").exists() or not list(
        (cache / "artifacts" / "teacher").glob("*/manifest.json"))

    rerun = start(cache, "--set", "teacher.epochs=3")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert table(out) == table(ref_out)


@pytest.mark.slow
def test_two_runs_share_cache_and_database(tmp_path):
    cache = tmp_path / "cache"
    runs = [start(cache, "--set", "teacher.epochs=1") for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err
    assert table(outputs[0][0]) == table(outputs[1][0])
    db = sqlite3.connect(cache / "results.sqlite")
    rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
    assert rows[0] == rows[1] == 3 * 2  # teacher, random, none x 2 fractions, seed 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    teachers = list((cache / "artifacts" / "teacher").glob("*/manifest.json"))
    assert len(teachers) == 1
    assert not list((cache / "artifacts").rglob(".*.tmp"))
