"""Results store: rows in, rows out, failed rows are not done."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import FAST_OVERRIDES

from mkdt_bench import api
from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError
from mkdt_bench.results import ResultRow, ResultStore, read_spill, spill_text
from mkdt_bench.rows import SCHEMA_VERSION, ArtifactRef, Provenance, Timings


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


def test_frames_carry_the_rows_records_upgraded():
    """The store parses each row's config and timings once: ``provenance`` and ``costs``."""
    store = ResultStore(":memory:")
    current = Provenance(dataset="digits", method="random", reference="low",
                         artifacts=(ArtifactRef("teacher", "t"),), built_from={"teacher/t": 2.0})
    store.add([ResultRow("a", "digits", "random", 10, "convnet", "linear", "digits", 0.05, 0,
                         50.0, config=current.to_json(), timings={"evaluate_s": 1.5}),
               ResultRow("b", "digits", "random", 10, "convnet", "linear", "digits", 0.05, 1,
                         51.0, config={"method": "random", "pretrain": {"epochs": 2}})])
    frame = store.frame()
    assert frame["provenance"][0] == current and frame["costs"][0] == Timings(evaluate_s=1.5)
    old = frame["provenance"][1]
    assert old.schema == SCHEMA_VERSION and old.pretrain == {"epochs": 2, "steps": 0}
    assert store.done(["a", "b"]) == {"a": (frame["created"][0], {"teacher/t": 2.0}),
                                      "b": (frame["created"][1], None)}


def test_a_row_of_malformed_provenance_is_refused_in_a_spill_file(tmp_path):
    spill = tmp_path / "r.sqlite.unstored-1.jsonl"
    bad = rows()[0]
    bad.config = {"schema": SCHEMA_VERSION, "artifacts": "teacher/t"}
    spill.write_text(spill_text([bad]))
    with pytest.raises(UserError, match=r"line 1: the row: config: artifacts='teacher/t' must "
                                        r"be list; correct or delete that line"):
        read_spill(spill)


def test_rows_stored_before_the_schema_are_still_the_stored_rows_of_their_cells(
        teacher_cache, tmp_path):
    """A row whose config is JSON as the code before typed rows wrote it (no schema, no
    reference) is found as stored by a new plan: nothing is computed again."""
    cfg = build_config(flags={"methods": ["random", "none"], "seeds": [0],
                              "fractions": [0.05]}, overrides=list(FAST_OVERRIDES))
    db = tmp_path / "r.sqlite"
    first = api.run(cfg, cache_dir=teacher_cache, results_db=db, executor="inprocess",
                    threads=1, progress=False)
    assert len(first.frame) == 3 and set(first.frame["status"]) == {"ok"}
    with sqlite3.connect(db) as conn:
        for key, config in conn.execute("SELECT cell_key, config FROM results").fetchall():
            old = json.loads(config)
            assert old.pop("schema") == SCHEMA_VERSION
            old.pop("reference", None)
            conn.execute("UPDATE results SET config = ? WHERE cell_key = ?",
                         (json.dumps(old, sort_keys=True), key))
    again = api.run(cfg, cache_dir=teacher_cache, results_db=db, dry_run=True, progress=False)
    assert again.plan is not None and not again.plan.eval_units and not again.plan.to_compute
    assert set(again.plan.cell_keys) == set(first.frame["cell_key"])
    store = ResultStore(db)
    assert all(p.schema == SCHEMA_VERSION for p in store.frame()["provenance"])


def test_a_stored_row_of_hostile_provenance_is_left_out_in_one_warning(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rows()[:2])
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        conn.execute("UPDATE results SET config = ? WHERE cell_key = ?",
                     (json.dumps({"schema": SCHEMA_VERSION, "built_from": {"a/b": "soon"}}),
                      rows()[0].cell_key))
    with pytest.warns(UserWarning, match=r"1 malformed result rows left out \(.*cell "
                                         r"'teacher-0-0.01': the row: config: built_from="):
        frame = store.frame()
    assert list(frame["cell_key"]) == [rows()[1].cell_key]
    assert store.done([r.cell_key for r in rows()[:2]]).keys() == {rows()[1].cell_key}
