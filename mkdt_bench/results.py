"""Results store (SQLite) and comparison tables rendered from stored rows.

One row per grid cell: (dataset, method, budget, arch, evaluator, task, fraction, seed)
plus the hash of the resolved config, with the accuracy, the resolved config, package
versions, device and wall time per stage. Rows are keyed by ``cell_key`` (a hash of all
of that), so a rerun of the same grid finds the cells it already has.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mkdt_bench.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    cell_key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    method TEXT NOT NULL,
    budget INTEGER NOT NULL,
    arch TEXT NOT NULL,
    evaluator TEXT NOT NULL,
    task TEXT NOT NULL,
    fraction REAL NOT NULL,
    seed INTEGER NOT NULL,
    accuracy REAL,
    status TEXT NOT NULL,
    error TEXT,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    versions TEXT NOT NULL,
    device TEXT NOT NULL,
    timings TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created REAL NOT NULL
)
"""

#: Rows that are reference points rather than methods: always first / last in a table.
TEACHER_ROW = "teacher"
FLOOR_ROW = "none"

#: Row statuses: a score, an error, or a downstream task whose files are absent.
OK, FAILED, MISSING = "ok", "failed", "missing"

#: What a table can show: top-1 accuracy, or the mean of the per-class accuracies (the
#: convention for Aircraft and Flowers), which evaluators store in ``metrics``.
METRICS = ("accuracy", "mean_per_class_accuracy")

#: Table layouts: ``default`` (budget/arch in the row label only when mixed), ``paper``
#: (rows = pre-training set "method (budget)", one table per evaluator and architecture)
#: and ``arch`` (methods x architectures, one table per evaluator).
LAYOUTS = ("default", "paper", "arch")


@dataclass
class ResultRow:
    """One evaluated grid cell."""

    cell_key: str
    dataset: str
    method: str
    budget: int
    arch: str
    evaluator: str
    task: str
    fraction: float
    seed: int
    accuracy: float | None
    status: str = "ok"
    error: str | None = None
    config_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


