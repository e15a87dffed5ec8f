"""What ``mkdt-bench run --dry-run`` prints, and the warning before a run that would take
hours: the resolved configuration, the plan's steps with what each needs and its
estimated cost (:mod:`mkdt_bench.pipeline.costs`), and the total over the critical path of
the executor that will run them."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.pipeline.calibration import Calibration
from mkdt_bench.pipeline.costs import ROUGH, CostBook, Estimate, critical_path, estimate_plan, total
from mkdt_bench.pipeline.plan import TEACHER, TO_COMPUTE, Plan, Step
from mkdt_bench.pipeline.run import grid_tasks
from mkdt_bench.progress import duration

if TYPE_CHECKING:
    from mkdt_bench.data import ImageDataset
    from mkdt_bench.results import ResultStore

#: A run estimated above this many seconds is announced with a warning before it starts.
WARN_SECONDS = 3 * 3600
#: What a suggested smaller setting aims at.
TARGET_SECONDS = 3600

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def render_config(cfg: dict[str, Any]) -> str:
    """The resolved config as TOML (sections ``[run]``, ``[teacher]``, ``[pretrain]``,
    ``[methods.NAME]``, ``[evaluators.NAME]``); without the variant rows' sections it
    reads back as a preset giving the same config."""
    out = []
    for section, body in cfg.items():
        tables = ([(section, body)] if section not in ("methods", "evaluators") else
                  [(f"{section}.{_toml_key(name)}", options) for name, options in body.items()])
        for title, options in tables:
            out.append(f"[{title}]")
            out += [f"{_toml_key(k)} = {json.dumps(v)}" for k, v in options.items()]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def plan_estimates(plan: Plan, cache: ArtifactCache, store: ResultStore, dataset: ImageDataset,
                   calibration: Calibration) -> dict[tuple[str, str], Estimate]:
    """An estimate for every step to compute (:func:`~mkdt_bench.pipeline.costs.estimate_plan`)
    from what ``cache`` and ``store`` measured on the calibration's kind of device, scaled,
    or the rough model; the caller stores the calibration (a run) or not (a dry run)."""
    book = CostBook(cache, store, calibration.device.type,
                    {dataset.fingerprint: len(dataset.train_images)})
    return estimate_plan(plan, book, calibration, dataset)


def plan_seconds(plan: Plan, estimates: dict[tuple[str, str], Estimate],
                 workers: int) -> float:
    """The estimated time of the plan's steps to compute on ``workers`` workers: the
    executor's schedule over the plan's task graph (one worker: the sum; steps without an
    estimate count as none)."""
    seconds = {s.task: estimates.get((s.stage, s.key), Estimate(None)).seconds or 0.0
               for s in plan.to_compute if s.task}
    return critical_path(grid_tasks(plan), seconds, workers)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _row(step: Step, estimate: Estimate | None, notes: dict[str, str]) -> list[str]:
    if step.status != TO_COMPUTE:
        return [step.stage, step.status, "", "", step.label, ""]
    estimate = estimate or Estimate(None)
    seconds = "?" if estimate.seconds is None else duration(estimate.seconds)
    peak = "" if estimate.peak_mib is None else f"{estimate.peak_mib:,.0f}"
    basis = estimate.basis
    if basis.startswith(ROUGH):  # long: a footnote, one for the steps it says alike
        notes.setdefault(basis, f"{step.stage} {step.label}")
        basis = f"{ROUGH} [{list(notes).index(basis) + 1}]"
    return [step.stage, step.status, seconds, peak, step.label, basis]


def render_plan(plan: Plan, estimates: dict[tuple[str, str], Estimate], cfg: dict[str, Any],
                device: str, workers: int = 1) -> str:
    """The plan's steps, one line each, and the total on ``workers`` workers."""
    from tabulate import tabulate

    run = cfg["run"]
    pool = f", methods distil from a {plan.n_source:,}-image pool" \
        if plan.n_source < plan.n_train else ""
    head = (f"{run['dataset']}: {plan.n_train:,} training images{pool}; budget "
            f"{run['budget']} = {plan.budget:,} images a set")
    notes: dict[str, str] = {}  # basis -> the first step it is the basis of
    rows = [_row(s, estimates.get((s.stage, s.key)), notes) for s in plan.steps]
    table = tabulate(rows, headers=["stage", "status", "time", "peak MiB", "step", "estimate"],
                     tablefmt="simple", disable_numparse=True)
    todo = plan.to_compute
    seconds, peak, unknown = total([estimates.get((s.stage, s.key), Estimate(None))
                                    for s in todo])
    counts = {}
    for step in plan.steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if status != TO_COMPUTE)
    lines = [f"total: {_plural(len(todo), 'step')} to compute{f' ({done})' if done else ''}"]
    if todo:
        measured = len(todo) - unknown
        peak_text = f", peak {peak:,.0f} MiB" if peak is not None else ""
        path = plan_seconds(plan, estimates, workers)
        on = (f"{duration(path)} on {workers} workers (the critical path; "
              f"{duration(seconds)} one after another)" if workers > 1 else duration(seconds))
        lines.append(f"estimated time on {device}: {on} for the "
                     f"{_plural(measured, 'step')} with an estimate{peak_text}"
                     + (f"; {_plural(unknown, 'step')} without a measurement or a model, "
                        "not in the total" if unknown else ""))
    corrupt = [f"corrupt: {artifact} ({', '.join(problems)}); the run moves it aside and "
               "computes it again" for artifact, problems in plan.corrupt.items()]
    footnotes = [f"[{n}] {step}: {basis}" for n, (basis, step) in enumerate(notes.items(), 1)]
    return "\n".join([head, "", table, *([""] + footnotes if footnotes else []),
                      *([""] + corrupt if corrupt else []), "", *lines]) + "\n"


