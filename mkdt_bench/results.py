"""Results store (SQLite): one row per grid cell.

A row is (dataset, method, budget, arch, evaluator, task, fraction, seed) plus the hash of
the resolved config, with the accuracy, the resolved config, package versions, device and
wall time per stage. Rows are keyed by ``cell_key`` (a hash of all of that), so a rerun of
the same grid finds the cells it already has. :mod:`mkdt_bench.summary` and
:mod:`mkdt_bench.tables` turn them into tables.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
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

#: Row statuses: a score, an error, or a downstream task whose files are absent.
OK, FAILED, MISSING = "ok", "failed", "missing"

#: What a table can show: top-1 accuracy, or the mean of the per-class accuracies (the
#: convention for Aircraft and Flowers), which evaluators store in ``metrics``.
METRICS = ("accuracy", "mean_per_class_accuracy")


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

    @classmethod
    def read_only(cls, path: str | Path) -> ResultStore:
        """The database opened for reading, creating and writing nothing (for planning): a
        missing file reads as empty; a database that a run has open (its ``-wal`` and
        ``-shm`` files exist) is read through them, any other opened as immutable."""
        store = cls.__new__(cls)
        store.path = Path(path).expanduser()
        wal = [store.path.with_name(store.path.name + s) for s in ("-wal", "-shm")]
        try:
            if not store.path.exists():
                store._conn = sqlite3.connect(":memory:")
                store._conn.execute(SCHEMA)
            else:
                mode = "mode=ro" if all(p.is_file() for p in wal) else "immutable=1"
                uri = f"file:{urllib.parse.quote(str(store.path.absolute()))}?{mode}"
                store._conn = sqlite3.connect(uri, uri=True, timeout=60)
                store._conn.execute("SELECT count(*) FROM results").fetchone()
        except (sqlite3.DatabaseError, OSError) as e:
            raise UserError(f"results database {str(store.path)!r} cannot be used: {e}; "
                            "give a new SQLite file with --results-db") from None
        return store

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


__all__ = ["FAILED", "FLOOR_ROW", "METRICS", "MISSING", "OK", "TEACHER_ROW", "ResultRow",
           "ResultStore"]
