"""Figures from stored results (``mkdt-bench plot``) and of distilled sets (``show``).

A figure never pools cell groups (:mod:`mkdt_bench.report.summary`): there is one per source,
teacher, budget, encoder, evaluator and task (accuracy versus label fraction), and one
per source, teacher, encoder, evaluator, task and label fraction when several budgets
are stored (accuracy versus set size). Each says all of that in its title. An ablation
(``plot --versus iterations``) puts one method option on the x axis instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend
from torchvision.utils import make_grid

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.report.summary import cell_groups, differences, metric_name, short_task_name
from mkdt_bench.results import FLOOR_ROW, OK, TEACHER_ROW
from mkdt_bench.variants import parse_label

#: Figure file types (by the extension of ``--out`` or ``--format``); PNGs at :data:`DPI`.
FIGURE_FORMATS = ("png", "pdf", "svg")
DPI = 200
_MARKERS = "osD^vP*Xh<>"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _seeds(groups: pd.DataFrame) -> str:
    counts = groups.loc[groups["status"] == OK, "n"]
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low} seed{'s' if high > 1 else ''}" if low == high else \
        f"n = {low}-{high} seeds"


def _bars(ci: bool) -> str:
    return ("error bars: 95 % t-interval of the mean" if ci
            else "error bars: population std over seeds")


def _yerr(rows: pd.DataFrame, ci: bool) -> np.ndarray:
    """Error bars (std, or the clipped interval around the mean); 0 for a single seed."""
    if ci:
        low = (rows["mean"] - rows["ci_low"]).fillna(0).to_numpy()
        high = (rows["ci_high"] - rows["mean"]).fillna(0).to_numpy()
        return np.vstack([low, high])
    return rows["std"].where(rows["n"] > 1, 0).fillna(0).to_numpy()


def _legend(group: pd.Series, budget: float | None) -> str:
    text = group["label"]
    if budget is None or group["set_images"] != budget:
        text += f" ({group['set_images']:,} images)"
    if group["set_setup"]:
        text += f" {{{group['set_setup']}}}"
    return text


def _reference(ax, rows: pd.DataFrame, x: str, label: str, style: str, color: str,
               ci: bool, span: tuple[float, float] | None = None) -> None:
    """The teacher (ceiling) or ``none`` (floor) as a line with a band, not a method."""
    rows = rows.sort_values(x)
    if span is not None:  # one value across the whole axis
        xs = np.array(span)
        mean = np.repeat(rows["mean"].iloc[0], 2)
        err = _yerr(rows.iloc[:1], ci)
        low, high = (mean - err[0], mean + err[1]) if ci else (mean - err[0], mean + err[0])
    else:
        xs = rows[x].to_numpy(float)
        mean = rows["mean"].to_numpy(float)
        err = _yerr(rows, ci)
        low, high = (mean - err[0], mean + err[1]) if ci else (mean - err, mean + err)
    ax.plot(xs, mean, linestyle=style, color=color, linewidth=1.6, label=label)
    ax.fill_between(xs, low, high, color=color, alpha=0.12, linewidth=0)


def _axes(title: str, xlabel: str, metric: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(8.4, 4.8))
    ax = fig.subplots()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric_name(metric)} (%)")
    # long lines (image-folder paths, proxy teachers) wrapped so that none runs off the page
    ax.set_title("\n".join(textwrap.fill(line, 95) for line in title.split("\n")),
                 fontsize=8.5)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig: Figure, ax) -> Figure:
    """The legend beside the axes, the sets first, then the reference lines."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith(("teacher", "none")))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7.5,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _title(first: pd.Series, what: str, ci: bool, seeds: str) -> str:
    """Three lines: task, evaluator, encoder and source; the grid (budget or label
    fraction) and the teacher; seeds and what the error bars are."""
    task, source = short_task_name(first["task"]), short_task_name(first["source"])
    teacher = (f"teacher {first['teacher_desc']} [{first['teacher'][:8]}]" if first["teacher"]
               else "no teacher")
    return (f"{task}, {first['evaluator']} evaluator: encoder {first['encoder']} pre-trained "
            f"on sets from {source}\n{what}; {teacher}\n{seeds}; {_bars(ci)}")