def cost_warning(plan: Plan, estimates: dict[tuple[str, str], Estimate], cfg: dict[str, Any],
                 dataset: Any, device: str, preset: str | None = None,
                 workers: int = 1) -> str | None:
    """A warning when the estimated time of the steps to compute on ``workers`` workers
    (:func:`plan_seconds`) is above :data:`WARN_SECONDS`, naming the largest step and
    settings that fit in about an hour."""
    _, _, unknown = total(list(estimates.values()))
    seconds = plan_seconds(plan, estimates, workers)
    if seconds <= WARN_SECONDS:
        return None
    known = [s for s in plan.to_compute if estimates.get((s.stage, s.key), Estimate(None)).seconds]
    biggest = max(known, key=lambda s: estimates[s.stage, s.key].seconds or 0.0)
    estimate = estimates[biggest.stage, biggest.key]
    more = f" (and {unknown} steps without an estimate)" if unknown else ""
    on = f"{device} with {workers} workers" if workers > 1 else device
    lines = [f"warning: this run is estimated at {duration(seconds)}{more} on {on}; the "
             f"largest step is {biggest.stage} {biggest.label}: {duration(estimate.seconds)}, "
             f"{estimate.basis}."]
    lines.append("To fit a few hours: " + "; or ".join(
        _smaller(biggest, estimate, cfg, dataset, device, preset)) + ".")
    lines.append("`mkdt-bench run --dry-run` with the same arguments lists every step.")
    return "\n".join(lines)


def _smaller(step: Step, estimate: Estimate, cfg: dict[str, Any], dataset: Any,
             device: str, preset: str | None) -> list[str]:
    """Settings that bring the largest step to about :data:`TARGET_SECONDS`."""
    ratio = TARGET_SECONDS / (estimate.seconds or TARGET_SECONDS)
    out = []
    if step.stage == TEACHER:
        teacher = cfg["teacher"]
        if (device == "cpu" and dataset.channels == 3 and dataset.image_size == 32
                and preset != "cifar10-cpu"):
            out.append("--preset cifar10-cpu (CIFAR-10 scaled for a 2-core CPU, about an "
                       "hour there; keep --dataset to use it on your copy)")
        epochs = int(teacher["epochs"] * ratio)
        if epochs >= 1:
            out.append(f"--set teacher.epochs={epochs}")
        else:
            out.append("a smaller teacher, e.g. --set teacher.arch=convnet:width=64 "
                       "--set teacher.train_images=10000 --set teacher.epochs=30")
        out.append("a trained teacher: --teacher-checkpoint PATH")
    elif step.stage == "encoder":
        out.append(f"--set pretrain.epochs={max(1, int(cfg['pretrain']['epochs'] * ratio))}")
    elif step.stage == "cell":
        out.append("fewer --seeds, --fractions or --tasks, or a cheaper evaluator")
    else:  # a distillation or one of its sub-units
        method = step.label.split(" ")[0]
        out.append(f"smaller settings of {method} (--set methods.{method.split('[')[0]}."
                   "KEY=VALUE; `mkdt-bench list` and the preset files show them), or "
                   "run.train_pool")
    return out
