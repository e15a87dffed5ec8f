"""CPU thread settings for shared machines (mkdt_bench/threads.py, issue 16)."""

import subprocess
import sys

from mkdt_bench.threads import configure_openmp, default_threads, usable_cores


def test_a_short_spin_unless_the_user_chose_a_wait_behaviour():
    assert configure_openmp({}) == {"GOMP_SPINCOUNT": "2000"}
    assert configure_openmp({"OMP_WAIT_POLICY": "PASSIVE"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert configure_openmp({"GOMP_SPINCOUNT": "10"}) == {"GOMP_SPINCOUNT": "10"}
    environ = {"GOMP_SPINCOUNT": "", "OMP_WAIT_POLICY": ""}  # empty: OpenMP's own default
    assert configure_openmp(environ) == {} and environ == {}


def test_the_command_line_sets_the_spin_count_before_torch_starts():
    """Importing the CLI does not import torch, so main() sets the spin count first."""
    code = ("import os, sys, mkdt_bench.cli as cli; before = 'torch' in sys.modules; "
            "cli.main(['list']); print(before, os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "", "PYTHONPATH": ":".join(sys.path)}, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False 2000"


def test_default_threads_follow_omp_num_threads_else_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == usable_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert default_threads() == usable_cores()
