"""How well ``run --dry-run``'s estimates predict a run (issue 30): a preset's estimate on an
empty cache (cold: a calibration of the machine and the stages' rough models), then after
that run the estimate of a grid that differs in size options (warm: scaled from the unit
costs the first run measured), each against the time the run then took, per stage (the
steps' seconds summed) and in total (the critical path on the executor's workers against
the wall time of the run's work).

    python benchmarks/estimate_accuracy.py [--preset quick] [--executor auto]
        [--warm-set KEY=VALUE ...] [--cache-dir DIR]

Prints a JSON object as each phase ends, ``cold`` then ``warm``: the ``machine`` (with the
load average, as other work on it slows the run), the ``settings``, per stage
``estimated_s``, ``measured_s`` and ``ratio`` (estimated / measured), and the ``total``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import build_config
from mkdt_bench.pipeline.dryrun import plan_seconds
from mkdt_bench.pipeline.plan import Plan

#: The warm grid's default: the issue's case, the preset with only MKDT's iterations changed
#: (its sets, their encoders and cells are new; the rest is stored).
WARM = ("methods.mkdt.iterations=200",)


def measured(plan: Plan, cache_dir: Path, frame: Any) -> dict[str, float]:
    """Seconds each stage of the plan's steps to compute took: the manifests' (the teacher
    with its representations) and the rows' evaluation seconds."""
    cache = ArtifactCache(cache_dir, create=False)
    evaluate = {row.cell_key: row.costs.evaluate_s or 0.0 for row in frame.itertuples()}
    out: dict[str, float] = {}
    for step in plan.to_compute:
        if step.stage == "cell":
            seconds = evaluate.get(step.key, 0.0)
        else:
            seconds = cache.manifest(step.stage, step.key).seconds or 0.0
            if step.stage == "teacher":
                reps = next(m for stage, key in cache.artifacts() if stage == "representations"
                            and (m := cache.manifest(stage, key)).inputs["teacher"] == step.key)
                seconds += reps.seconds or 0.0
        out[step.stage] = out.get(step.stage, 0.0) + seconds
    return out


def compare(preset: str, overrides: list[str], cache_dir: Path, executor: str) -> dict[str, Any]:
    """Estimate the grid (dry run), run it, and set the estimate beside what it took."""
    cfg = build_config(preset, {}, overrides)
    dry = api.run(cfg, cache_dir=cache_dir, executor=executor, dry_run=True, progress=False,
                  preset=preset)
    assert dry.plan is not None
    estimated: dict[str, float] = {}
    for step in dry.plan.to_compute:
        seconds = dry.estimates[step.stage, step.key].seconds or 0.0
        estimated[step.stage] = estimated.get(step.stage, 0.0) + seconds
    result = api.run(cfg, cache_dir=cache_dir, executor=executor, progress=False, preset=preset)
    took = measured(dry.plan, cache_dir, result.frame)
    stages = {stage: {"steps": sum(s.stage == stage for s in dry.plan.to_compute),
                      "estimated_s": round(estimated[stage], 1),
                      "measured_s": round(took[stage], 1),
                      "ratio": round(estimated[stage] / took[stage], 2) if took[stage] else None}
              for stage in estimated}
    path = plan_seconds(dry.plan, dry.estimates, dry.workers)
    return {"settings": [f"--preset {preset}", *(f"--set {o}" for o in overrides)],
            "workers": dry.workers, "stages": stages,
            "total": {"estimated_s": round(path, 1), "measured_wall_s": round(result.seconds, 1),
                      "ratio": round(path / result.seconds, 2),
                      "serial_estimate_s": round(sum(estimated.values()), 1)}}


def machine() -> dict[str, Any]:
    import torch

    model = platform.processor()
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = line
    return {"cpu": model, "avx512": " avx512f" in flags, "cores": os.cpu_count(),
            "torch": torch.__version__, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--warm-set", action="append", default=None, metavar="KEY=VALUE",
                        help=f"the warm grid's --set values (default: {' '.join(WARM)})")
    parser.add_argument("--cache-dir", help="an empty folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(args.cache_dir or tmp)
        for phase, overrides in (("cold", []), ("warm", list(args.warm_set or WARM))):
            result = compare(args.preset, overrides, cache_dir, args.executor)
            print(json.dumps({"phase": phase, "machine": machine(), **result}, indent=1),
                  flush=True)


if __name__ == "__main__":
    main()
