"""Tables of stored results, each with a caption saying what it shows; the formats that
write them are :mod:`mkdt_bench.report.formats`.

Every number comes from :func:`mkdt_bench.report.groups.cell_groups`; a table splits the
groups by whatever its rows and columns do not show (source, teacher, budget, and the
encoder or evaluator where the layout holds one), so no cell pools different set-ups.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.report.facets import (
    GROUP,
    differences,
    metric_name,
    row_facets,
    short_task_name,
)
from mkdt_bench.report.groups import COSTS, cell_groups, pretraining_note
from mkdt_bench.report.stats import (
    paired_differences,
    relative_marks,
    relative_scores,
    significantly_best,
)
from mkdt_bench.results import OK, TEACHER_ROW

#: Table layouts: ``default`` (one table per source, teacher and budget; encoder and
#: evaluator in the labels when several), ``paper`` (rows = pre-training set "method
#: (images)", one table per evaluator and encoder) and ``arch`` (methods x encoders, one
#: table per evaluator and budget).
LAYOUTS = ("default", "paper", "arch")
#: After the label of a row whose method reads the training labels (``uses_labels``).
LABELS_MARK = "†"

#: What splits the groups into tables, per layout.
_TABLE_KEYS = {"default": ["source", "teacher", "budget"],
               "paper": ["source", "teacher", "evaluator", "encoder"],
               "arch": ["source", "teacher", "evaluator", "budget"]}


@dataclass
class Table:
    """A rendered table: display text with row and column labels, a caption, and the cells
    a paired test puts ahead of the runner-up of their column (bold in LaTeX)."""

    caption: str
    cells: pd.DataFrame
    bold: set[tuple[str, str]] = field(default_factory=set)


def _cell_text(group: pd.Series, ci: bool, usual_n: int) -> str:
    """``mean ± std`` (just the mean for one seed), ``[lo, hi]`` with ``ci``, ``(n=K)`` where
    K is not the table's usual count; ``n/a (missing: ...)`` or ``failed`` without scores."""
    if group["status"] != OK:
        return f"n/a (missing: {group['note']})" if group["status"] == "missing" else "failed"
    text = f"{group['mean']:.2f}"
    if group["n"] > 1:
        text += f" ± {group['std']:.2f}"
    if ci:
        text += (f" [{group['ci_low']:.2f}, {group['ci_high']:.2f}]" if group["n"] > 1
                 else " [n/a]")
    if group["n"] != usual_n:
        text += f" (n={group['n']})"
    return text


def _order(groups: pd.DataFrame, method_order: list[str] | None) -> pd.DataFrame:
    """Teacher first, labels in ``method_order`` (their base method's position for
    variants not listed), the floor row last; then by budget, set size, encoder, set-up."""
    order = list(method_order or dict.fromkeys(groups["label"]))

    def rank(label: str, reference: str | None) -> tuple[int, int, str]:
        if label == TEACHER_ROW:
            return (0, 0, label)
        if reference == "floor":
            return (2, 0, label)
        base = label.split("[", 1)[0]
        position = order.index(label) if label in order else (
            order.index(base) if base in order else len(order))
        return (1, position, label)

    ranks = pd.Series([rank(label, reference) for label, reference in
                       zip(groups["label"], groups["reference"])], index=groups.index)
    return groups.assign(_rank=ranks).sort_values(
        ["_rank", "budget", "set_images", "encoder", "set_setup"], kind="stable")


