"""Results store (SQLite): one row per grid cell.

A row is (dataset, method, budget, arch, evaluator, task, fraction, seed) plus the hash of
the resolved config, with the accuracy, the resolved config, package versions, device and
wall time per stage. Rows are keyed by ``cell_key`` (a hash of all of that), so a rerun of
the same grid finds the cells it already has. The ``config`` and ``timings`` JSON are the
records of :mod:`mkdt_bench.rows`; frames carry them parsed (:data:`RECORD_COLUMNS`), older
rows upgraded. :mod:`mkdt_bench.report` turns them into tables and figures.

Finished rows are never lost (issue 29, section 3): rows the database cannot take (locked
past the busy timeout, read-only, full disk, a value SQLite cannot hold) are kept in a
JSON-lines *spill file* beside it (or in ``<cache>/unstored/`` when its folder takes no
file), which the next ``run``/``eval`` into that database, or ``mkdt-bench results
ingest``, stores. A spill file is untrusted data: every field is checked, nothing in it
runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sqlite3
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.rows import Provenance, Timings, parse_row

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

#: ``PRAGMA user_version`` of :data:`SCHEMA`; a database of an older version is migrated
#: when opened for writing, one of a newer version refused.
SCHEMA_VERSION = 1

#: The SQL statements that take a database from version ``v`` to ``v + 1``. Version 0:
#: databases written before the version was recorded, with the same table.
MIGRATIONS: dict[int, tuple[str, ...]] = {0: ()}

#: Seconds a write waits for another process's lock before its rows are kept in a spill
#: file instead (default 60).
TIMEOUT_ENV = "MKDT_BENCH_DB_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86400.0

#: The integers SQLite holds.
INT64 = (-2**63, 2**63 - 1)

#: The largest spill file read (a guard against a device or a huge planted file).
MAX_SPILL_BYTES = 256 * 2**20

#: Failures of the database (locked, read-only, full disk, I/O) and of a value it cannot
#: hold: the rows are kept in a spill file instead.
STORE_ERRORS = (sqlite3.Error, OSError, OverflowError, UnicodeError)

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


#: The columns, in the order of :class:`ResultRow`; the dicts are stored as JSON text.
COLUMNS = tuple(f.name for f in fields(ResultRow))
#: The columns a frame adds: the records of ``config`` and ``timings``
#: (:class:`~mkdt_bench.rows.Provenance`, :class:`~mkdt_bench.rows.Timings`), parsed and
#: upgraded once.
RECORD_COLUMNS = ("provenance", "costs")
_JSON_COLUMNS = ("config", "versions", "timings", "metrics")
_TEXT_COLUMNS = ("cell_key", "dataset", "method", "arch", "evaluator", "task", "status",
                 "config_hash", "device")


def busy_timeout() -> float:
    """Seconds a write waits for another process's lock: ``$MKDT_BENCH_DB_TIMEOUT``, else
    60."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_TIMEOUT:
        raise UserError(f"${TIMEOUT_ENV}={text!r} must be a number of seconds from 0 to "
                        f"{MAX_TIMEOUT:g}")
    return value


def _record(row: ResultRow) -> dict[str, Any]:
    """A row as the database's columns: its dicts as JSON text, and text that is no UTF-8
    (lone surrogates of undecodable file names, e.g. in an error) with those escaped."""
    d = asdict(row)
    for k in _JSON_COLUMNS:
        d[k] = json.dumps(d[k], sort_keys=True, default=str)
    for k in (*_TEXT_COLUMNS, "error"):
        if isinstance(d[k], str):
            d[k] = d[k].encode("utf-8", "backslashreplace").decode("utf-8")
    return d


def _with_records(frame: pd.DataFrame, records: list[tuple[Provenance, Timings]]) -> pd.DataFrame:
    frame["provenance"] = pd.Series([p for p, _ in records], index=frame.index, dtype=object)
    frame["costs"] = pd.Series([t for _, t in records], index=frame.index, dtype=object)
    return frame


