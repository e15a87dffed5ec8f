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
    latex = render(table, "latex")
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex and "±" not in latex
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


def _grid_rows():
    """Two archs, two budgets' worth of timings, a missing task and per-class metrics."""
    out = []
    for method, base in (("random", 50.0), ("mkdt", 55.0)):
        for arch, shift in (("convnet", 0.0), ("resnet18", 3.0)):
            for seed in range(3):
                acc = base + shift + seed
                common = dict(dataset="digits", method=method, budget=100, arch=arch,
                              evaluator="linear", fraction=0.05, seed=seed)
                out.append(ResultRow(
                    cell_key=f"{method}-{arch}-{seed}", task="digits", accuracy=acc,
                    metrics={"mean_per_class_accuracy": acc - 1},
                    timings={"storage_bytes": 2048.0, "distill_s": 10.0 if method == "mkdt"
                             else 0.0, "teacher_s": 5.0, "pretrain_steps": 80.0,
                             "pretrain_s": 1.5, "evaluate_s": 2.0}, **common))
                out.append(ResultRow(
                    cell_key=f"{method}-{arch}-{seed}-cub", task="cub2011", accuracy=None,
                    status="missing", error="missing: /data/CUB_200_2011/images.txt", **common))
    return out


def test_confidence_interval_against_scipy():
    from scipy.stats import t

    from mkdt_bench.results import confidence_interval

    v = np.array([50.0, 52.0, 57.0])
    lo, hi = confidence_interval(v)
    low, high = t.interval(0.95, 2, loc=v.mean(), scale=v.std(ddof=1) / np.sqrt(3))
    assert (lo, hi) == pytest.approx((low, high))
    store_rows = [r for r in rows() if r.method == "random" and r.fraction == 0.01]
    table = comparison_table(_frame(store_rows), ci=True)
    assert table.loc["random", "digits @ 1%"] == (
        f"54.00 ± {np.array([51, 53, 58]).std():.2f} [{low + 1:.2f}, {high + 1:.2f}]")


def _frame(rows_):
    import tempfile
    from pathlib import Path

    store = ResultStore(Path(tempfile.mkdtemp()) / "r.sqlite")
    store.add(rows_)
    return store.frame()


def test_missing_task_cells_read_na_with_the_path():
    table = comparison_table(_frame(_grid_rows()))
    assert table.loc["random [convnet]", "cub2011 @ 5%"] == \
        "n/a (missing: /data/CUB_200_2011/images.txt)"
    assert table.loc["random [convnet]", "digits @ 5%"].startswith("51.00 ± ")


def test_mean_per_class_metric():
    frame = _frame(_grid_rows())
    table = comparison_table(frame, metric="mean_per_class_accuracy")
    assert table.loc["mkdt [resnet18]", "digits @ 5%"].startswith("58.00 ± ")
    with pytest.raises(UserError, match="metric 'top5' is not known"):
        comparison_table(frame, metric="top5")


def test_paper_and_arch_layouts():
    from mkdt_bench.results import layout_tables

    frame = _frame(_grid_rows())
    paper = layout_tables(frame, "paper", ["random", "mkdt"])
    assert [title for title, _ in paper] == ["linear / convnet", "linear / resnet18"]
    assert list(paper[1][1].index) == ["random (100)", "mkdt (100)"]
    assert paper[1][1].loc["mkdt (100)", "digits @ 5%"].startswith("59.00 ± ")
    (title, arch), = layout_tables(frame, "arch", ["random", "mkdt"])
    assert title == "linear" and list(arch.index) == ["random (100)", "mkdt (100)"]
    assert list(arch.columns) == ["convnet / cub2011 @ 5%", "convnet / digits @ 5%",
                                  "resnet18 / cub2011 @ 5%", "resnet18 / digits @ 5%"]
    assert arch.loc["random (100)", "resnet18 / digits @ 5%"].startswith("54.00 ± ")
    assert "|" not in "".join(arch.columns)  # markdown-safe headers
    with pytest.raises(UserError, match="layout 'wide' is not known"):
        layout_tables(frame, "wide")


def test_budget_table_and_equal_steps():
    from mkdt_bench.results import budget_table, equal_pretraining

    frame = _frame(_grid_rows())
    table = budget_table(frame, ["random", "mkdt"])
    assert list(table.index) == ["random (100) [convnet]", "random (100) [resnet18]",
                                 "mkdt (100) [convnet]", "mkdt (100) [resnet18]"]
    row = table.loc["mkdt (100) [convnet]"]
    assert row["storage (KiB)"] == "2.0" and row["distill s"] == "10.0"
    assert row["pre-train steps"] == "80" and row["sub-stages s"] == "-"
    assert equal_pretraining(frame) == \
        "equal pre-training steps for every set of one size: 80 steps for 100 images"
    uneven = _grid_rows()
    uneven[0].timings = {**uneven[0].timings, "pretrain_steps": 40.0}
    assert "differ" in equal_pretraining(_frame(uneven))


def test_paper_layout_repeats_the_teacher_row():
    from mkdt_bench.results import layout_tables

    teacher = [ResultRow(cell_key=f"t{seed}", dataset="digits", method="teacher", budget=1437,
                         arch="resnet10", evaluator="linear", task="digits", fraction=0.05,
                         seed=seed, accuracy=90.0 + seed) for seed in range(3)]
    frame = _frame(_grid_rows() + teacher)
    paper = layout_tables(frame, "paper", ["random", "mkdt"])
    assert [title for title, _ in paper] == ["linear / convnet", "linear / resnet18"]
    for _, table in paper:
        assert list(table.index) == ["teacher (1437)", "random (100)", "mkdt (100)"]
    (_, arch), = layout_tables(frame, "arch")
    assert "teacher (1437)" not in arch.index


def test_paired_table_leaves_absent_cells_empty():
    from mkdt_bench.results import paired_table

    extra = [ResultRow(cell_key=f"m-r18-{seed}", dataset="digits", method="mkdt", budget=100,
                       arch="resnet18", evaluator="linear", task="digits", fraction=0.01,
                       seed=seed, accuracy=40.0 + seed) for seed in range(3)]
    table = paired_table(_frame(rows() + extra), "random")
    assert table.loc["mkdt [resnet18]", "digits @ 5%"] == ""
    assert table.loc["mkdt [resnet18]", "digits @ 1%"] == "n/a (no shared seeds)"
