"""Results store: rows in, rows out, failed rows are not done."""

from __future__ import annotations

import sqlite3

import pytest

from mkdt_bench.errors import UserError
from mkdt_bench.results import ResultRow, ResultStore, spill_text


def rows():
    out = []
    accs = {"teacher": [90, 92, 94], "random": [50, 52, 57], "none": [10, 10, 13],
            "mkdt": [60, 61, 62]}
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            for fraction in (0.01, 0.05):
                out.append(ResultRow(cell_key=f"{method}-{seed}-{fraction}", dataset="digits",
                                     method=method, budget=100, arch="convnet",
                                     evaluator="linear", task="digits", fraction=fraction,
                                     seed=seed, accuracy=acc + 100 * fraction,
                                     config={"x": 1}, timings={"pretrain_s": 1.0}))
    return out


def test_store_round_trip(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rows())
    assert store.has("random-0-0.01") and not store.has("nope")
    frame = store.frame(method="random")
    assert len(frame) == 6 and set(frame["seed"]) == {0, 1, 2}
    assert store.frame(method=["random", "none"]).shape[0] == 12
    store.add(rows()[:1])  # re-adding a cell replaces it
    assert len(store.frame()) == 24


def test_failed_rows_are_not_done(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    r = rows()[0]
    r.status, r.accuracy, r.error = "failed", None, "UserError: boom"
    store.add([r])
    assert not store.has(r.cell_key) and store.done([r.cell_key]) == {}
    store.add(rows()[1:2])
    (key, (created, built_from)), = store.done([r.cell_key, rows()[1].cell_key]).items()
    assert key == rows()[1].cell_key and created > 0 and built_from is None


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="cannot be used"):
        ResultStore(bad)


def test_wal_mode(tmp_path):
    ResultStore(tmp_path / "r.sqlite").close()
    mode = sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"




def test_unstored_rows_read_like_stored_ones(tmp_path):
    """Rows the database did not take (kept in a spill file) come back from ``frame`` with
    the columns and types of stored rows, so tables print them alike."""
    stored = ResultStore(tmp_path / "a.sqlite")
    stored.add(rows()[:2])
    kept = ResultStore(tmp_path / "b.sqlite")
    spill = tmp_path / "b.sqlite.unstored-1.jsonl"
    spill.write_text(spill_text(rows()[:2]))
    kept.keep_files([spill])
    a, b = stored.frame(), kept.frame()
    assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all()
    assert a.drop(columns="created").equals(b.drop(columns="created"))
    assert len(ResultStore.read_only(tmp_path / "b.sqlite").frame()) == 0
