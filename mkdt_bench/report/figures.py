"""Figures of stored results (``mkdt-bench plot``).

A figure never pools cell groups (:mod:`mkdt_bench.report.groups`): there is one per source,
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
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend

from mkdt_bench.errors import UserError
from mkdt_bench.report.facets import differences, metric_name, short_task_name
from mkdt_bench.report.groups import cell_groups
from mkdt_bench.results import OK, TEACHER_ROW
from mkdt_bench.variants import parse_label

#: Figure file types (by the extension of ``--out`` or ``--format``); PNGs at :data:`DPI`.
FIGURE_FORMATS = ("png", "pdf", "svg")
DPI = 200
_MARKERS = "osD^vP*Xh<>"
#: Dash patterns of the sets' lines, one per ten lines (the colour cycle's length).
_DASHES = ("-", "--", "-.", ":")
#: Colours and dash patterns of the horizontal reference lines of an ablation.
_PALETTE = ("tab:gray", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:purple")
_REFERENCE_DASHES = ("-.", ":", "--", "-")


def _line_style(i: int) -> dict[str, object]:
    """Colour, marker and dash pattern of a figure's ``i``-th set: no two sets alike."""
    return {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _DASHES[i // 10 % len(_DASHES)]}


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
               ci: bool, span: tuple[float, float] | None = None) -> str:
    """The teacher (ceiling), the floor row or, in an ablation, a set that does not sweep
    the option as a line with a band (``span``: horizontal over it), not a method's line."""
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
    return label


#: Characters per title line, at most; fewer where the axes are narrow (a wide legend).
_TITLE_WIDTH = 95


def _set_title(ax, title: str, width: int) -> None:
    """``title`` with each of its lines wrapped at ``width`` characters (image-folder
    paths, proxy teachers)."""
    ax.set_title("\n".join(textwrap.fill(line, width) for line in title.split("\n")),
                 fontsize=8.5)


def _axes(title: str, xlabel: str, metric: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(8.4, 4.8))
    ax = fig.subplots()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric_name(metric)} (%)")
    _set_title(ax, title, _TITLE_WIDTH)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig: Figure, ax, title: str, bounds: list[str]) -> Figure:
    """The legend beside the axes, the sets first, then ``bounds`` (the labels of the
    ceiling and floor lines); the title (centred over the axes) wrapped narrower until no
    line runs off the figure."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] in bounds)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7.5,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    width = _TITLE_WIDTH
    while not _inside(ax.title.get_window_extent(), fig.bbox) and width > 20:
        width -= 5
        _set_title(ax, title, width)
        fig.tight_layout()
    return fig


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1


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
    methods = groups[groups["reference"] != "floor"]
    sets = list(dict.fromkeys(zip(methods["label"], methods["set_images"], methods["set_setup"])))
    spread = (fractions[-1] - fractions[0]) or fractions[0]
    step = 0.03 * spread / max(1, len(sets) / 4)
    for i, key in enumerate(sets):
        rows = methods[(methods["label"] == key[0]) & (methods["set_images"] == key[1])
                       & (methods["set_setup"] == key[2])].sort_values("fraction")
        rows = rows[rows["status"] == OK]
        offset = (i - (len(sets) - 1) / 2) * step
        ax.errorbar(rows["fraction"] + offset, rows["mean"], yerr=_yerr(rows, ci),
                    markersize=5, capsize=3, linewidth=1.3, **_line_style(i),
                    label=_legend(rows.iloc[0], budget) if len(rows) else key[0])
    bounds = []
    if not teacher.empty:
        bounds.append(_reference(ax, teacher[teacher["status"] == OK], "fraction",
                                 "teacher (ceiling)", "--", "0.25", ci))
    floor = groups[(groups["reference"] == "floor") & (groups["status"] == OK)]
    if not floor.empty:
        bounds.append(_reference(ax, floor, "fraction",
                                 f"{floor['label'].iloc[0]} (floor: no pre-training)", ":",
                                 "0.45", ci))
    ax.set_xticks(fractions, [f"{f * 100:g} %" for f in fractions])
    margin = 0.06 * spread + (len(sets) / 2 + 1) * step
    ax.set_xlim(fractions[0] - margin, fractions[-1] + margin)
    return _finish(fig, ax, title, bounds)


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
    methods = groups[(groups["reference"] != "floor") & (groups["status"] == OK)]
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
        style = _line_style(i)
        if shared.all():
            style["linestyle"] = ""  # markers only
        ax.errorbar(rows["set_images"] * factor, rows["mean"], yerr=_yerr(rows, ci),
                    markersize=5, capsize=3, linewidth=1.3, label=name, **style)
    span = (sizes[0] / 1.3, sizes[-1] * 1.3) if sizes else (1, 10)
    bounds = []
    if not teacher.empty:
        bounds.append(_reference(ax, teacher[teacher["status"] == OK], "set_images",
                                 "teacher (ceiling)", "--", "0.25", ci, span))
    floors = groups[(groups["reference"] == "floor") & (groups["status"] == OK)]
    for j, (_, floor) in enumerate(floors.groupby("budget")):
        suffix = f", {int(floor['budget'].iloc[0]):,}-image grid" if len(
            set(floors["budget"])) > 1 else ""
        bounds.append(_reference(ax, floor, "set_images", f"{floor['label'].iloc[0]} "
                                 f"(floor{suffix})", ":", ("0.45", "0.6", "0.7")[j % 3], ci,
                                 span))
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlim(*span)
    return _finish(fig, ax, title, bounds)


def _source_groups(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """:func:`cell_groups` of each source data set on its own (a figure shows one source:
    its labels name only the set-ups that differ among that source's rows)."""
    return pd.concat([cell_groups(rows, metric) for _, rows in ok.groupby("dataset", sort=False)],
                     ignore_index=True)


def figures(frame: pd.DataFrame, metric: str = "accuracy",
            ci: bool = False) -> list[tuple[str, Figure]]:
    """``(name, figure)`` of the successful rows of ``frame``: accuracy versus label
    fraction per (source, teacher, budget, encoder, evaluator, task), and versus set size
    per (source, teacher, encoder, evaluator, task, fraction) where several budgets are
    stored; the name says which (a file name without extension)."""
    ok = frame[frame["status"] == OK]
    if ok.empty:
        raise UserError("no successful result rows to plot; run a grid first")
    groups = _source_groups(ok, metric)
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
    title = _title(first, what, ci, _seeds(every))
    fig, ax = _axes(title, f"method option {option!r} (the other sets: horizontal lines)", metric)
    ok = groups[groups["status"] == OK]
    swept = ok[ok["x"].notna()]
    xs = sorted(set(swept["x"]))
    span = (xs[0] - 0.05 * (xs[-1] - xs[0] or 1), xs[-1] + 0.05 * (xs[-1] - xs[0] or 1))
    logx = xs[0] > 0 and xs[-1] / xs[0] >= 20
    if logx:
        span = (xs[0] / 1.3, xs[-1] * 1.3)
    for i, (family, rows) in enumerate(swept.groupby("family", sort=False)):
        rows = rows.sort_values("x")
        ax.errorbar(rows["x"], rows["mean"], yerr=_yerr(rows, ci), markersize=5, capsize=3,
                    linewidth=1.3, label=family, **_line_style(i))
    others = ok[ok["x"].isna() & (ok["reference"] != "floor")]
    for j, (_, rows) in enumerate(others.groupby(["label", "set_images", "set_setup"],
                                                 sort=False)):
        dashes = _REFERENCE_DASHES[j // len(_PALETTE) % len(_REFERENCE_DASHES)]
        _reference(ax, rows, "x", _legend(rows.iloc[0], float(first["budget"])),
                   dashes, _PALETTE[j % len(_PALETTE)], ci, span)
    bounds = []
    if not teacher.empty:
        bounds.append(_reference(ax, teacher[teacher["status"] == OK], "x", "teacher (ceiling)",
                                 "--", "0.25", ci, span))
    floor = ok[ok["reference"] == "floor"]
    if not floor.empty:
        bounds.append(_reference(ax, floor, "x",
                                 f"{floor['label'].iloc[0]} (floor: no pre-training)", ":",
                                 "0.45", ci, span))
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlim(*span)
    return _finish(fig, ax, title, bounds)


def versus_figures(frame: pd.DataFrame, option: str, metric: str = "accuracy",
                   ci: bool = False) -> list[tuple[str, Figure]]:
    """``(name, figure)``: accuracy versus the method option ``option`` (e.g. MKDT's
    ``iterations`` over rows ``mkdt[iterations=50]``, ``mkdt``, ...) per source, teacher,
    budget, encoder, evaluator, task and label fraction; a UserError when no stored row
    sets ``option`` to a number."""
    ok = frame[frame["status"] == OK]
    if ok.empty:
        raise UserError("no successful result rows to plot; run a grid first")
    groups = _source_groups(ok, metric)
    groups["x"] = [_option_value(p, option) for p in groups["set_parts"]]
    groups["family"] = [_family(label, option) for label in groups["label"]]
    # rows of one family (of one source) that differ in other settings (e.g. pre-training
    # steps) are separate lines, named by what differs
    rest = pd.Series([json.dumps({k: v for k, v in json.loads(p).items() if k != option},
                                 sort_keys=True) for p in groups["set_parts"]],
                     index=groups.index)
    setting = differences(rest, groups["source"].astype(str) + "\n" + groups["family"])
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


__all__ = ["DPI", "FIGURE_FORMATS", "check_figure_out", "figures", "plot_results",
           "versus_figures"]