def _fraction_figure(groups: pd.DataFrame, teacher: pd.DataFrame, metric: str,
                     ci: bool) -> Figure:
    """Accuracy versus label fraction: one line per set, teacher and ``none`` as
    reference lines, markers of the sets offset so that equal means stay visible."""
    first = groups.iloc[0]
    budget = float(first["budget"])
    every = pd.concat([groups, teacher])
    share = (f" ({first['budget_percent']:.3g} % of {int(first['source_images']):,})"
             if not math.isnan(first["source_images"]) else "")
    title = _title(first, f"budget {int(budget):,} images{share}", ci, _seeds(every))
    fig, ax = _axes(title, "labelled fraction of the task's training set", metric)
    fractions = sorted(set(every["fraction"]))
    methods = groups[~groups["label"].isin([FLOOR_ROW])]
    sets = list(dict.fromkeys(zip(methods["label"], methods["set_images"], methods["set_setup"])))
    spread = (fractions[-1] - fractions[0]) or fractions[0]
    step = 0.03 * spread / max(1, len(sets) / 4)
    for i, key in enumerate(sets):
        rows = methods[(methods["label"] == key[0]) & (methods["set_images"] == key[1])
                       & (methods["set_setup"] == key[2])].sort_values("fraction")
        rows = rows[rows["status"] == OK]
        offset = (i - (len(sets) - 1) / 2) * step
        ax.errorbar(rows["fraction"] + offset, rows["mean"], yerr=_yerr(rows, ci),
                    marker=_MARKERS[i % len(_MARKERS)], markersize=5, capsize=3,
                    linewidth=1.3, label=_legend(rows.iloc[0], budget) if len(rows) else key[0])
    if not teacher.empty:
        _reference(ax, teacher[teacher["status"] == OK], "fraction",
                   "teacher (ceiling)", "--", "0.25", ci)
    floor = groups[(groups["label"] == FLOOR_ROW) & (groups["status"] == OK)]
    if not floor.empty:
        _reference(ax, floor, "fraction", "none (floor: no pre-training)", ":", "0.45", ci)
    ax.set_xticks(fractions, [f"{f * 100:g} %" for f in fractions])
    margin = 0.06 * spread + (len(sets) / 2 + 1) * step
    ax.set_xlim(fractions[0] - margin, fractions[-1] + margin)
    return _finish(fig, ax)


def _budget_figure(groups: pd.DataFrame, teacher: pd.DataFrame, metric: str,
                   ci: bool) -> Figure:
    """Accuracy versus the number of images of each set (log axis, ticks at the sizes
    stored): a line per method through its budgets; the teacher and every ``none`` group
    as reference lines."""
    first = groups.iloc[0]
    every = pd.concat([groups, teacher])
    title = _title(first, f"{first['fraction'] * 100:g} % of the task's labels", ci,
                   _seeds(every))
    fig, ax = _axes(title, "images in the pre-training set (log scale)", metric)
    methods = groups[(groups["label"] != FLOOR_ROW) & (groups["status"] == OK)]
    sizes = sorted(set(methods["set_images"]))
    labels = list(dict.fromkeys(zip(methods["label"], methods["set_setup"])))
    for i, (label, setup) in enumerate(labels):
        rows = methods[(methods["label"] == label) & (methods["set_setup"] == setup)]
        rows = rows.sort_values(["set_images", "budget"])
        shared = rows["set_images"].duplicated(keep=False)  # e.g. `full` at every budget
        within = rows.groupby("set_images").cumcount() - (
            rows.groupby("set_images")["set_images"].transform("size") - 1) / 2
        factor = 1.04 ** (i - (len(labels) - 1) / 2) * 1.12 ** within.to_numpy()
        name = label + (f" {{{setup}}}" if setup else "")
        if shared.any():
            name += " (one point per budget: " + ", ".join(
                f"{b:,}" for b in rows.loc[shared, "budget"]) + ")"
        ax.errorbar(rows["set_images"] * factor, rows["mean"], yerr=_yerr(rows, ci),
                    marker=_MARKERS[i % len(_MARKERS)], markersize=5, capsize=3,
                    linewidth=1.3, linestyle="none" if shared.all() else "-", label=name)
    span = (sizes[0] / 1.3, sizes[-1] * 1.3) if sizes else (1, 10)
    if not teacher.empty:
        _reference(ax, teacher[teacher["status"] == OK], "set_images", "teacher (ceiling)",
                   "--", "0.25", ci, span)
    floors = groups[(groups["label"] == FLOOR_ROW) & (groups["status"] == OK)]
    for j, (_, floor) in enumerate(floors.groupby("budget")):
        suffix = f", {int(floor['budget'].iloc[0]):,}-image grid" if len(
            set(floors["budget"])) > 1 else ""
        _reference(ax, floor, "set_images", f"none (floor{suffix})", ":",
                   ("0.45", "0.6", "0.7")[j % 3], ci, span)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlim(*span)
    return _finish(fig, ax)