class ResultStore:
    """The SQLite database of result rows (WAL mode, busy timeout for concurrent runs)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=60)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(SCHEMA)
            self._conn.commit()
        except (sqlite3.DatabaseError, OSError) as e:
            raise UserError(f"results database {str(self.path)!r} cannot be used: {e}; "
                            "give a new SQLite file with --results-db") from None

    def close(self) -> None:
        self._conn.close()

    def has(self, cell_key: str) -> bool:
        cur = self._conn.execute(
            "SELECT 1 FROM results WHERE cell_key = ? AND status = 'ok'", (cell_key,))
        return cur.fetchone() is not None

    def done(self, cell_keys: list[str]) -> dict[str, tuple[float, dict[str, float] | None]]:
        """``{cell_key: (created, built_from)}`` of the ok rows among ``cell_keys``
        (``built_from``: the stamps of the artifacts the row was computed from; ``None``
        for rows from before they were recorded)."""
        out = {}
        for i in range(0, len(cell_keys), 500):
            chunk = cell_keys[i:i + 500]
            cur = self._conn.execute(
                "SELECT cell_key, created, config FROM results WHERE status = 'ok' AND "
                f"cell_key IN ({', '.join('?' * len(chunk))})", chunk)
            for key, created, config in cur:
                out[key] = (float(created), json.loads(config).get("built_from"))
        return out

    def add(self, rows: Iterable[ResultRow]) -> None:
        """Insert rows in one transaction (a failed cell is replaced when it later succeeds)."""
        records = []
        for r in rows:
            d = asdict(r)
            for k in ("config", "versions", "timings", "metrics"):
                d[k] = json.dumps(d[k], sort_keys=True, default=str)
            records.append(d)
        if not records:
            return
        cols = list(records[0])
        sql = (f"INSERT OR REPLACE INTO results ({', '.join(cols)}) "
               f"VALUES ({', '.join(':' + c for c in cols)})")
        with self._conn:
            self._conn.executemany(sql, records)

    def frame(self, **filters: Any) -> pd.DataFrame:
        """All rows as a DataFrame, optionally filtered by column equality (lists allowed)."""
        clauses, params = [], []
        for col, value in filters.items():
            if value is None or value == []:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return pd.read_sql_query(f"SELECT * FROM results{where} ORDER BY created", self._conn,
                                 params=params)


def with_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The frame with ``accuracy`` replaced by ``metric`` (NaN where a row lacks it)."""
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is not known; choose {', '.join(METRICS)}")
    if metric == "accuracy" or frame.empty:
        return frame
    df = frame.copy()
    df["accuracy"] = [json.loads(m).get(metric) if isinstance(m, str) else m.get(metric)
                      for m in df["metrics"]]
    df["accuracy"] = df["accuracy"].astype(float)
    return df


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean (sample std, n - 1 degrees of freedom)."""
    from scipy.stats import t

    n = len(values)
    half = t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def _summary(group: pd.DataFrame, ci: bool) -> str:
    """``mean ± std`` (population std, as the paper) of a cell's ok rows, with ``[lo, hi]``
    (95 % t-interval) when ``ci``; ``n/a (missing: <path>)`` for an absent task; ``failed``."""
    v = group.loc[group["status"] == OK, "accuracy"].dropna().to_numpy(dtype=float)
    if len(v) == 0:
        missing = group.loc[group["status"] == MISSING, "error"]
        if len(missing):
            return f"n/a ({missing.iloc[-1]})"
        statuses = set(group["status"])
        return "failed" if FAILED in statuses or statuses == {OK} else "n/a"
    text = f"{v.mean():.2f} ± {v.std(ddof=0):.2f}"
    if ci:
        lo, hi = confidence_interval(v) if len(v) > 1 else (None, None)
        text += f" [{lo:.2f}, {hi:.2f}]" if lo is not None else " [n/a]"
    return text


def short_task_name(task: str) -> str:
    """``imagefolder:/long/path/cifar10-jpeg`` -> ``imagefolder:cifar10-jpeg`` for headers."""
    if task.startswith("imagefolder:"):
        return "imagefolder:" + Path(task.split(":", 1)[1]).name
    return task


def _labelled(frame: pd.DataFrame, budget_in_row: bool = False,
              arch_in_column: bool = False) -> pd.DataFrame:
    """The frame with a ``row`` label (method, plus budget/arch when mixed or asked for) and
    a ``column`` label (task @ label fraction, plus evaluator when mixed, plus the
    architecture with ``arch_in_column``)."""
    df = frame.copy()
    labels = df["fraction"].map(lambda f: f"{f * 100:g}%")
    task = df["task"].map(short_task_name)
    df["column"] = task + " @ " + labels
    if df["evaluator"].nunique() > 1:
        df["column"] = df["evaluator"] + " " + df["column"]
    if arch_in_column:
        df["column"] = df["arch"] + " / " + df["column"]
    label = df["method"].astype(str)
    methods_only = df["method"] != TEACHER_ROW
    if budget_in_row or df.loc[methods_only, "budget"].nunique() > 1:
        label = label + " (" + df["budget"].astype(str) + ")"
    if not arch_in_column and df.loc[methods_only, "arch"].nunique() > 1:
        label = label + " [" + df["arch"] + "]"
    df["row"] = label
    return df


def _arrange(table: pd.DataFrame, order: list[str], column_order: list[str]) -> pd.DataFrame:
    """Teacher first, methods in ``order``, ``none`` last; columns in ``column_order`` of
    their prefix (architecture), then by task and label fraction."""

    def rank(row_label: str) -> tuple[int, int, str]:
        method = row_label.split(" ")[0]
        if method == TEACHER_ROW:
            return (0, 0, row_label)
        if method == FLOOR_ROW:
            return (2, 0, row_label)
        return (1, order.index(method) if method in order else len(order), row_label)

    def column_rank(column: str) -> tuple[int, str, float]:
        head, fraction = column.rsplit(" @ ", 1)
        prefix = head.split(" / ")[0] if " / " in head else ""
        position = column_order.index(prefix) if prefix in column_order else 0
        return (position, head, float(fraction.rstrip("%")))

    table = table.loc[sorted(table.index, key=rank), sorted(table.columns, key=column_rank)]
    table.index.name = "method"
    table.columns.name = None
    return table


def comparison_table(frame: pd.DataFrame, method_order: list[str] | None = None,
                     ci: bool = False, metric: str = "accuracy", budget_in_row: bool = False,
                     arch_in_column: bool = False) -> pd.DataFrame:
    """Methods as rows, (task, label fraction) as columns, ``mean ± std`` over seeds.

    The teacher row comes first and the ``none`` row last; budget and architecture are
    part of the row label when a frame mixes several of them (or when asked for:
    ``budget_in_row``; ``arch_in_column`` makes architectures columns instead). ``ci``
    adds a 95 % t-interval; ``metric`` is one of :data:`METRICS`.
    """
    if frame.empty:
        return pd.DataFrame()
    df = _labelled(with_metric(frame, metric), budget_in_row, arch_in_column)
    cells = df.groupby(["row", "column"], sort=False)[["status", "accuracy", "error"]].apply(
        lambda g: _summary(g, ci))
    return _arrange(cells.unstack("column").fillna(""),
                    method_order or list(dict.fromkeys(df["method"])),
                    list(dict.fromkeys(df["arch"])))


def layout_tables(frame: pd.DataFrame, layout: str = "default",
                  method_order: list[str] | None = None, ci: bool = False,
                  metric: str = "accuracy") -> list[tuple[str, pd.DataFrame]]:
    """``(title, table)`` pairs for a :data:`LAYOUTS` layout (title empty for ``default``).

    ``paper`` repeats the teacher row in each of its tables; ``arch`` leaves it out (the
    teacher is not pre-trained on a set, so it has no place among the architectures)."""
    if layout not in LAYOUTS:
        raise UserError(f"table layout {layout!r} is not known; choose {', '.join(LAYOUTS)}")
    if layout == "default" or frame.empty:
        return [("", comparison_table(frame, method_order, ci, metric))]
    keys = ["evaluator", "arch"] if layout == "paper" else ["evaluator"]
    teacher = frame[frame["method"] == TEACHER_ROW]
    out = []
    for key, group in frame[frame["method"] != TEACHER_ROW].groupby(keys, sort=False):
        if layout == "paper":  # the teacher is every table's reference row
            group = pd.concat([teacher[teacher["evaluator"] == key[0]], group])
        title = " / ".join(str(k) for k in key)
        out.append((title, comparison_table(group, method_order, ci, metric,
                                            budget_in_row=True,
                                            arch_in_column=layout == "arch")))
    return out


def paired_table(frame: pd.DataFrame, baseline: str = "random",
                 method_order: list[str] | None = None, metric: str = "accuracy"
                 ) -> pd.DataFrame:
    """Each method's accuracy minus ``baseline``'s on the same seeds, with a paired t-test.

    A cell reads ``+3.21 (p=0.041, n=3)``: the mean over the seeds both rows have (same
    budget, architecture, task, fraction and evaluator) of the per-seed difference in
    points, and the two-sided p-value of ``scipy.stats.ttest_rel`` on those pairs
    (``p=n/a`` with fewer than two pairs or identical differences).
    """
    from scipy.stats import ttest_rel

    df = _labelled(with_metric(frame[frame["status"] == OK], metric))
    if baseline not in set(df["method"]):
        raise UserError(f"no results for the paired baseline {baseline!r}; methods stored: "
                        f"{', '.join(sorted(set(df['method'])))}")
    keys = ["budget", "arch", "column", "seed"]
    base = df[df["method"] == baseline].set_index(keys)["accuracy"]
    cells = {}
    others = df[~df["method"].isin([baseline, TEACHER_ROW])]
    for (row, column), group in others.groupby(["row", "column"], sort=False):
        values = group.set_index(keys)["accuracy"]
        common = values.index.intersection(base.index)
        if len(common) == 0:
            cells[(row, column)] = "n/a (no shared seeds)"
            continue
        a, b = values.loc[common].to_numpy(float), base.loc[common].to_numpy(float)
        diff = a - b
        p = "n/a"
        if len(diff) >= 2 and diff.std() > 0:
            p = f"{ttest_rel(a, b).pvalue:.3f}"
        cells[(row, column)] = f"{diff.mean():+.2f} (p={p}, n={len(diff)})"
    if not cells:
        return pd.DataFrame()
    table = pd.Series(cells).unstack().fillna("")  # a row may lack some columns
    return _arrange(table, method_order or list(dict.fromkeys(df["method"])),
                    list(dict.fromkeys(df["arch"])))


#: Budget-table columns: (heading, ``timings`` key, format).
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


def budget_table(frame: pd.DataFrame, method_order: list[str] | None = None) -> pd.DataFrame:
    """What each pre-training set cost: storage of the set (images + targets + lr), the
    teacher (shared by every method of a grid), the method's sub-stages (e.g. expert
    trajectories; shared ones count in full for each method that needs them), the
    distillation itself, each with its peak memory, then pre-training steps and time and
    the evaluation time per cell; means over the stored rows (cells and seeds).
    ``-`` where a stage does not apply or was not recorded (rows from older versions)."""
    df = frame[(frame["status"] == OK) & (frame["method"] != TEACHER_ROW)]
    if df.empty:
        return pd.DataFrame()
    df = _labelled(df, budget_in_row=True)
    timings = pd.DataFrame([json.loads(t) if isinstance(t, str) else t for t in df["timings"]],
                           index=df.index)
    out = {}
    for row, idx in df.groupby("row", sort=False).groups.items():
        means = timings.loc[idx].mean(numeric_only=True)
        out[row] = {heading: fmt(means[key]) if key in means and pd.notna(means[key]) else "-"
                    for heading, key, fmt in _BUDGET_COLUMNS}
    table = pd.DataFrame.from_dict(out, orient="index")
    order = method_order or list(dict.fromkeys(df["method"]))
    table = table.loc[sorted(table.index, key=lambda r: (
        r.split(" ")[0] == FLOOR_ROW, order.index(r.split(" ")[0])
        if r.split(" ")[0] in order else len(order), r))]
    table.index.name = "set"
    return table


def equal_pretraining(frame: pd.DataFrame) -> str:
    """One line: whether every set of the same size got the same number of pre-training
    steps (the runner applies one pre-training config to all methods of a grid; sets of
    another size, such as ``full``, get proportionally more or fewer)."""
    df = frame[(frame["status"] == OK) & ~frame["method"].isin([TEACHER_ROW, FLOOR_ROW])]
    if df.empty:
        return ""
    timings = [json.loads(t) if isinstance(t, str) else t for t in df["timings"]]
    df = df.assign(steps=[t.get("pretrain_steps") for t in timings],
                   size=[t.get("set_images", b) for t, b in zip(timings, df["budget"])])
    df = df.dropna(subset=["steps"])
    groups = sorted(df.groupby("size"), key=lambda kv: kv[0])
    unequal = [f"{int(n)} images: {sorted(set(g['steps'].astype(int)))}"
               for n, g in groups if g["steps"].nunique() > 1]
    if unequal:
        return "pre-training steps differ between sets of one size: " + "; ".join(unequal)
    return "equal pre-training steps for every set of one size: " + ", ".join(
        f"{int(g['steps'].iloc[0])} steps for {int(n)} images" for n, g in groups)


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """A table as ``markdown``, ``csv`` or ``latex`` text."""
    if table.empty:
        return "(no results)"
    if fmt == "markdown":
        return table.to_markdown()
    if fmt == "csv":
        return table.to_csv()
    if fmt == "latex":
        return table.to_latex(escape=True).replace("±", r"$\pm$")
    raise UserError(f"table format {fmt!r} is not known; choose markdown, csv or latex")


__all__ = ["LAYOUTS", "METRICS", "ResultRow", "ResultStore", "budget_table", "comparison_table",
           "layout_tables", "paired_table", "render"]
