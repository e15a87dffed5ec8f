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


def _mean_std(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "failed"
    return f"{v.mean():.2f} ± {v.std(ddof=0):.2f}"  # population std, as the paper


def short_task_name(task: str) -> str:
    """``imagefolder:/long/path/cifar10-jpeg`` -> ``imagefolder:cifar10-jpeg`` for headers."""
    if task.startswith("imagefolder:"):
        return "imagefolder:" + Path(task.split(":", 1)[1]).name
    return task


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``row`` label (method, plus budget/arch when mixed) and a ``column``
    label (task @ label fraction, plus evaluator when mixed)."""
    df = frame.copy()
    labels = df["fraction"].map(lambda f: f"{f * 100:g}%")
    task = df["task"].map(short_task_name)
    df["column"] = df["evaluator"] + " " + task + " @ " + labels
    if df["evaluator"].nunique() == 1:
        df["column"] = task + " @ " + labels
    label = df["method"].astype(str)
    methods_only = df["method"] != TEACHER_ROW
    if df.loc[methods_only, "budget"].nunique() > 1:
        label = label + " (" + df["budget"].astype(str) + ")"
    if df.loc[methods_only, "arch"].nunique() > 1:
        label = label + " [" + df["arch"] + "]"
    df["row"] = label
    return df


def _arrange(table: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Teacher first, methods in ``order``, ``none`` last; columns by task then fraction."""

    def rank(row_label: str) -> tuple[int, int, str]:
        method = row_label.split(" ")[0]
        if method == TEACHER_ROW:
            return (0, 0, row_label)
        if method == FLOOR_ROW:
            return (2, 0, row_label)
        return (1, order.index(method) if method in order else len(order), row_label)

    columns = sorted(table.columns, key=lambda c: (c.rsplit(" @ ", 1)[0],
                                                   float(c.rsplit(" @ ", 1)[1].rstrip("%"))))
    table = table.loc[sorted(table.index, key=rank), columns]
    table.index.name = "method"
    table.columns.name = None
    return table


def comparison_table(frame: pd.DataFrame, method_order: list[str] | None = None) -> pd.DataFrame:
    """Methods as rows, (task, label fraction) as columns, ``mean ± std`` over seeds.

    The teacher row comes first and the ``none`` row last; budget and architecture are
    part of the row label when a frame mixes several of them.
    """
    if frame.empty:
        return pd.DataFrame()
    df = _labelled(frame)
    cells = df.groupby(["row", "column"], sort=False)["accuracy"].agg(_mean_std)
    return _arrange(cells.unstack("column"), method_order or list(dict.fromkeys(df["method"])))


def paired_table(frame: pd.DataFrame, baseline: str = "random",
                 method_order: list[str] | None = None) -> pd.DataFrame:
    """Each method's accuracy minus ``baseline``'s on the same seeds, with a paired t-test.

    A cell reads ``+3.21 (p=0.041, n=3)``: the mean over the seeds both rows have (same
    budget, architecture, task, fraction and evaluator) of the per-seed difference in
    points, and the two-sided p-value of ``scipy.stats.ttest_rel`` on those pairs
    (``p=n/a`` with fewer than two pairs or identical differences).
    """
    from scipy.stats import ttest_rel

    df = _labelled(frame[frame["status"] == "ok"])
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
    table = pd.Series(cells).unstack()
    return _arrange(table, method_order or list(dict.fromkeys(df["method"])))


def render(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """A table as ``markdown``, ``csv`` or ``latex`` text."""
    if table.empty:
        return "(no results)"
    if fmt == "markdown":
        return table.to_markdown()
    if fmt == "csv":
        return table.to_csv()
    if fmt == "latex":
        return table.to_latex(escape=True)
    raise UserError(f"table format {fmt!r} is not known; choose markdown, csv or latex")


__all__ = ["ResultRow", "ResultStore", "comparison_table", "paired_table", "render"]