def _row_labels(groups: pd.DataFrame, layout: str, budget: float | None) -> pd.Series:
    """Row labels: the set (label, with its size where the layout or the size asks), the
    encoder where a default table has several, ``{k=v}`` where a label has several
    set-ups in the table (the settings in which they differ)."""
    methods = groups[groups["label"] != TEACHER_ROW]
    several_encoders = layout == "default" and methods["encoder"].nunique() > 1
    setups = differences(groups["set_parts"], groups["label"])

    def label(g: pd.Series) -> str:
        if g["label"] == TEACHER_ROW:
            return f"teacher ({g['set_images']:,})" if layout == "paper" else "teacher"
        text = g["label"] + (f" {LABELS_MARK}" if g["uses_labels"] else "")
        if layout == "paper" or g["set_images"] != budget:
            text += f" ({g['set_images']:,})"
        if several_encoders:
            text += f" [{g['encoder']}]"
        if setups[g.name]:
            text += f" {{{setups[g.name]}}}"
        return text

    labels = groups.apply(label, axis=1)
    if layout == "paper":  # one set at several budgets: say which grid each row is from
        budgets = groups.groupby(labels)["budget"].transform("nunique")
        twice = (budgets > 1) & (groups["label"] != TEACHER_ROW)
        labels[twice] += groups.loc[twice, "budget"].map(lambda b: f" [{b:,}-image budget]")
    return labels


def _column_labels(groups: pd.DataFrame, layout: str) -> pd.Series:
    """``task @ fraction``; prefixed by the evaluator where a table has several (or one
    with several set-ups: ``linear {steps=100}``), by the encoder in the ``arch`` layout."""
    text = groups["task"].map(short_task_name) + " @ " + groups["fraction"].map(
        lambda f: f"{f * 100:g}%")
    evaluators = groups["evaluator"] + differences(groups["eval_parts"], groups["evaluator"]
                                                   ).map(lambda s: f" {{{s}}}" if s else "")
    if evaluators.nunique() > 1:
        text = evaluators + " " + text
    if layout == "arch":
        text = groups["encoder"] + " / " + text
    return text


def _caption(groups: pd.DataFrame, layout: str, metric: str, ci: bool, what: str) -> str:
    """What a table shows: source, teacher, budget (images and %), encoder, evaluator,
    tasks and label fractions, the statistic and its seeds."""
    methods = groups[groups["label"] != TEACHER_ROW]
    first = (methods if len(methods) else groups).iloc[0]  # the teacher may see more images
    source = f"{first['source']}"
    known = not math.isnan(first["source_images"])
    if known:
        source += f" (methods distil from {int(first['source_images']):,} training images)"
    budgets = methods.drop_duplicates("budget")
    budget_text = ", ".join(f"{int(b['budget']):,} images" + (
        f" ({b['budget_percent']:.3g} %)" if known else "")
        for _, b in budgets.sort_values("budget").iterrows())
    budget_text = ("budget " if len(budgets) == 1 else "budgets ") + budget_text
    encoders = sorted(set(methods["encoder"]))
    if layout == "arch":
        encoder_text = "encoders " + ", ".join(encoders) + " (column groups)"
    elif len(encoders) == 1:
        encoder_text = f"encoder {encoders[0]}"
    else:
        encoder_text = "encoders " + ", ".join(encoders) + " (in brackets)"
    evaluators = sorted(set(groups["evaluator"]))
    evaluator_text = (f"evaluator {evaluators[0]}" if len(evaluators) == 1 else
                      "evaluators " + ", ".join(evaluators) + " (before each column)")
    tasks = ", ".join(sorted({short_task_name(t) for t in groups["task"]}))
    fractions = " and ".join(f"{f * 100:g} %" for f in sorted(set(groups["fraction"])))
    counts = groups.loc[groups["status"] == OK, "n"]
    if counts.empty:
        seeds = "no successful seeds"
    elif counts.min() == counts.max():
        seeds = f"{counts.iloc[0]} seed" + ("s" if counts.iloc[0] > 1 else "")
    else:
        seeds = f"{counts.min()}-{counts.max()} seeds ((n=K) marks cells of another count)"
    statistic = ("mean ± population std over " + seeds if (counts.max() if len(counts) else 0) > 1
                 else "value of " + seeds)
    if ci:
        statistic += "; [95 % t-interval of the mean, clipped to 0-100]"
    teacher = (f"teacher {first['teacher_desc']} [{first['teacher'][:8]}]" if first["teacher"]
               else "no teacher")
    references = []
    if (groups["label"] == TEACHER_ROW).any():
        references.append("teacher: the teacher itself (ceiling)")
    for floor in dict.fromkeys(groups.loc[groups["reference"] == "floor", "label"]):
        references.append(f"{floor}: no pre-training (floor)")
    if what == "comparison":
        head = (f"{metric_name(metric).capitalize()} (%) on the test split of {tasks} at "
                f"{fractions} labels")
    else:
        head = what
    parts = [head, f"source {source}", teacher, budget_text, encoder_text, evaluator_text]
    recipes = sorted(set(methods.get("pretrain_desc", pd.Series(dtype=str))) - {""})
    if recipes:  # what each encoder was pre-trained with (issue 29 §4)
        parts.append(f"pre-training {recipes[0]}" if len(recipes) == 1 else
                     "pre-training recipes differ between rows (set apart by their setup)")
    if what == "comparison":
        parts.append(statistic)
    if references and what == "comparison":
        parts.append("; ".join(references))
    if groups["uses_labels"].any():
        parts.append(f"{LABELS_MARK}: the method reads the training labels (not self-supervised)")
    return "; ".join(parts) + "."