def figures(frame: pd.DataFrame, metric: str = "accuracy",
            ci: bool = False) -> list[tuple[str, Figure]]:
    """``(name, figure)`` of the successful rows of ``frame``: accuracy versus label
    fraction per (source, teacher, budget, encoder, evaluator, task), and versus set size
    per (source, teacher, encoder, evaluator, task, fraction) where several budgets are
    stored; the name says which (a file name without extension)."""
    ok = frame[frame["status"] == OK]
    if ok.empty:
        raise UserError("no successful result rows to plot; run a grid first")
    groups = cell_groups(ok, metric)
    teachers = groups[groups["label"] == TEACHER_ROW]
    sets = groups[groups["label"] != TEACHER_ROW]
    several_teachers = sets.groupby("source")["teacher"].nunique().max() > 1

    def reference(source: str, teacher: str, evaluator: str, task: str) -> pd.DataFrame:
        return teachers[(teachers["source"] == source) & (teachers["teacher"] == teacher)
                        & (teachers["evaluator"] == evaluator) & (teachers["task"] == task)]

    def name(source: str, teacher: str, *rest: str) -> str:
        return _slug("-".join([short_task_name(source),
                               *([teacher[:8]] if several_teachers else []), *rest]))

    out = []
    for key, part in sets.groupby(["source", "teacher", "budget", "encoder", "evaluator",
                                   "task"], sort=False):
        source, teacher, budget, encoder, evaluator, task = key
        out.append((name(source, teacher, f"{int(budget)}img", encoder, evaluator,
                         short_task_name(task), "fractions"),
                    _fraction_figure(part, reference(source, teacher, evaluator, task),
                                     metric, ci)))
    for key, part in sets.groupby(["source", "teacher", "encoder", "evaluator", "task",
                                   "fraction"], sort=False):
        if part["budget"].nunique() < 2:
            continue
        source, teacher, encoder, evaluator, task, fraction = key
        lines = reference(source, teacher, evaluator, task)
        out.append((name(source, teacher, encoder, evaluator, short_task_name(task),
                         f"budgets-{fraction * 100:g}pct-labels"),
                    _budget_figure(part, lines[lines["fraction"] == fraction], metric, ci)))
    return out


def _option_value(set_parts: str, option: str) -> float | None:
    """The numeric value of method option ``option`` in a group's ``set_parts``."""
    raw = json.loads(set_parts).get(option)
    try:
        value = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _family(label: str, option: str) -> str:
    """The row label without ``option``: ``mkdt[init=random,iterations=50]`` ->
    ``mkdt[init=random]`` (the line the variant is a point of)."""
    name, options = parse_label(label)
    rest = [part for part in label.partition("[")[2].rstrip("]").split(",")
            if part and part.split("=", 1)[0].strip() != option] if options else []
    return f"{name}[{','.join(rest)}]" if rest else name


