"""CPU thread settings for shared machines (mkdt_bench/threads.py, issue 16)."""

import subprocess
import sys

from mkdt_bench.threads import configure_openmp, default_threads, usable_cores


def test_passive_wait_policy_unless_the_user_set_one():
    assert configure_openmp({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert configure_openmp({"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {"OMP_WAIT_POLICY": ""}  # empty: OpenMP's own default
    assert configure_openmp(environ) == {} and "OMP_WAIT_POLICY" not in environ


def test_the_command_line_sets_the_policy_before_torch_starts():
    """Importing the CLI does not import torch, so main() sets the policy first."""
    code = ("import os, sys, mkdt_bench.cli as cli; before = 'torch' in sys.modules; "
            "cli.main(['list']); print(before, os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "", "PYTHONPATH": ":".join(sys.path)}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False PASSIVE"


def test_default_threads_follow_omp_num_threads_else_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == usable_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert default_threads() == usable_cores()
