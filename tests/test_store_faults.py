"""Finished rows are never lost (issue 29, section 3): a database that is locked, full,
read-only or of another schema, or a value it cannot hold, leaves the rows in a spill file
that the next run (or ``mkdt-bench results ingest``) stores once; spill files are
untrusted data, checked field by field."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import FAST_FLAGS
from hypothesis import given, settings
from hypothesis import strategies as st

from mkdt_bench import results
from mkdt_bench.cli import main
from mkdt_bench.errors import UserError
from mkdt_bench.results import (
    SCHEMA,
    SCHEMA_VERSION,
    ResultRow,
    ResultStore,
    busy_timeout,
    find_spills,
    read_spill,
    spill_text,
)


def row(key: str, seed: int = 0, accuracy: float | None = 50.0, created: float | None = None,
        **extra) -> ResultRow:
    return ResultRow(cell_key=key, dataset="digits", method="random", budget=10, arch="convnet",
                     evaluator="linear", task="digits", fraction=0.1, seed=seed,
                     accuracy=accuracy, config={"x": [1, 2]}, timings={"pretrain_s": 1.0},
                     created=time.time() if created is None else created, **extra)


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def locked(tmp_path):
    """A database another connection holds with ``BEGIN EXCLUSIVE`` (released at the end
    or by calling the returned function)."""
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        if holder.in_transaction:
            holder.execute("ROLLBACK")

    yield db, release
    release()
    holder.close()


class _FailingConnection:
    """A connection whose writes fail as SQLite fails them (``error``); reads pass."""

    def __init__(self, conn: sqlite3.Connection, error: Exception) -> None:
        self._conn, self._error = conn, error

    def executemany(self, *args, **kwargs):
        raise self._error

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def __enter__(self):
        return self._conn.__enter__()

    def __exit__(self, *exc):
        return self._conn.__exit__(*exc)


def test_locked_database_keeps_rows_and_the_next_store_ingests_them(locked, tmp_path):
    db, release = locked
    store = ResultStore(db, timeout=0.2, spill_dir=tmp_path / "cache")
    store.save([row("a"), row("b", seed=1)])
    assert store.error == "database is locked"
    (spill,) = store.spill_files
    assert spill.parent == db.parent and spill.name.startswith("r.sqlite.unstored-")
    message = store.unstored_message()
    assert "\n" not in message and message.startswith("2 result rows could not be stored")
    assert str(spill) in message and "results ingest" in message
    start = time.perf_counter()
    store.save([row("c", seed=2)])  # the database failed once: no second wait
    assert time.perf_counter() - start < 0.2
    assert [r.cell_key for r in read_spill(spill)] == ["a", "b", "c"]
    # the rows count as the database's for this process: planning, skipping, the table
    assert set(store.done(["a", "b", "c", "d"])) == {"a", "b", "c"}
    assert sorted(store.frame()["cell_key"]) == ["a", "b", "c"]
    store.flush()  # still locked: nothing lost, nothing removed
    assert spill.is_file() and len(store.unstored) == 3
    store.close()
    release()

    # the next run into the database: reads the spill at planning, stores it once
    planning = ResultStore.read_only(db)
    planning.keep_files(find_spills(db, tmp_path / "cache"))
    assert set(planning.done(["a", "b", "c"])) == {"a", "b", "c"}
    planning.close()
    nxt = ResultStore(db, spill_dir=tmp_path / "cache")
    nxt.keep_files(find_spills(db, tmp_path / "cache"))
    nxt.flush()
    assert nxt.unstored == [] and nxt.written == 3 and not spill.exists()
    assert find_spills(db, tmp_path / "cache") == []
    nxt.close()
    assert count(db) == 3


def test_ingest_stores_each_cell_once_and_keeps_the_newer_row(tmp_path):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.add([row("a", accuracy=60.0, created=200.0)])
    spill = tmp_path / "r.sqlite.unstored-x.jsonl"
    spilled = [row("a", accuracy=50.0, created=100.0), row("b", created=100.0)]
    spill.write_text(spill_text(spilled))
    copy = tmp_path / "copy.jsonl"
    copy.write_text(spill_text(spilled))
    store.keep_files([spill, copy])  # the same rows twice
    store.flush()
    frame = store.frame().set_index("cell_key")
    assert len(frame) == 2 and frame.loc["a", "accuracy"] == 60.0  # the newer row stays
    assert store.written == 1 and not spill.exists() and not copy.exists()
    assert store.stored_from == [(spill, 2), (copy, 2)]
    copy.write_text(spill_text(spilled))
    store.keep_files([copy])
    store.flush()
    assert count(db) == 2 and store.written == 1  # nothing stored twice
    store.close()


@pytest.mark.parametrize("error", [
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("attempt to write a readonly database"),
    sqlite3.DatabaseError("disk I/O error"),
    OSError(28, "No space left on device"),
])
def test_database_write_failures_keep_the_rows(tmp_path, error):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    good = store._conn
    store._conn = _FailingConnection(good, error)
    store.save([row("a"), row("b", accuracy=None, status="failed", error="boom")])
    assert store.error == str(error) and len(find_spills(db)) == 1
    assert [r.cell_key for r in read_spill(find_spills(db)[0])] == ["a", "b"]
    store._conn = good
    store.flush()
    assert count(db) == 2 and find_spills(db) == []
    store.close()


class _BrokenConnection(_FailingConnection):
    """A connection whose reads fail too (an I/O error of the medium)."""

    def execute(self, *args, **kwargs):
        raise self._error


def test_the_run_table_comes_from_memory_when_the_database_cannot_be_read(tmp_path):
    from mkdt_bench.pipeline.plan import Plan
    from mkdt_bench.pipeline.run import _plan_rows

    store = ResultStore(tmp_path / "r.sqlite")
    computed = [row("a"), row("b", seed=1)]
    store.save(computed[:1])
    store._conn = _BrokenConnection(store._conn, sqlite3.DatabaseError("disk I/O error"))
    store.save(computed[1:])
    plan = Plan([], [], {}, [], ["a", "b"], 10)
    frame = _plan_rows(plan, store, computed)
    assert frame["cell_key"].tolist() == ["a", "b"] and frame["accuracy"].tolist() == [50, 50]
    assert [r.cell_key for r in store.unstored] == ["b"]


def test_full_disk_spills_to_the_cache_then_to_the_terminal(tmp_path, monkeypatch):
    """A folder that takes no file (full, read-only) passes the rows on: the cache's
    ``unstored/`` folder, and where no folder takes them, the error output."""
    from mkdt_bench import cache

    db, cache_dir = tmp_path / "db" / "r.sqlite", tmp_path / "cache"
    store = ResultStore(db, spill_dir=cache_dir)
    store._conn = _FailingConnection(store._conn, sqlite3.OperationalError(
        "database or disk is full"))
    write = cache.atomic_write_bytes
    full = {db.parent}

    def atomic_write_bytes(path, data):
        if path.parent in full:
            raise OSError(28, "No space left on device")
        write(path, data)

    monkeypatch.setattr(cache, "atomic_write_bytes", atomic_write_bytes)
    store.save([row("a")])
    (spill,) = store.spill_files
    assert spill.parent == cache_dir / "unstored" and find_spills(db, cache_dir) == [spill]
    assert find_spills(db) == []  # the cache is where a run with this cache looks too
    full.add(cache_dir / "unstored")
    store.save([row("b", seed=1)])
    assert store.spill_files == [] and [r.cell_key for r in store.unkept] == ["a", "b"]
    assert "nor kept in a file" in store.unstored_message()
    lines = spill_text(store.unkept).splitlines()  # what the CLI prints: a spill file's lines
    assert [results.row_from_record(json.loads(line), "x").cell_key for line in lines] == \
        ["a", "b"]


def test_a_value_sqlite_cannot_hold_is_kept_and_named_on_ingest(tmp_path):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.save([row("a", seed=99999999999999999999999)])
    assert "too large" in store.error
    (spill,) = find_spills(db)
    assert json.loads(spill.read_text())["seed"] == 99999999999999999999999
    with pytest.raises(UserError, match=r"line 1: seed 99999999999999999999999 must be an "
                                        r"integer from -9223372036854775808"):
        read_spill(spill)
    store.close()


def test_text_that_is_no_utf8_is_stored_escaped(tmp_path):
    """An undecodable file name (a lone surrogate) in a row's text is stored, not spilled."""
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.save([row("a", status="failed", accuracy=None, error="missing /data/\udcff.png")])
    assert store.unstored == [] and store.frame()["error"].tolist() == [
        "missing /data/\\udcff.png"]
    store.close()