def _versus_figure(groups: pd.DataFrame, teacher: pd.DataFrame, option: str, metric: str,
                   ci: bool) -> Figure:
    """Accuracy versus one numeric method option: a line per family of rows that set it
    (a method and its variants), every other set, the teacher and ``none`` as horizontal
    reference lines over the swept range."""
    first = groups.iloc[0]
    every = pd.concat([groups, teacher])
    what = (f"budget {int(first['budget']):,} images; {first['fraction'] * 100:g} % of the "
            "task's labels")
    fig, ax = _axes(_title(first, what, ci, _seeds(every)),
                    f"method option {option!r} (the other sets: horizontal lines)", metric)
    ok = groups[groups["status"] == OK]
    swept = ok[ok["x"].notna()]
    xs = sorted(set(swept["x"]))
    span = (xs[0] - 0.05 * (xs[-1] - xs[0] or 1), xs[-1] + 0.05 * (xs[-1] - xs[0] or 1))
    logx = xs[0] > 0 and xs[-1] / xs[0] >= 20
    if logx:
        span = (xs[0] / 1.3, xs[-1] * 1.3)
    for i, (family, rows) in enumerate(swept.groupby("family", sort=False)):
        rows = rows.sort_values("x")
        ax.errorbar(rows["x"], rows["mean"], yerr=_yerr(rows, ci),
                    marker=_MARKERS[i % len(_MARKERS)], markersize=5, capsize=3,
                    linewidth=1.3, label=family)
    others = ok[ok["x"].isna() & (ok["label"] != FLOOR_ROW)]
    palette = ("tab:gray", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:purple")
    for j, (_, rows) in enumerate(others.groupby(["label", "set_images", "set_setup"],
                                                 sort=False)):
        _reference(ax, rows, "x", _legend(rows.iloc[0], float(first["budget"])),
                   "-.", palette[j % len(palette)], ci, span)
    if not teacher.empty:
        _reference(ax, teacher[teacher["status"] == OK], "x", "teacher (ceiling)", "--",
                   "0.25", ci, span)
    floor = ok[ok["label"] == FLOOR_ROW]
    if not floor.empty:
        _reference(ax, floor, "x", "none (floor: no pre-training)", ":", "0.45", ci, span)
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlim(*span)
    return _finish(fig, ax)


def versus_figures(frame: pd.DataFrame, option: str, metric: str = "accuracy",
                   ci: bool = False) -> list[tuple[str, Figure]]:
    """``(name, figure)``: accuracy versus the method option ``option`` (e.g. MKDT's
    ``iterations`` over rows ``mkdt[iterations=50]``, ``mkdt``, ...) per source, teacher,
    budget, encoder, evaluator, task and label fraction; a UserError when no stored row
    sets ``option`` to a number."""
    ok = frame[frame["status"] == OK]
    if ok.empty:
        raise UserError("no successful result rows to plot; run a grid first")
    groups = cell_groups(ok, metric)
    groups["x"] = [_option_value(p, option) for p in groups["set_parts"]]
    groups["family"] = [_family(label, option) for label in groups["label"]]
    # rows of one family that differ in other settings (e.g. pre-training steps) are
    # separate lines, named by what differs
    rest = pd.Series([json.dumps({k: v for k, v in json.loads(p).items() if k != option},
                                 sort_keys=True) for p in groups["set_parts"]],
                     index=groups.index)
    setting = differences(rest, groups["family"])
    groups["family"] = [f"{f} {{{d}}}" if d else f
                        for f, d in zip(groups["family"], setting)]
    if groups["x"].isna().all():
        known = sorted({k for p in groups["set_parts"] for k in json.loads(p)})
        raise UserError(f"--versus {option!r}: no stored row has a numeric method option "
                        f"of that name; options of the stored rows: {', '.join(known)}")
    teachers = groups[groups["label"] == TEACHER_ROW]
    sets = groups[groups["label"] != TEACHER_ROW]
    out = []
    for key, part in sets.groupby(["source", "teacher", "budget", "encoder", "evaluator",
                                   "task", "fraction"], sort=False):
        source, teacher, budget, encoder, evaluator, task, fraction = key
        if part["x"].isna().all():
            continue
        lines = teachers[(teachers["source"] == source) & (teachers["teacher"] == teacher)
                         & (teachers["evaluator"] == evaluator) & (teachers["task"] == task)
                         & (teachers["fraction"] == fraction)]
        name = _slug("-".join([short_task_name(source), teacher[:8], f"{int(budget)}img",
                               encoder, evaluator, short_task_name(task),
                               f"versus-{option}-{fraction * 100:g}pct-labels"]))
        out.append((name, _versus_figure(part, lines, option, metric, ci)))
    return out


def check_figure_out(out: str | Path, fmt: str | None = None) -> str:
    """The figure type of the file ``out`` (by its extension), or ``""`` for a folder of
    ``fmt`` files (``fmt`` None: ``out`` must be a file); a UserError for anything that
    cannot be written: an unknown type, a folder where a file is asked or a file where a
    folder is, a path under a file or a folder without write permission."""
    path = Path(out).expanduser().absolute()
    single = path.suffix.lstrip(".").lower()
    allowed = ", ".join("." + f for f in FIGURE_FORMATS)
    if fmt is None and single not in FIGURE_FORMATS:
        raise UserError(f"--out {str(out)!r}: the image file must end in {allowed}")
    if path.suffix and single not in FIGURE_FORMATS:
        raise UserError(f"--out {str(out)!r}: a figure file must end in {allowed} (or give a "
                        "folder)")
    if fmt is not None and fmt not in FIGURE_FORMATS:
        raise UserError(f"figure format {fmt!r} is not known; choose "
                        f"{', '.join(FIGURE_FORMATS)}")
    if single and path.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name ending in {allowed}")
    if not single and path.exists() and not path.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder for the figures")
    existing = next(p for p in (path.parents if single else (path, *path.parents))
                    if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(out)!r} cannot be written: {str(existing)!r} is not a "
                        "writable folder")
    return single


