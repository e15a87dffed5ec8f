"""Time a slice of the quick preset alone and beside a busy process; print JSON.

Runs ``mkdt-bench run --preset quick`` (default slice: ``--methods mkdt --seeds 0``,
i.e. the teacher, MKDT's experts and distillation, one pre-training and its cells) from
an empty cache, first alone and then while one competing single-thread process spins on
a core (``python -c "while True: pass"``), and reports both wall times and their ratio
(issue 16's goal: <= 2.5x). ``--openmp`` picks the OpenMP wait behaviour: ``mkdt-bench``
(what the command line sets by itself, ``mkdt_bench/threads.py``), ``default`` (OpenMP's
own: spin 300,000 times, then sleep), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``: sleep at
once) or ``spin:N`` (``GOMP_SPINCOUNT=N``: spin N times, then sleep). ``--slice teacher``
times only the teacher (``--methods none``).
A run longer than ``--timeout`` seconds is stopped and reported as ``> timeout``.

Example (on an otherwise idle machine)::

    python benchmarks/contention.py
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

SLICES = {"mkdt": ["--preset", "quick", "--methods", "mkdt", "--seeds", "0"],
          "teacher": ["--preset", "quick", "--methods", "none", "--seeds", "0"],
          "quick": ["--preset", "quick"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--openmp", default="mkdt-bench",
                   help="mkdt-bench, default, passive or spin:N (see above)")
    p.add_argument("--threads", type=int, default=0, help="--threads of the run (0: default)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a run is "
                   "stopped")
    p.add_argument("--only", choices=("both", "alone", "contended"), default="both")
    p.add_argument("--slice", choices=sorted(SLICES), default="mkdt",
                   help="what to run: the teacher, the teacher and MKDT (default), or all")
    args = p.parse_args(argv)
    if args.openmp not in ("mkdt-bench", "passive", "default") and not (
            args.openmp.startswith("spin:") and args.openmp[5:].isdigit()):
        p.error(f"--openmp {args.openmp!r}: use mkdt-bench, default, passive or spin:N")
    return args


def openmp_env(openmp: str) -> dict[str, str]:
    """The environment variables of an ``--openmp`` choice (an empty value: OpenMP's
    default, see :func:`mkdt_bench.threads.configure_openmp`)."""
    if openmp == "mkdt-bench":
        return {}
    if openmp == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    if openmp == "default":
        return {"GOMP_SPINCOUNT": ""}
    return {"GOMP_SPINCOUNT": openmp[5:]}


def timed_run(args: argparse.Namespace) -> float | None:
    """Seconds of one cold run of the slice, or None past ``--timeout``."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(key, None)
    env.update(openmp_env(args.openmp))
    grid = SLICES[args.slice]
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
                              "grid": " ".join(SLICES[args.slice]),
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