def rows_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """Rows as :meth:`ResultStore.frame` returns them: the columns of :class:`ResultRow`
    (the dicts as JSON text) and :data:`RECORD_COLUMNS`."""
    rows = list(rows)
    frame = pd.DataFrame([_record(r) for r in rows], columns=list(COLUMNS))
    frame = frame.astype({"accuracy": float, "fraction": float, "created": float})
    return _with_records(frame, [parse_row(r.config, r.timings, r.method, r.evaluator,
                                           f"cell {r.cell_key!r}") for r in rows])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


SPILL_ADVICE = "correct or delete that line (or move the file aside) and try again"


def row_from_record(record: Any, where: str, advice: str = SPILL_ADVICE) -> ResultRow:
    """The row one line of a spill file (or a database record, its JSON decoded) holds, every
    field checked: a UserError names ``where``, the first bad field and ``advice``."""
    return _checked(record, where, advice)[0]


def _checked(record: Any, where: str,
             advice: str) -> tuple[ResultRow, tuple[Provenance, Timings]]:
    """:func:`row_from_record`, with the row's records."""
    def bad(problem: str) -> UserError:
        return UserError(f"{where}: {problem}" + (f"; {advice}" if advice else ""))

    if not isinstance(record, dict):
        raise bad(f"a result row is a JSON object, not {type(record).__name__}")
    missing = [c for c in COLUMNS if c not in record]
    unknown = sorted(str(k) for k in record if k not in COLUMNS)
    if missing or unknown:
        raise bad(f"fields {', '.join(missing)} missing" if missing else
                  f"unknown fields {', '.join(map(_short, unknown))}")
    for name in (*_TEXT_COLUMNS, "error"):
        value = record[name]
        if name == "error" and value is None:
            continue
        if not isinstance(value, str):
            raise bad(f"{name} {_short(value)} must be text")
    if not record["cell_key"]:
        raise bad("cell_key is empty")
    if record["status"] not in (OK, FAILED, MISSING):
        raise bad(f"status {_short(record['status'])} must be {OK}, {FAILED} or {MISSING}")
    for name in ("budget", "seed"):
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, int) or \
                not INT64[0] <= value <= INT64[1]:
            raise bad(f"{name} {_short(value)} must be an integer from {INT64[0]} to "
                      f"{INT64[1]} (what SQLite holds)")
    for name in ("fraction", "created", "accuracy"):
        value = record[name]
        if name == "accuracy" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise bad(f"{name} {_short(value)} must be a finite number")
    for name in _JSON_COLUMNS:
        if not isinstance(record[name], dict):
            raise bad(f"{name} {_short(record[name])} must be a JSON object")
    try:
        records = parse_row(record["config"], record["timings"], record["method"],
                            record["evaluator"], "the row")
    except UserError as e:
        raise bad(str(e)) from None
    return ResultRow(**{c: record[c] for c in COLUMNS}), records