def plot_results(frame: pd.DataFrame, out: str | Path, fmt: str = "png", ci: bool = False,
                 metric: str = "accuracy", versus: str | None = None) -> list[Path]:
    """Write :func:`figures` (or :func:`versus_figures` of the option ``versus``): into
    the folder ``out`` as ``fmt`` files, or, when the
    selection makes one figure, into the file ``out`` whose extension (.png, .pdf, .svg)
    gives the type. PNGs at :data:`DPI` dots per inch."""
    single = check_figure_out(out, fmt)
    out = Path(out).expanduser()
    made = versus_figures(frame, versus, metric, ci) if versus else figures(frame, metric, ci)
    if single and len(made) > 1:
        listed = "; ".join(name for name, _ in made[:6])
        raise UserError(f"the selection makes {len(made)} figures ({listed}"
                        f"{'; ...' if len(made) > 6 else ''}) but --out {str(out)!r} is one "
                        "file; choose one with --budget, --arch, --evaluator, --task (and "
                        "--teacher), or give a folder")
    (out.parent if single else out).mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in made:
        path = out if single else out / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI, format=single or fmt)
        written.append(path)
    return written


def find_stored_set(cache_dir: str | Path, label: str, seed: int | None,
                    budget: int | None) -> tuple[Path, dict]:
    """The directory and manifest of the one distilled set in the cache made by ``label``
    (a method or variant, ``mkdt[init=random]``; a plain name prefers the set at the
    method's defaults over its variants) with ``seed`` (ignored for unseeded methods) and
    ``budget``; a UserError lists the candidates when none or several match. A corrupt
    set (:meth:`ArtifactCache.verify`) is left out with a warning."""
    import json
    import warnings

    from mkdt_bench.cache import ArtifactCache, CorruptManifest
    from mkdt_bench.methods import METHODS
    from mkdt_bench.variants import parse_label

    name, options = parse_label(label)
    seeded = not name.startswith("import:") and name in METHODS and METHODS.get(name).seeded
    cache = ArtifactCache(cache_dir, create=False)
    stored = []
    for stage, key in cache.artifacts():
        if stage != "distilled":
            continue
        try:
            manifest = cache.manifest(stage, key)
        except CorruptManifest:
            manifest = {}
        config = manifest.get("config", {})
        if manifest and (config.get("method", manifest.get("method")) != name or any(
                config.get("options", {}).get(k) != v for k, v in options.items())):
            continue
        bad = cache.verify(stage, key)
        if bad:
            warnings.warn(f"corrupt stored set {cache.path(stage, key)} ({', '.join(bad)}) "
                          "left out; the next run that needs it computes it again",
                          stacklevel=2)
            continue
        stored.append((cache.path(stage, key), manifest, config))
    if not stored:
        raise UserError(f"no set of {label!r} is stored in {str(cache_dir)!r}; run a grid "
                        "with it first (or give the set's directory)")

    def describe(config: dict) -> str:
        return f"budget {config.get('budget', '?')}, seed {config.get('seed', '?')}"

    matching = [s for s in stored
                if (seed is None or not seeded or s[2].get("seed") == seed)
                and (budget is None or s[2].get("budget") == budget)]
    if not matching:
        have = "; ".join(sorted({describe(c) for *_, c in stored}))
        raise UserError(f"no set of {label!r} with seed {seed}"
                        f"{f' and budget {budget}' if budget is not None else ''} is stored; "
                        f"stored: {have}")
    differing = sorted({k for *_, c in matching for k in c.get("options", {})
                        if len({json.dumps(m[2].get("options", {}).get(k))
                                for m in matching}) > 1})
    if len(matching) > 1 and not options and name in METHODS:
        # the plain name is the row without a variant: the method's defaults where they differ
        defaults = METHODS.get(name).defaults
        plain = [m for m in matching
                 if all(m[2].get("options", {}).get(k) == defaults.get(k) for k in differing)]
        matching = plain if len(plain) == 1 else matching
    if len(matching) > 1:
        choices = sorted({describe(c) for *_, c in matching})
        hint = ("; they differ in " + ", ".join(differing) + ": name the variant, e.g. "
                f"--method {name}[{differing[0]}=...]") if differing else ""
        raise UserError(f"{len(matching)} stored sets of {label!r} match ({'; '.join(choices)})"
                        f"; choose one with --seed and --budget{hint}")
    return matching[0][0], matching[0][1]


