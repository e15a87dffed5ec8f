"""Figures from stored results (``mkdt-bench plot``) and of distilled sets (``show``)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend
from torchvision.utils import save_image

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.results import short_task_name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _curves(frame: pd.DataFrame, x: str, xlabel: str, title: str, path: Path,
            log_x: bool) -> Path:
    """One line per method: mean accuracy over seeds against ``x``, error bars = population
    std (as the tables)."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for method, rows in frame.groupby("method", sort=False):
        stats = rows.groupby(x)["accuracy"].agg(["mean", lambda v: v.std(ddof=0)])
        stats.columns = ["mean", "std"]
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                    capsize=3, label=method)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_results(frame: pd.DataFrame, out: str | Path) -> list[Path]:
    """PNG figures of successful rows, one per (source, evaluator, task, architecture):
    accuracy versus label fraction, and versus budget when a group holds several budgets."""
    ok = frame[frame["status"] == "ok"]
    if ok.empty:
        raise UserError("no successful result rows to plot; run a grid first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, evaluator, task), group in ok.groupby(["dataset", "evaluator", "task"]):
        methods = group[group["method"] != "teacher"]
        for arch, rows in methods.groupby("arch"):
            name = _slug(f"{short_task_name(dataset)}-{evaluator}-{short_task_name(task)}-{arch}")
            title = (f"{short_task_name(task)}, {evaluator}\n{arch} pre-trained on sets "
                     f"from {short_task_name(dataset)}")
            with_teacher = pd.concat([rows, group[group["method"] == "teacher"]])
            written.append(_curves(with_teacher, "fraction", "label fraction", title,
                                   out / f"{name}-fractions.png", log_x=True))
            if rows["budget"].nunique() > 1:
                for fraction, part in rows.groupby("fraction"):
                    written.append(_curves(part, "budget", "images in the distilled set",
                                           f"{title}, {fraction:g} labels",
                                           out / f"{name}-budget-{fraction:g}.png",
                                           log_x=True))
    return written


def show_set(directory: str | Path, out: str | Path, max_images: int = 100) -> Path:
    """A grid image of a DistilledSet's first ``max_images`` images, de-normalised."""
    if max_images < 1:
        raise UserError(f"--max-images {max_images} must be at least 1")
    distilled = DistilledSet.load(directory)
    images = distilled.images[:max_images]
    mean = torch.tensor(distilled.mean).view(1, -1, 1, 1)
    std = torch.tensor(distilled.std).view(1, -1, 1, 1)
    raw = (images * std + mean).clamp(0, 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(raw, out, nrow=max(1, int(len(raw) ** 0.5)), padding=1)
    return out