def test_read_only_database_refused_before_any_work(tmp_path, monkeypatch):
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    connect = results._connect

    def read_only(database, timeout, uri=False):
        return connect(f"file:{database}?mode=ro", timeout, uri=True) if not uri else \
            connect(database, timeout, uri)

    monkeypatch.setattr(results, "_connect", read_only)
    with pytest.raises(UserError, match="readonly database; give a new SQLite file"):
        ResultStore(db)
    ResultStore.read_only(db).close()  # planning and tables read it


def test_a_lock_at_open_is_no_refusal(locked):
    """A lock is waited for when rows are written (and they are kept if it outlasts the
    timeout), not refused when the database is opened."""
    db, _ = locked
    ResultStore(db, timeout=0.1).close()


def _other_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE results (cell_key TEXT PRIMARY KEY, score REAL)")
    conn.commit()
    conn.close()


def _other_application(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


def _no_primary_key(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(SCHEMA.replace("cell_key TEXT PRIMARY KEY", "cell_key TEXT"))
    conn.commit()
    conn.close()


def _newer(db: Path) -> None:
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _negative(db: Path) -> None:
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = -3")
    conn.commit()
    conn.close()


def _trigger(db: Path) -> None:
    """A handed-over database whose trigger would silently drop every row stored."""
    ResultStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER drop_rows AFTER INSERT ON results BEGIN "
                 "DELETE FROM results WHERE cell_key = NEW.cell_key; END")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, expected", [
    (_other_schema, r"another schema \(missing dataset, .*; unknown 'score'\)"),
    (_trigger, r"has the trigger 'drop_rows'"),
    (_other_application, r"has no `results` table \(it has 'invoices'\)"),
    (_no_primary_key, r"another schema \(cell_key is not its primary key\)"),
    (_newer, r"schema version 2, not one of mkdt-bench's \(this one knows 0 to 1; a newer"),
    (_negative, r"schema version -3, not one of mkdt-bench's"),
])
@pytest.mark.parametrize("opener", ["write", "read_only"])
def test_other_schema_refused_on_open(tmp_path, make, expected, opener):
    db = tmp_path / "r.sqlite"
    make(db)
    before = db.read_bytes()
    with pytest.raises(UserError, match=expected):
        ResultStore(db) if opener == "write" else ResultStore.read_only(db)
    assert db.read_bytes() == before