def _usual_n(groups: pd.DataFrame) -> int:
    counts = groups.loc[groups["status"] == OK, "n"]
    return int(counts.mode().max()) if len(counts) else 0


def _grid(groups: pd.DataFrame, texts: pd.Series, rows: pd.Series, columns: pd.Series,
          layout: str) -> pd.DataFrame:
    """A rows x columns frame of ``texts``: rows in the order they come, columns by
    (encoder in the ``arch`` layout,) evaluator, task, then label fraction."""
    cells = pd.DataFrame({"row": rows, "column": columns, "text": texts})
    table = cells.pivot(index="row", columns="column", values="text").fillna("")
    keys = (["encoder"] if layout == "arch" else []) + ["evaluator", "task", "fraction"]
    column_order = groups.assign(_c=columns).sort_values(keys, kind="stable")["_c"]
    table = table.loc[list(dict.fromkeys(rows)), list(dict.fromkeys(column_order))]
    table.index.name = "method"
    table.columns.name = None
    return table


def _split(groups: pd.DataFrame, layout: str) -> list[pd.DataFrame]:
    """The groups of each table of ``layout``; teacher rows join every table of their
    source, teacher (and evaluator); the ``arch`` layout has none."""
    keys = _TABLE_KEYS[layout]
    teacher = groups[groups["label"] == TEACHER_ROW]
    out = []
    for key, part in groups[groups["label"] != TEACHER_ROW].groupby(keys, sort=False):
        if layout != "arch":
            own = dict(zip(keys, key))
            mask = np.logical_and.reduce([teacher[k] == v for k, v in own.items()
                                          if k in ("source", "teacher", "evaluator")])
            part = pd.concat([teacher[mask], part])
        out.append(part)
    if not out and not teacher.empty and layout != "arch":  # only teacher rows stored
        out = [part for _, part in teacher.groupby(["source", "teacher"], sort=False)]
    return out


