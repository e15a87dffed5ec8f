"""Progress: bars only on a terminal, one line per finished step otherwise, an ETA weighed
by the steps' estimated costs, and the ``interrupted`` message on a line of its own."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from mkdt_bench.cli import main
from mkdt_bench.progress import GridProgress, GridTask, Progress, duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bars_only_on_a_terminal():
    assert Progress(stream=Terminal()).bars and not Progress(stream=Terminal()).lines
    log = io.StringIO()
    assert not Progress(stream=log).bars and Progress(stream=log).lines
    assert not Progress(False, stream=Terminal()).bars and not Progress(False, stream=log).lines
    bar = Progress(stream=log).bar(3, "teacher")
    bar.update(3)
    bar.close()
    assert log.getvalue() == ""  # no bar drawn into a log


def test_one_line_per_finished_step_when_not_a_terminal():
    log = io.StringIO()
    clock = Clock()
    grid = GridProgress(Progress(stream=log), [GridTask("t", "teacher resnet10", "teacher", 10.0),
                                               GridTask("x", "", "", 0.0),
                                               GridTask("c", "cell mkdt", "cell", 1.0)], clock)
    clock.now = 12.0
    grid.done("t", 12.0, 812.4)
    grid.done("x", 0.0)  # nothing to compute: counted, not reported
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "\r" not in log.getvalue()
    assert lines[0].startswith("done: teacher resnet10 in 12.0 s, peak 812 MiB (1/2 steps")
    grid.done("c", 1.5, failed=True)
    assert log.getvalue().splitlines()[1].startswith("failed: cell mkdt in 1.5 s (2/2 steps")


def test_eta_is_weighed_by_estimated_cost():
    clock = Clock()
    tasks = [GridTask("teacher", "teacher", "teacher", 100.0)] + [
        GridTask(f"c{i}", f"cell {i}", "cell", 1.0) for i in range(2)]
    grid = GridProgress(Progress(stream=io.StringIO()), tasks, clock)
    assert grid.eta() == (102.0, 0)
    clock.now = 100.0
    grid.done("teacher", 100.0)
    assert grid.eta() == (2.0, 0)  # by unit counts it would be 2 x 100 s
    # a step slower than its estimate scales the rest alike
    slow = GridProgress(Progress(stream=io.StringIO()), tasks, clock)
    clock.now += 200.0
    slow.done("teacher", 200.0)
    assert slow.eta() == (4.0, 0)


def test_eta_without_estimates_uses_finished_steps_of_the_same_kind():
    clock = Clock()
    tasks = [GridTask("e0", "expert 1", "expert:mkdt", None),
             GridTask("e1", "expert 2", "expert:mkdt", None),
             GridTask("d", "distilled mkdt", "distilled:mkdt", None)]
    grid = GridProgress(Progress(stream=io.StringIO()), tasks, clock)
    assert grid.eta() == (0.0, 3)  # nothing known: reported as unmeasured
    clock.now = 30.0
    grid.done("e0", 30.0)
    assert grid.eta() == (30.0, 1)


def test_interrupted_message_starts_on_its_own_line(monkeypatch):
    import mkdt_bench.cli.ls as list_command

    def interrupted(args):
        print("grid:  40%|####      | 4/10", end="", file=sys.stderr)  # a bar mid-line
        raise KeyboardInterrupt

    monkeypatch.setattr(list_command, "execute", interrupted)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["list"]) == 130
    assert "4/10\ninterrupted; finished work is cached" in terminal.getvalue()


@pytest.mark.slow
def test_a_run_logs_plain_lines_without_a_terminal(tmp_path):
    """The CLI with stderr in a pipe: one line per finished step, no bar."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-m", "mkdt_bench.cli", "run", "--cache-dir", str(tmp_path),
         "--threads", "1", "--methods", "random", "--seeds", "0", "--fractions", "0.05",
         "--set", "teacher.arch=convnet:width=8", "--set", "teacher.epochs=1",
         "--set", "teacher.proj_dim=16", "--set", "teacher.batch_size=128",
         "--set", "pretrain.epochs=1"],
        capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "%|" not in out.stderr
    done = [line for line in out.stderr.splitlines() if line.startswith("done: ")]
    assert [line.split(" ")[1] for line in done] == ["teacher", "distilled", "encoder", "cell",
                                                     "cell"]
    assert all(" MiB (" in line and " steps, " in line for line in done)


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (12.34, 3725, 5 * 86400)] == ["12.3 s", "1:02:05", "5.0 days"]