def test_unversioned_database_is_migrated(tmp_path):
    """Databases from before the version was recorded (``user_version`` 0, the table of
    every mkdt-bench so far) are read as they are and stamped when opened for writing."""
    db = tmp_path / "r.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(SCHEMA)
    conn.commit()
    conn.close()
    ResultStore.read_only(db).close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 0
    old = row("a")
    store = ResultStore(db)
    store.add([old])
    store.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert ResultStore.read_only(db).frame()["cell_key"].tolist() == ["a"]


def test_a_row_of_unreadable_config_is_not_done(tmp_path):
    """A row whose config is not a JSON object (not one mkdt-bench wrote) is computed
    again, not a traceback while planning."""
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.add([row("a"), row("b")])
    with store._conn:
        store._conn.execute("UPDATE results SET config = '[1' WHERE cell_key = 'a'")
    assert set(store.done(["a", "b"])) == {"b"}
    store.close()


def test_new_database_records_its_version(tmp_path):
    ResultStore(tmp_path / "r.sqlite").close()
    conn = sqlite3.connect(tmp_path / "r.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _record(**changes):
    record = json.loads(spill_text([row("a", created=1.0)]))
    record.update(changes)
    return json.dumps(record)


def _without(field: str) -> str:
    record = json.loads(_record())
    del record[field]
    return json.dumps(record)


MALFORMED = {
    "not JSON": ("{'cell_key': 'a'}", "line 2 is not JSON"),
    "a list": ("[1, 2]", "a result row is a JSON object, not list"),
    "missing field": (_without("seed"), "fields seed missing"),
    "unknown field": (_record(__class__="os.system"), "unknown fields '__class__'"),
    "seed as text": (_record(seed="0"), "seed '0' must be an integer"),
    "seed a bool": (_record(seed=True), "seed True must be an integer"),
    "seed beyond SQLite": (_record(seed=2**63), "seed 9223372036854775808 must be an integer"),
    "accuracy NaN": (_record(accuracy=float("nan")), "accuracy nan must be a finite number"),
    "accuracy text": (_record(accuracy="58"), "accuracy '58' must be a finite number"),
    "created infinite": (_record(created=float("inf")), "created inf must be a finite"),
    "bad status": (_record(status="great"), "status 'great' must be ok, failed or missing"),
    "empty key": (_record(cell_key=""), "cell_key is empty"),
    "config a list": (_record(config=[1]), "config [1] must be a JSON object"),
    "method a number": (_record(method=3), "method 3 must be text"),
    "deep nesting": ("[" * 100000 + "]" * 100000, "line 2 is not JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_spill_refused_in_one_line(tmp_path, case):
    line, expected = MALFORMED[case]
    spill = tmp_path / "r.sqlite.unstored-x.jsonl"
    spill.write_text(spill_text([row("ok")]) + line + "\n")
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(UserError) as caught:
        store.keep_files([spill])
    message = str(caught.value)
    assert "\n" not in message and "line 2" in message and expected in message
    assert store.unstored == [] and spill.is_file()
    store.close()


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe not utf-8", "cannot be read"),
    (None, "is not a file"),
])
def test_unreadable_spill_refused(tmp_path, content, expected):
    spill = tmp_path / "s.jsonl"
    if content is None:
        spill.mkdir()
    else:
        spill.write_bytes(content)
    with pytest.raises(UserError, match=expected):
        read_spill(spill)


def test_oversized_spill_refused_unread(tmp_path, monkeypatch):
    spill = tmp_path / "s.jsonl"
    spill.write_text(spill_text([row("a")]))
    monkeypatch.setattr(results, "MAX_SPILL_BYTES", 10)
    with pytest.raises(UserError, match="larger than 0 MiB"):
        read_spill(spill)


def test_spill_round_trip_keeps_every_field(tmp_path):
    original = row("a", seed=3, accuracy=None, status="failed", error="x\ny",
                   metrics={"n": float("nan")}, versions={"torch": "2"})
    spill = tmp_path / "s.jsonl"
    spill.write_text(spill_text([original]))
    (back,) = read_spill(spill)
    assert json.dumps(back.__dict__, sort_keys=True) == json.dumps(original.__dict__,
                                                                   sort_keys=True)


@pytest.mark.parametrize("value, expected", [("", 60.0), ("0.5", 0.5), ("0", 0.0)])
def test_busy_timeout_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("MKDT_BENCH_DB_TIMEOUT", value)
    assert busy_timeout() == expected


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf", "1e300"])
def test_bad_busy_timeout_refused(monkeypatch, value):
    monkeypatch.setenv("MKDT_BENCH_DB_TIMEOUT", value)
    with pytest.raises(UserError, match="MKDT_BENCH_DB_TIMEOUT"):
        busy_timeout()


# ----------------------------------------------------------------------------- command line


def test_results_ingest_refuses_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(spill_text([row("a")]) + _record(seed="x") + "\n")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["results", "ingest", str(bad), *cache]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: spill file {str(bad)!r} line 2: seed")
    assert not (tmp_path / "cache" / "results.sqlite").exists() and bad.is_file()
    assert main(["results", "ingest", str(tmp_path / "nope.jsonl"), *cache]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_results_ingest_stores_the_database_spills(tmp_path, capsys):
    cache = tmp_path / "cache"
    db = cache / "results.sqlite"
    ResultStore(db).close()
    (cache / "results.sqlite.unstored-1.jsonl").write_text(spill_text([row("a"), row("b")]))
    assert main(["results", "ingest", "--cache-dir", str(cache)]) == 0
    assert "2 result rows of 1 spill file read, 2 stored" in capsys.readouterr().out
    assert count(db) == 2 and find_spills(db, cache) == []
    assert main(["results", "ingest", "--cache-dir", str(cache)]) == 0
    assert "no spill files" in capsys.readouterr().out


def test_results_ingest_into_a_locked_database_exits_3(locked, tmp_path, capsys, monkeypatch):
    db, _ = locked
    spill = tmp_path / "s.jsonl"
    spill.write_text(spill_text([row("a")]))
    monkeypatch.setenv("MKDT_BENCH_DB_TIMEOUT", "0.1")
    assert main(["results", "ingest", str(spill), "--results-db", str(db)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: 1 result row could not be stored in ") and \
        err.count("\n") == 1 and spill.is_file()


def cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="1",
               MKDT_BENCH_DB_TIMEOUT="0.5")
    return subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600)


FAST = ["run", "--methods", "random", "--seeds", "0", "--fractions", "0.1", *FAST_FLAGS,
        "--executor", "inprocess"]


@pytest.mark.slow
def test_run_into_a_locked_database_keeps_its_rows_for_the_next_run(teacher_cache):
    """The run computes, prints its table, says in one line where the rows are and exits
    3; the next run stores them first, computes nothing and prints the same table."""
    cache = teacher_cache
    db = cache / "results.sqlite"
    ResultStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        first = cli(cache, *FAST)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert first.returncode == 3, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    (spill,) = find_spills(db, cache)
    assert errors == [line for line in first.stderr.splitlines() if str(spill) in line]
    assert errors[0].startswith("error: 2 result rows could not be stored in ") and \
        "database is locked" in errors[0] and "Traceback" not in first.stderr
    table = [line for line in first.stdout.splitlines() if line.startswith("|")]
    assert any("random" in line for line in table) and any("teacher" in line for line in table)
    assert count(db) == 0
    created = sorted(r.created for r in read_spill(spill))

    second = cli(cache, *FAST)
    assert second.returncode == 0, second.stderr
    assert f"stored 2 result rows that an earlier run kept in {spill}" in second.stderr
    assert [line for line in second.stdout.splitlines() if line.startswith("|")] == table
    assert count(db) == 2 and find_spills(db, cache) == []
    stored = sorted(r[0] for r in sqlite3.connect(db).execute("SELECT created FROM results"))
    assert stored == created  # the kept rows, not computed again


def test_table_names_the_spill_files_it_does_not_show(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.add([row("a")])
    store.close()
    spill = tmp_path / "r.sqlite.unstored-1.jsonl"
    spill.write_text(spill_text([row("b", seed=1)]))
    assert main(["table", "--results-db", str(db), "--cache-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"note: 1 spill file ({spill}) hold result rows") and \
        err.count("\n") == 1


def test_seed_beyond_what_the_store_holds_refused_before_any_work(tmp_path, capsys):
    code = main(["run", "--seeds", "99999999999999999999999", "--cache-dir", str(tmp_path)])
    assert code == 2 and "seeds" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(json.loads(_record()))), value=JSON)
def test_any_field_value_is_a_row_or_one_line(tmp_path_factory, field, value):
    """Whatever JSON a spill file holds in a field, reading it gives a row (that the
    database then takes) or one line naming the field; never another exception."""
    record = json.loads(_record())
    record[field] = value
    spill = tmp_path_factory.mktemp("spill") / "s.jsonl"
    spill.write_text(json.dumps(record) + "\n")
    try:
        (back,) = read_spill(spill)
    except UserError as e:
        assert "\n" not in str(e) and f"{field} " in str(e)
        return
    store = ResultStore(spill.parent / "r.sqlite")
    store.add([back])
    assert store.has(back.cell_key) or back.status != "ok"
    store.close()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_are_rows_or_one_line(tmp_path_factory, data):
    spill = tmp_path_factory.mktemp("spill") / "s.jsonl"
    spill.write_bytes(data)
    try:
        read_spill(spill)
    except UserError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("column, text", [("config", "{"), ("timings", "[1, 2]"),
                                          ("metrics", '"text"')])
def test_malformed_rows_of_a_handed_over_database_are_left_out_in_one_line(
        tmp_path, capsys, column, text):
    """A database is data like any other file: a row whose JSON does not parse (or is no
    object) is left out of tables with one warning, and ``cache prune``, which could not
    tell what it uses, refuses to delete anything."""
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.add([row("good", seed=0), row("bad", seed=1)])
    store.close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"UPDATE results SET {column} = ? WHERE cell_key = 'bad'", (text,))
    conn.close()
    with pytest.warns(UserWarning, match="1 malformed result rows left out .*'bad'"):
        frame = ResultStore.read_only(db).frame()
    assert list(frame["cell_key"]) == ["good"]
    assert main(["table", "--results-db", str(db)]) == 0
    (tmp_path / "cache" / "artifacts").mkdir(parents=True)
    assert main(["cache", "prune", "--cache-dir", str(tmp_path / "cache"),
                 "--results-db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "malformed rows" in err and "prune cannot tell what they use" in err


def test_prune_keeps_what_the_rows_of_spill_files_use(tmp_path, capsys):
    """A row kept in a spill file (not yet stored) still needs its artifacts."""
    from mkdt_bench.cache import ArtifactCache

    cache = tmp_path / "cache"
    db = cache / "results.sqlite"
    store = ResultStore(db)
    store.add([replace(row("stored"), config={"artifacts": ["teacher/a"]})])
    store.close()
    (cache / "results.sqlite.unstored-1.jsonl").write_text(
        spill_text([replace(row("kept"), config={"artifacts": ["teacher/b"]})]))
    artifacts = ArtifactCache(cache)
    for key in ("a", "b", "c"):
        artifacts.get_or_create("teacher", key, lambda d: (d / "x").write_text("x") and None)
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "teacher/c" in out and "teacher/b" not in out and "teacher/a" not in out