def comparison_tables(frame: pd.DataFrame, layout: str = "default",
                      method_order: list[str] | None = None, ci: bool = False,
                      metric: str = "accuracy") -> list[Table]:
    """Sets as rows, (task, label fraction) as columns, ``mean ± std`` over seeds, one
    table per :data:`LAYOUTS` split; the best value of each column (among sets of the
    table's budget) is marked where a paired t-test puts it ahead of the runner-up."""
    if layout not in LAYOUTS:
        raise UserError(f"table layout {layout!r} is not known; choose {', '.join(LAYOUTS)}")
    if frame.empty:
        return []
    groups = cell_groups(frame, metric)
    facets = row_facets(frame, metric)
    tables = []
    for part in _split(groups, layout):
        part = _order(part, method_order)
        budget = part.loc[part["label"] != TEACHER_ROW, "budget"]
        single_budget = float(budget.iloc[0]) if budget.nunique() == 1 else None
        rows = _row_labels(part, layout, single_budget)
        columns = _column_labels(part, layout)
        usual_n = _usual_n(part)
        texts = part.apply(lambda g, n=usual_n: _cell_text(g, ci, n), axis=1)
        bold = set()
        contenders = part[(part["label"] != TEACHER_ROW) & (part["set_images"] ==
                                                             part["budget"])]
        for _, column in contenders.groupby(columns[contenders.index], sort=False):
            for _, same_budget in column.groupby("budget"):
                for key in significantly_best(facets, same_budget):
                    index = same_budget.index[[tuple(r) == key for r in
                                               same_budget[GROUP].itertuples(index=False)]]
                    bold.update((rows[i], columns[i]) for i in index)
        tables.append(Table(_caption(part, layout, metric, ci, "comparison"),
                            _grid(part, texts, rows, columns, layout), bold))
    return tables


def _tables_per_set(groups: pd.DataFrame, method_order: list[str] | None,
                    text: Callable[[pd.Series], str], what: str, metric: str) -> list[Table]:
    """One table of ``text(group)`` per source, teacher and budget, captioned ``what``."""
    tables = []
    for part in _split(groups, "default"):
        part = _order(part, method_order)
        rows = _row_labels(part, "default", float(part["budget"].iloc[0]))
        columns = _column_labels(part, "default")
        tables.append(Table(_caption(part, "default", metric, False, what),
                            _grid(part, part.apply(text, axis=1), rows, columns, "default")))
    return tables


def paired_tables(frame: pd.DataFrame, baseline: str, method_order: list[str] | None = None,
                  metric: str = "accuracy") -> list[Table]:
    """Each set's accuracy minus ``baseline``'s on the same seeds: ``+3.21 (p=0.041, n=3)``
    (mean per-seed difference in points, two-sided paired t-test; ``p<0.001`` below that,
    ``p=n/a`` below two pairs or for identical differences), one table per source,
    teacher and budget."""
    diffs = paired_differences(frame, baseline, metric)
    if diffs.empty:
        return []

    def text(g: pd.Series) -> str:
        if g["n_pairs"] == 0:
            return "n/a (no shared seeds)"
        p = ("=n/a" if math.isnan(g["p_value"]) else "<0.001" if g["p_value"] < 0.001
             else f"={g['p_value']:.3f}")
        return f"{g['diff_mean']:+.2f} (p{p}, n={g['n_pairs']})"

    groups = cell_groups(frame[frame["status"] == OK], metric).merge(diffs, on=GROUP)
    return _tables_per_set(groups, method_order, text,
                           f"Difference from {baseline} in points of {metric_name(metric)}, "
                           "mean over the seeds both have (p: two-sided paired t-test, n: "
                           "pairs)", metric)


def relative_tables(frame: pd.DataFrame, method_order: list[str] | None = None,
                    metric: str = "accuracy") -> list[Table]:
    """Each set's gain over the ``low`` reference row as a share of the ``high`` - ``low``
    gap on the same seeds (:func:`mkdt_bench.report.stats.relative_scores`):
    ``+42.1 % [+18.0, +66.3] (n=5)``, one table per source, teacher and budget."""
    scores = relative_scores(frame, metric=metric)
    if scores.empty:
        return []
    low, high = relative_marks(row_facets(frame[frame["status"] == OK], metric))

    def text(g: pd.Series) -> str:
        if g["relative_pairs"] == 0:
            return f"n/a (no seeds shared with {low} and {high})"
        if math.isnan(g["relative"]):
            return f"n/a ({high} = {low})"
        if g["label"] in (low, high):
            return f"{g['relative']:.0f} % (reference)"
        interval = ("[unbounded]" if math.isnan(g["relative_low"]) else
                    f"[{g['relative_low']:+.1f}, {g['relative_high']:+.1f}]")
        return f"{g['relative']:+.1f} % {interval} (n={g['relative_pairs']})"

    groups = cell_groups(frame[frame["status"] == OK], metric).merge(scores, on=GROUP)
    return _tables_per_set(groups, method_order, text,
                           f"Gain over {low} as a share of the {high} - {low} gap in "
                           f"{metric_name(metric)}: 100 x mean(set - {low}) / mean({high} - "
                           f"{low}) over the seeds the three share (0 % = {low}, 100 % = "
                           f"{high}; DD-Ranking style); [95 % Fieller interval of the ratio, "
                           f"unbounded where {high} - {low} is not separated from zero]",
                           metric)