def set_title(distilled: DistilledSet, label: str, seed: int | None, budget: int | None,
              max_images: int) -> str:
    """``mkdt, seed 0: 143 images of 1x8x8 from digits (budget 143), first 100 shown``."""
    shape = f"{distilled.channels}x{distilled.image_size}x{distilled.image_size}"
    text = label + (f", seed {seed}" if seed is not None else "")
    text += f": {len(distilled):,} images of {shape} from {distilled.source}"
    if budget is not None:
        text += f" (budget {budget:,})"
    if 0 < max_images < len(distilled):
        text += f"; only the first {max_images:,} shown"
    return text


def _upscaled(images: torch.Tensor, min_pixels: int = 32) -> torch.Tensor:
    """Images repeated pixel by pixel (nearest) until each side is at least ``min_pixels``."""
    factor = math.ceil(min_pixels / min(images.shape[-2:]))
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def show_set(distilled: DistilledSet, out: str | Path, title: str,
             max_images: int = 100) -> Path:
    """A PNG (or PDF, SVG: ``out``'s extension) of a set's first ``max_images`` images,
    de-normalised with the set's own statistics, each upscaled (nearest) to at least
    32 px, under ``title`` (which the file also carries as its ``Title``)."""
    kind = check_figure_out(out)
    if max_images < 1:
        raise UserError(f"--max-images {max_images} must be at least 1")
    if len(distilled) == 0:
        raise UserError(f"{title}: the set holds no images (e.g. the floor row `none`); "
                        "nothing to show")
    if distilled.channels not in (1, 3):
        raise UserError(f"{title}: images with {distilled.channels} channels cannot be shown "
                        "(1 or 3 needed)")
    shown = distilled.images[:max_images]
    mean = torch.tensor(distilled.mean).view(1, -1, 1, 1)
    std = torch.tensor(distilled.std).view(1, -1, 1, 1)
    raw = _upscaled((shown * std + mean).clamp(0, 1))
    grid = make_grid(raw, nrow=max(1, math.ceil(len(raw) ** 0.5)), padding=2, pad_value=1.0)
    pixels = grid.permute(1, 2, 0).numpy()
    height, width = pixels.shape[:2]
    head, margin = 44, 8  # title band and border, in pixels (1 px = 1 figure pixel)
    fig_w, fig_h = max(width + 2 * margin, 480), height + head + margin
    fig = Figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
    left = (fig_w - width) // 2  # whole pixels: the grid's pixels stay the image's
    ax = fig.add_axes((left / fig_w, margin / fig_h, width / fig_w, height / fig_h))
    ax.imshow(pixels, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    fig.text(0.5, 1 - 6 / fig_h, title, ha="center", va="top", fontsize=9, wrap=True)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, format=kind, metadata={"Title": title})
    return out
