"""Time a slice of the quick preset alone and beside a busy process; print JSON.

Runs ``mkdt-bench run --preset quick`` (default slice: ``--methods mkdt --seeds 0``,
i.e. the teacher, MKDT's experts and distillation, one pre-training and its cells) from
an empty cache, first alone and then while one competing single-thread process spins on
a core (``python -c "while True: pass"``), and reports both wall times and their ratio
(issue 16's goal: <= 2.5x). ``--openmp default`` runs with OpenMP's own wait policy
(``OMP_WAIT_POLICY=``, the behaviour before mkdt-bench set ``PASSIVE``) for comparison.
A run longer than ``--timeout`` seconds is stopped and reported as ``> timeout``.

Example (on an otherwise idle machine)::

    python benchmarks/contention.py --openmp passive
    python benchmarks/contention.py --openmp default --timeout 900
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SLICE = ["--preset", "quick", "--methods", "mkdt", "--seeds", "0"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--openmp", choices=("passive", "default"), default="passive",
                   help="mkdt-bench's OMP_WAIT_POLICY=PASSIVE or OpenMP's default policy")
    p.add_argument("--threads", type=int, default=0, help="--threads of the run (0: default)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run is "
                   "stopped")
    p.add_argument("--only", choices=("both", "alone", "contended"), default="both")
    p.add_argument("--full", action="store_true", help="the whole quick preset, not the slice")
    return p.parse_args(argv)


def timed_run(args: argparse.Namespace) -> float | None:
    """Seconds of one cold run of the slice, or None past ``--timeout``."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["OMP_WAIT_POLICY"] = "PASSIVE" if args.openmp == "passive" else ""
    grid = ["--preset", "quick"] if args.full else SLICE
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mkdt_bench.cli", "run", *grid, "--no-progress",
               "--threads", str(args.threads), "--cache-dir", str(Path(tmp) / "cache"),
               "--results-db", str(Path(tmp) / "results.sqlite")]
        start = time.perf_counter()
        try:
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                           timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return None
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"the run failed:\n{e.stderr}") from None
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result: dict[str, Any] = {"openmp": args.openmp, "threads": args.threads,
                              "grid": "quick" if args.full else " ".join(SLICE),
                              "cores": len(os.sched_getaffinity(0)),
                              "load_before": round(os.getloadavg()[0], 2)}
    if args.only in ("both", "alone"):
        result["alone_s"] = timed_run(args)
    if args.only in ("both", "contended"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            result["contended_s"] = timed_run(args)
        finally:
            busy.kill()
            busy.wait()
    alone, contended = result.get("alone_s"), result.get("contended_s")
    for key in ("alone_s", "contended_s"):
        if key in result:
            result[key] = (round(result[key], 1) if result[key] is not None
                           else f"> {args.timeout:g}")
    if isinstance(alone, float) and isinstance(contended, float):
        result["ratio"] = round(contended / alone, 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