def spill_folders(db: Path, cache_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """Where the rows that ``db`` could not take are kept, in order: ``(folder, file name
    prefix)`` beside it, then in ``<cache_dir>/unstored/`` (named by a hash of its path)."""
    db = Path(db).expanduser()
    out = [(db.parent, f"{db.name}.unstored-")]
    if cache_dir is not None:
        tag = hashlib.sha256(str(db.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
        out.append((Path(cache_dir).expanduser() / "unstored", f"{db.name}-{tag[:12]}-"))
    return out


def find_spills(db: Path, cache_dir: str | Path | None = None) -> list[Path]:
    """The spill files of ``db`` (see :func:`spill_folders`), oldest name first."""
    out = []
    for folder, prefix in spill_folders(db, cache_dir):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        out += [folder / n for n in names
                if n.startswith(prefix) and n.endswith(".jsonl") and (folder / n).is_file()]
    return out


def read_spill(path: Path) -> list[ResultRow]:
    """The rows of a spill file (JSON lines), every field checked: a UserError names the
    file and its first bad line. A file that is gone (another run stored it) holds none."""
    path = Path(path)
    try:
        if not path.exists():
            return []
        if not path.is_file():
            raise UserError(f"spill file {str(path)!r} is not a file")
        if path.stat().st_size > MAX_SPILL_BYTES:
            raise UserError(f"spill file {str(path)!r} is larger than "
                            f"{MAX_SPILL_BYTES >> 20} MiB; it is not one mkdt-bench wrote")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"spill file {str(path)!r} cannot be read: {e}") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"spill file {str(path)!r} line {n}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise UserError(f"{where} is not JSON ({e}); correct or delete that line (or move "
                            "the file aside) and try again") from None
        rows.append(row_from_record(record, where))
    return rows


def spill_text(rows: Iterable[ResultRow]) -> str:
    """Rows as the JSON lines of a spill file."""
    return "".join(json.dumps(asdict(r), sort_keys=True, default=str) + "\n" for r in rows)


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # stored: a rerun reads it again and stores nothing twice


def _connect(database: str, timeout: float, uri: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(database, timeout=timeout, uri=uri)


class ResultStore:
    """The SQLite database of result rows (WAL mode, busy timeout for concurrent runs).

    Rows it cannot take are kept (:meth:`save`) in a spill file (:func:`spill_folders`;
    ``spill_dir``: the cache folder, the second choice), and the rows of spill files read
    with :meth:`keep_files` count as its own (:meth:`done`, :meth:`frame`) until
    :meth:`flush` stores them. ``timeout``: seconds a write waits for another process's
    lock (default :func:`busy_timeout`).
    """

    def __init__(self, path: str | Path, timeout: float | None = None,
                 spill_dir: str | Path | None = None) -> None:
        self._setup(path, timeout, spill_dir)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = _connect(str(self.path), self.timeout)
            known = self._check_schema()  # before anything is written to another database
            self._conn.execute("PRAGMA journal_mode=WAL")
            if not known:
                self._conn.execute(SCHEMA)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._conn.commit()
            self._migrate()
            self._check_writable()
        except (sqlite3.DatabaseError, OSError) as e:
            raise self._unusable(e) from None
        except UserError:
            self._conn.close()
            raise

    @classmethod
    def read_only(cls, path: str | Path, timeout: float | None = None) -> ResultStore:
        """The database opened for reading, creating and writing nothing (for planning): a
        missing file reads as empty; a database that a run has open (its ``-wal`` and
        ``-shm`` files exist) is read through them, any other opened as immutable. Its
        schema is checked as :class:`ResultStore` checks it (an older version is read)."""
        store = cls.__new__(cls)
        store._setup(path, timeout, None)
        wal = [store.path.with_name(store.path.name + s) for s in ("-wal", "-shm")]
        store._conn = None
        try:
            if store.path.exists():
                mode = "mode=ro" if all(p.is_file() for p in wal) else "immutable=1"
                uri = f"file:{urllib.parse.quote(str(store.path.absolute()))}?{mode}"
                store._conn = _connect(uri, store.timeout, uri=True)
                if not store._check_schema():
                    store._conn.close()
                    store._conn = None
            if store._conn is None:
                store._conn = sqlite3.connect(":memory:")
                store._conn.execute(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as e:
            raise store._unusable(e) from None
        except UserError:
            store._conn.close()
            raise
        return store

    def _setup(self, path: str | Path, timeout: float | None,
               spill_dir: str | Path | None) -> None:
        self.path = Path(path).expanduser()
        self.timeout = busy_timeout() if timeout is None else float(timeout)
        self.spill_dir = spill_dir
        #: why the database took no rows ('' while it takes them)
        self.error = ""
        #: spill files stored by :meth:`flush`, with their row counts, and the rows it wrote
        #: (a row older than the database's row of its cell is not)
        self.stored_from: list[tuple[Path, int]] = []
        self.written = 0
        #: what is wrong with each malformed row :meth:`frame` left out
        self.malformed: list[str] = []
        self._files: dict[Path, list[ResultRow]] = {}
        self._unstored: list[ResultRow] = []
        self._spill: Path | None = None
        self._own_files: set[Path] = set()

    def _unusable(self, error: BaseException) -> UserError:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        return UserError(f"results database {str(self.path)!r} cannot be used: {error}; "
                         "give a new SQLite file with --results-db")

    def _check_schema(self) -> bool:
        """Whether the database has the ``results`` table; a UserError when it is another
        application's database, a table of other columns, or a newer schema version."""
        where = f"results database {str(self.path)!r}"
        tables = sorted(name for (name,) in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        if "results" not in tables:
            if tables:
                raise UserError(f"{where} has no `results` table (it has "
                                f"{', '.join(map(_short, tables[:5]))}): it is not a mkdt-bench "
                                "database; give a new SQLite file with --results-db")
            return False
        info = list(self._conn.execute("PRAGMA table_info(results)"))
        columns = {row[1] for row in info}
        keyed = any(row[1] == "cell_key" and row[5] for row in info)
        if columns != set(COLUMNS) or not keyed:
            missing = [c for c in COLUMNS if c not in columns]
            unknown = sorted(columns - set(COLUMNS))
            detail = "; ".join(part for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(map(_short, unknown))}" if unknown else "",
                "cell_key is not its primary key" if not keyed and "cell_key" in columns
                else "") if part)
            raise UserError(f"{where} has a `results` table of another schema ({detail}): it "
                            "is not a mkdt-bench database; give a new SQLite file with "
                            "--results-db")
        triggers = [name for (name,) in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        if triggers:  # SQL run on every insert: it could change or drop the rows stored
            raise UserError(f"{where} has the trigger {_short(triggers[0])}: mkdt-bench "
                            "databases have none, and a trigger could change the rows a run "
                            "stores; give a new SQLite file with --results-db")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if not 0 <= version <= SCHEMA_VERSION:
            raise UserError(f"{where} has schema version {version}, not one of mkdt-bench's "
                            f"(this one knows 0 to {SCHEMA_VERSION}; a newer mkdt-bench may "
                            "have written it): upgrade mkdt-bench or give another "
                            "--results-db")
        return True

    def _migrate(self) -> None:
        """Take an older database to :data:`SCHEMA_VERSION`, in one transaction."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise

    def _check_writable(self) -> None:
        """Refuse now, before any work, a database that takes no write (a read-only file or
        medium); a lock another process holds is waited for when rows are written."""
        self._conn.execute("PRAGMA busy_timeout = 0")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM results WHERE 0")  # refused when read-only
            finally:
                self._conn.rollback()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def close(self) -> None:
        self._conn.close()

    @property
    def unstored(self) -> list[ResultRow]:
        """The rows of this database that it does not hold: those of the spill files read
        (:meth:`keep_files`) and those it could not take (:meth:`save`)."""
        return [r for rows in self._files.values() for r in rows] + self._unstored

    @property
    def spill_files(self) -> list[Path]:
        """The files that keep :attr:`unstored`."""
        return [*self._files, *([self._spill] if self._spill else [])]

    def _overlay(self) -> dict[str, ResultRow]:
        """The newest unstored row of each cell."""
        out: dict[str, ResultRow] = {}
        for r in self.unstored:
            if r.cell_key not in out or r.created > out[r.cell_key].created:
                out[r.cell_key] = r
        return out

    def has(self, cell_key: str) -> bool:
        return cell_key in self.done([cell_key])

    def done(self, cell_keys: list[str]) -> dict[str, tuple[float, dict[str, float] | None]]:
        """``{cell_key: (created, built_from)}`` of the cells among ``cell_keys`` whose
        newest row (stored or unstored) is ok (``built_from``: the stamps of the artifacts
        the row was computed from; ``None`` for rows from before they were recorded)."""
        newest: dict[str, tuple[float, str, dict[str, float] | None]] = {}
        for i in range(0, len(cell_keys), 500):
            chunk = cell_keys[i:i + 500]
            cur = self._conn.execute(
                "SELECT cell_key, created, status, config FROM results WHERE "
                f"cell_key IN ({', '.join('?' * len(chunk))})", chunk)
            for key, created, status, config in cur:
                try:
                    built = Provenance.from_json(config).built_from if status == OK else None
                    newest[key] = (float(created), status, built)
                except (TypeError, ValueError, UserError):
                    continue  # a row that is not one mkdt-bench wrote: computed again
        wanted = set(cell_keys)
        for key, row in self._overlay().items():
            if key in wanted and (key not in newest or row.created > newest[key][0]):
                newest[key] = (row.created, row.status,
                               Provenance.from_json(row.config).built_from)
        return {key: (created, built) for key, (created, status, built) in newest.items()
                if status == OK}

    def add(self, rows: Iterable[ResultRow]) -> None:
        """Insert rows in one transaction (a failed cell is replaced when it later
        succeeds); raises what the database raises (:meth:`save` keeps the rows instead)."""
        records = [_record(r) for r in rows]
        if not records:
            return
        sql = (f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join(':' + c for c in COLUMNS)})")
        with self._conn:
            self._conn.executemany(sql, records)

    def save(self, rows: Iterable[ResultRow]) -> None:
        """Store rows, or keep those the database cannot take (locked past the timeout,
        read-only, full disk, a value SQLite cannot hold) in this process's spill file.
        After a failed write later rows go to the spill file directly (no wait per cell);
        :meth:`flush` tries the database again."""
        rows = list(rows)
        if not rows:
            return
        if not self._unstored:
            try:
                self.add(rows)
                return
            except STORE_ERRORS as e:
                self.error = _reason(e)
        self._unstored += rows
        self._write_spill()

    def _write_spill(self) -> None:
        """Write this process's unstored rows (all of them, atomically) to its spill file,
        else to a new one in the next folder of :func:`spill_folders` that takes it."""
        from mkdt_bench.cache import atomic_write_bytes

        data = spill_text(self._unstored).encode()
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        targets = [self._spill] if self._spill else []
        targets += [folder / f"{prefix}{stamp}.jsonl"
                    for folder, prefix in spill_folders(self.path, self.spill_dir)]
        for target in targets:
            try:
                atomic_write_bytes(target, data)
            except OSError:
                continue
            self._spill = target
            self._own_files.add(target)
            return
        self._spill = None

    def keep_files(self, paths: Iterable[Path]) -> int:
        """Read spill files (a UserError names the first bad line of one) and count their
        rows as this database's until :meth:`flush` stores them; the number of rows."""
        for path in paths:
            self._files[Path(path)] = read_spill(Path(path))
        return sum(len(rows) for rows in self._files.values())

    def flush(self) -> None:
        """Store :attr:`unstored` (the newest row of a cell wins) in one transaction and
        remove the spill files that kept them; on failure they stay, :attr:`error` says
        why."""
        rows = self.unstored
        if not rows:
            return
        sql = (f"INSERT INTO results ({', '.join(COLUMNS)}) "
               f"VALUES ({', '.join(':' + c for c in COLUMNS)}) "
               f"ON CONFLICT(cell_key) DO UPDATE SET "
               f"{', '.join(f'{c} = excluded.{c}' for c in COLUMNS[1:])} "
               "WHERE excluded.created > results.created")
        before = self._conn.total_changes
        try:
            with self._conn:
                self._conn.executemany(sql, [_record(r) for r in rows])
        except STORE_ERRORS as e:
            self.error = _reason(e)
            return
        self.stored_from += [(path, len(kept)) for path, kept in self._files.items() if kept]
        for path in [*self._files, *self._own_files]:
            _remove(path)
        self._files, self._unstored, self._spill, self._own_files = {}, [], None, set()
        self.error = ""
        self.written += self._conn.total_changes - before

    def unstored_message(self) -> str:
        """One line for :attr:`unstored` ('' when there are none): how many rows, why the
        database did not take them, where they are kept and what to do."""
        rows = self.unstored
        if not rows:
            return ""
        many = len(rows) != 1
        head = (f"{len(rows)} result row{'s' if many else ''} could not be stored in "
                f"{self.path} ({self.error or 'not tried'})")
        they = "they" if many else "it"
        are = "are" if many else "is"
        db = shlex.quote(str(self.path))
        if self._unstored and self._spill is None:
            return (f"{head} nor kept in a file; {they} follow{'' if many else 's'} as JSON "
                    f"lines: save {'them' if many else 'it'} to a file and run `mkdt-bench "
                    f"results ingest FILE --results-db {db}`")
        files = " ".join(shlex.quote(str(p)) for p in self.spill_files)
        them = "them" if many else "it"
        return (f"{head}; {they} {are} kept in {files}: the next `mkdt-bench run` or `eval` "
                f"into this database stores {them}, or run `mkdt-bench results ingest {files} "
                f"--results-db {db}`")

    @property
    def unkept(self) -> list[ResultRow]:
        """The rows it could not take that no file keeps either (no folder took one)."""
        return self._unstored if self._spill is None else []

    def _well_formed(self, records: list[tuple[Any, ...]]
                     ) -> tuple[list[tuple[Any, ...]], list[tuple[Provenance, Timings]]]:
        """``records`` less those a row cannot hold (a database handed over is data like any
        other file: JSON that does not parse, a field of the wrong type), left out with one
        warning naming the first; and the records of those kept."""
        good, parsed, bad = [], [], []
        for record in records:
            fields_ = dict(zip(COLUMNS, record, strict=True))
            where = f"results database {str(self.path)!r}, cell {str(fields_['cell_key'])!r}"
            try:
                for name in _JSON_COLUMNS:
                    fields_[name] = json.loads(fields_[name]) \
                        if isinstance(fields_[name], str) else fields_[name]
                parsed.append(_checked(fields_, where, advice="")[1])
                good.append(record)
            except UserError as e:
                bad.append(str(e))
            except (ValueError, RecursionError) as e:  # JSON that does not parse
                bad.append(f"{where}: {type(e).__name__}")
        if bad:
            warnings.warn(f"{len(bad)} malformed result rows left out ({bad[0]})", stacklevel=3)
        self.malformed += bad
        return good, parsed

    def frame(self, **filters: Any) -> pd.DataFrame:
        """All rows (stored, and unstored: the newest of a cell) as a DataFrame (see
        :func:`rows_frame`), optionally filtered by column equality (lists allowed)."""
        clauses, params, wanted = [], [], {}
        for col, value in filters.items():
            if value is None or value == []:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
            params.extend(values)
            wanted[col] = set(values)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cur = self._conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results{where} "
                                 "ORDER BY created", params)
        good, parsed = self._well_formed(cur.fetchall())
        frame = _with_records(pd.DataFrame.from_records(good, columns=list(COLUMNS),
                                                        coerce_float=True), parsed)
        extra = [r for r in self._overlay().values()
                 if all(getattr(r, col) in values for col, values in wanted.items())]
        if not extra:
            return frame
        both = rows_frame(extra) if frame.empty else pd.concat([frame, rows_frame(extra)],
                                                                ignore_index=True)
        both = both.sort_values("created", kind="stable")
        return both.drop_duplicates("cell_key", keep="last").reset_index(drop=True)


__all__ = ["COLUMNS", "FAILED", "FLOOR_ROW", "METRICS", "MISSING", "OK", "RECORD_COLUMNS",
           "SCHEMA_VERSION",
           "STORE_ERRORS", "TEACHER_ROW", "ResultRow", "ResultStore", "busy_timeout",
           "find_spills", "read_spill", "row_from_record", "rows_frame", "spill_folders",
           "spill_text"]