#: Budget-table columns: (heading, cost column, format).
_BUDGET_COLUMNS = (
    ("images", "set_images", lambda v: f"{v:,.0f}"),
    ("storage (KiB)", "storage_bytes", lambda v: f"{v / 1024:,.1f}"),
    ("teacher s", "teacher_s", lambda v: f"{v:,.0f}"),
    ("teacher peak MiB", "teacher_peak_mib", lambda v: f"{v:,.0f}"),
    ("sub-stages s", "substages_s", lambda v: f"{v:,.1f}"),
    ("distill s", "distill_s", lambda v: f"{v:,.1f}"),
    ("distill peak MiB", "distill_peak_mib", lambda v: f"{v:,.0f}"),
    ("pre-train steps", "pretrain_steps", lambda v: f"{v:,.0f}"),
    ("pre-train s", "pretrain_s", lambda v: f"{v:,.1f}"),
    ("eval s / cell", "evaluate_s", lambda v: f"{v:,.1f}"),
)


def budget_tables(frame: pd.DataFrame, method_order: list[str] | None = None) -> list[Table]:
    """What each pre-training set cost: storage of the set (images + targets + lr), the
    teacher (shared by every method of a grid), the method's sub-stages (e.g. expert
    trajectories; shared ones count in full for each method that needs them), the
    distillation itself, each with its peak memory, then pre-training steps and time and
    the evaluation time per cell; means over the stored rows (cells and seeds). ``-``
    where a stage does not apply or was not recorded (rows from older versions). The
    caption says whether sets of one size got equal pre-training steps."""
    ok = frame[(frame["status"] == OK) & (frame["method"] != TEACHER_ROW)]
    if ok.empty:
        return []
    groups = cell_groups(ok)
    teachers = ok["provenance"].map(lambda p: p.teacher or "")
    tables = []
    for part in _split(groups, "default"):
        part = _order(part, method_order)
        rows = _row_labels(part, "paper", None)  # one budget: no budget suffix
        if part["encoder"].nunique() > 1:
            rows = rows + part["encoder"].map(lambda e: f" [{e}]")
        out = {}
        for row, sets in part.groupby(rows, sort=False):
            means = sets[["set_images", *COSTS]].mean()
            out[row] = {heading: fmt(means[key]) if pd.notna(means[key]) else "-"
                        for heading, key, fmt in _BUDGET_COLUMNS}
        table = pd.DataFrame.from_dict(out, orient="index")
        table.index.name = "set"
        caption = _caption(part, "default", "accuracy", False,
                           "Cost of each pre-training set (means over its rows): seconds and "
                           "peak memory of each stage, storage of images + targets + lr")
        first = part.iloc[0]
        rows_of_part = ok[(ok["dataset"] == first["source"]) & (ok["budget"] == first["budget"])
                          & (teachers == first["teacher"])]
        note = pretraining_note(rows_of_part)
        tables.append(Table(caption + (f" {note[0].upper()}{note[1:]}." if note else ""),
                            table))
    return tables


__all__ = ["LAYOUTS", "Table", "budget_tables", "comparison_tables", "paired_tables",
           "relative_tables"]
