"""Faults for real: a run killed with SIGKILL resumes to the same numbers; two runs share
one cache and one database without corruption or duplicate rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_FLAGS

FAST = ["--methods", "random,none", "--seeds", "0", "--fractions", "0.05", *FAST_FLAGS]


def start(cache: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mkdt_bench.cli", "run", *FAST, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def table(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, list[tuple[int, str, str]]]:
    """Two runs started together on one cache (a teacher of three epochs, long enough to be
    caught in :func:`test_kill_during_teacher_training_then_resume`): the cache, and each
    run's exit status, stdout and stderr."""
    cache = tmp_path_factory.mktemp("shared") / "cache"
    runs = [start(cache, "--set", "teacher.epochs=3") for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    return cache, [(run.returncode, out, err) for run, (out, err) in zip(runs, outputs)]


@pytest.mark.slow
def test_two_runs_share_cache_and_database(two_runs):
    cache, outputs = two_runs
    for status, _, err in outputs:
        assert status == 0, err
    assert table(outputs[0][1]) == table(outputs[1][1])
    db = sqlite3.connect(cache / "results.sqlite")
    rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
    assert rows[0] == rows[1] == 3  # teacher, random, none at one fraction, seed 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    teachers = list((cache / "artifacts" / "teacher").glob("*/manifest.json"))
    assert len(teachers) == 1
    assert not list((cache / "artifacts").rglob(".*.tmp"))


@pytest.mark.slow
def test_kill_during_teacher_training_then_resume(tmp_path, two_runs):
    """Killed once the teacher's first snapshot exists, the rerun resumes it and prints the
    table of the runs never killed (:func:`two_runs`)."""
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
    reference = two_runs[1][0]
    assert reference[0] == 0 and table(out) == table(reference[1])


# A grid with every kind of stage: a ResNet-10 teacher (its representations take long enough
# to be caught), MKDT experts and distillation, KRR-ST, pre-trainings, probes, result rows.
STAGES = ["--methods", "random,none,mkdt,krrst", "--seeds", "0,1", "--fractions", "0.05",
          "--no-progress"]
for option in ["teacher.arch=resnet10", "teacher.epochs=1", "teacher.proj_dim=64",
               "teacher.batch_size=128", "pretrain.epochs=3", "methods.mkdt.width=8",
               "methods.mkdt.num_experts=3", "methods.mkdt.train_epochs=3",
               "methods.mkdt.iterations=6", "methods.mkdt.syn_steps=4", "methods.mkdt.eval_it=2",
               "methods.mkdt.lr_img=1", "methods.krrst.width=8", "methods.krrst.pool_size=3",
               "methods.krrst.online_iterations=5", "methods.krrst.outer_steps=40",
               "methods.krrst.real_batch=128", "methods.krrst.snapshot_every=5",
               "methods.krrst.outer_lr=1e-2"]:
    STAGES += ["--set", option]


def launch(cache: Path) -> subprocess.Popen:
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mkdt_bench.cli", "run", *STAGES],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def inside(cache: Path, stage: str) -> bool:
    """True while a producer of ``stage`` is writing (its temporary directory exists), or for
    ``rows``, once the first result row is in the database (probing and writing go on), and
    for ``krrst``, once its snapshot is past step 0 (the outer loop is running)."""
    if stage == "krrst":
        for snapshot in (cache / "scratch" / "distilled").glob("*/krrst_state.pt"):
            try:
                if torch.load(snapshot, weights_only=True)["step"] > 0:
                    return True
            except (OSError, RuntimeError, EOFError):
                pass
        return False
    if stage == "rows":
        db = cache / "results.sqlite"
        if not db.is_file():
            return False
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] > 0
        except sqlite3.Error:
            return False
    return any((cache / "artifacts" / stage).glob(".*.tmp"))


def published(cache: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (cache / "artifacts").rglob("manifest.json")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list[str]]:
    """The cache of the grid run never killed, and the table it printed."""
    cache = tmp_path_factory.mktemp("reference")
    run = launch(cache)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    return cache, table(out)


ORDER = ["teacher", "representations", "expert", "distilled", "encoder"]


def finished_before(stage: str, reference: Path, cache: Path) -> None:
    """Copies into ``cache`` the artifacts of ``reference`` that a run computes before it
    enters ``stage`` (all of them for ``rows``, and for ``krrst`` the other methods' sets),
    so that a run started there goes straight to that stage."""
    upto = {"rows": len(ORDER), "krrst": ORDER.index("distilled") + 1}.get(
        stage, ORDER.index(stage) if stage in ORDER else 0)
    for kind in ORDER[:upto]:
        for manifest in (reference / "artifacts" / kind).glob("*/manifest.json"):
            if stage == "krrst" and json.loads(manifest.read_text()).get("method") == "krrst":
                continue
            shutil.copytree(manifest.parent, cache / "artifacts" / kind / manifest.parent.name)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["representations", "expert", "distilled", "krrst", "encoder",
                                   "rows"])
def test_kill_inside_each_stage_then_resume(stage, tmp_path, uninterrupted):
    """The run starts from what a run computes before ``stage`` and is killed inside it."""
    reference, reference_table = uninterrupted
    cache = tmp_path / "cache"
    finished_before(stage, reference, cache)
    victim = launch(cache)
    deadline = time.time() + 300
    while not inside(cache, stage):
        assert victim.poll() is None, f"the run ended before a {stage} stage was seen"
        assert time.time() < deadline
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    before = published(cache)

    rerun = launch(cache)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert table(out) == reference_table  # the same numbers as a run never killed
    after = published(cache)
    assert {p: after.get(p) for p in before} == before  # nothing finished was recomputed
    assert not list((cache / "artifacts").rglob(".*.tmp"))
    db = sqlite3.connect(cache / "results.sqlite")
    count, distinct = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM results").fetchone()
    assert count == distinct == 5 * 2  # teacher, random, none, mkdt, krrst x 2 seeds
