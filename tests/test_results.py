"""Results store and comparison tables."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from mkdt_bench.errors import UserError
from mkdt_bench.results import ResultRow, ResultStore, comparison_table, render


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
    assert not store.has(r.cell_key)
    table = comparison_table(store.frame())
    assert table.iloc[0, 0] == "failed"


def test_comparison_table_layout_and_values(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rows())
    table = comparison_table(store.frame(), method_order=["random", "mkdt", "none"])
    assert list(table.index) == ["teacher", "random", "mkdt", "none"]
    assert list(table.columns) == ["digits @ 1%", "digits @ 5%"]
    values = np.array([51, 53, 58])
    assert table.loc["random", "digits @ 1%"] == f"{values.mean():.2f} ± {values.std():.2f}"
    md = render(table, "markdown")
    assert "| teacher" in md and "digits @ 5%" in md
    assert render(table, "csv").startswith("method,")
    assert "\\begin{tabular}" in render(table, "latex")
    with pytest.raises(UserError, match="format"):
        render(table, "html")


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="cannot be used"):
        ResultStore(bad)


def test_wal_mode(tmp_path):
    ResultStore(tmp_path / "r.sqlite").close()
    mode = sqlite3.connect(tmp_path / "r.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_paired_table_against_scipy(tmp_path):
    from scipy.stats import ttest_rel

    from mkdt_bench.results import paired_table

    store = ResultStore(tmp_path / "r.sqlite")
    store.add(rows())
    table = paired_table(store.frame(), "random", method_order=["random", "mkdt", "none"])
    assert list(table.index) == ["mkdt", "none"]  # no teacher, no baseline row
    p = ttest_rel([60, 61, 62], [50, 52, 57]).pvalue
    assert table.loc["mkdt", "digits @ 1%"] == f"+8.00 (p={p:.3f}, n=3)"
    with pytest.raises(UserError, match="paired baseline 'kmeans'"):
        paired_table(store.frame(), "kmeans")


def test_paired_table_needs_shared_seeds(tmp_path):
    from mkdt_bench.results import paired_table

    store = ResultStore(tmp_path / "r.sqlite")
    store.add([r for r in rows() if not (r.method == "none" and r.seed > 0)])
    table = paired_table(store.frame(), "random")
    assert table.loc["none", "digits @ 1%"] == "-40.00 (p=n/a, n=1)"
