"""The benchmark scripts run and print one JSON object (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args, key", [
    ("distill_speed.py", ["--images", "10", "--syn-steps", "2", "--batch-syn", "5", "--width",
                          "8", "--iterations", "1"], "seconds_per_iteration"),
    ("krrst_speed.py", ["--images", "20", "--real-batch", "32", "--width", "8", "--teacher",
                        "convnet:width=8", "--steps", "1"], "seconds_per_outer_step"),
])
def test_prints_json(script, args, key):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result[key] > 0 and result["memory_measure"] == "ru_maxrss_growth"
