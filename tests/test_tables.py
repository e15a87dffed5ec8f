"""Tables: nothing pooled, sets labelled by their size, captions that say what a table
shows, statistics edge cases, LaTeX floats and one tidy CSV."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mkdt_bench.cli import main
from mkdt_bench.errors import UserError
from mkdt_bench.report.formats import FORMATS
from mkdt_bench.report.formats.csv import tidy_table
from mkdt_bench.report.formats.latex import Latex
from mkdt_bench.report.formats.markdown import Markdown
from mkdt_bench.report.groups import cell_groups
from mkdt_bench.report.stats import confidence_interval, fieller_interval
from mkdt_bench.report.tables import (
    budget_tables,
    comparison_tables,
    paired_tables,
    relative_tables,
)
from mkdt_bench.results import ResultRow, ResultStore
from mkdt_bench.teachers import describe_teacher

TEACHER = {"arch": "resnet10", "ssl": "simclr", "epochs": 20, "train_images": 0,
           "checkpoint": ""}


def row(method: str, seed: int, accuracy: float | None, *, budget: int = 143,
        fraction: float = 0.05, arch: str = "convnet", evaluator: str = "linear",
        task: str = "digits", teacher: str = "t1", set_images: int | None = None,
        options: dict | None = None, legacy: bool = False, status: str = "ok",
        error: str | None = None, timings: dict | None = None) -> ResultRow:
    """A row as the runner writes it (``legacy``: as rows written before set sizes, the
    source size and code versions were recorded)."""
    size = {"teacher": 1437, "none": 0, "full": 1437}.get(method, budget)
    if method == "teacher":
        budget, arch = 1437, "resnet10"
    config = {"teacher": teacher, "teacher_config": TEACHER, "method_options": options or {},
              "train_pool": 0, "pretrain": {"epochs": 20, "batch_size": 32}}
    times = dict(timings or {})
    if not legacy:
        config["source_images"] = 1437
        config["method_code"] = {"version": 1}
        times["set_images"] = size if set_images is None else set_images
    key = f"{method}-{budget}-{arch}-{evaluator}-{task}-{fraction}-{seed}-{teacher}-{options}"
    return ResultRow(cell_key=key, dataset="digits", method=method, budget=budget, arch=arch,
                     evaluator=evaluator, task=task, fraction=fraction, seed=seed,
                     accuracy=accuracy, status=status, error=error, config=config,
                     timings=times)


def frame(rows: list[ResultRow], tmp_path) -> pd.DataFrame:
    store = ResultStore(tmp_path / f"r{len(list(tmp_path.iterdir()))}.sqlite")
    store.add(rows)
    return store.frame()


def grid(budget: int = 143, values: dict | None = None, **kw) -> list[ResultRow]:
    values = values or {"teacher": [90, 92, 94], "random": [50, 52, 57], "full": [70, 72, 71],
                        "mkdt": [60, 61, 62], "none": [10, 10, 13]}
    return [row(m, s, v + (1 if f == 0.05 else 0), budget=budget, fraction=f, **kw)
            for m, vs in values.items() for s, v in enumerate(vs) for f in (0.01, 0.05)]


def test_budgets_are_never_pooled(tmp_path):
    """The issue's case: a 10 % and a 2 % grid in one database."""
    rows = grid(143, {"teacher": [90, 92, 94], "mkdt": [37, 38, 38.61], "none": [10, 11, 12]})
    rows += grid(28, {"mkdt": [21, 22, 22.28], "none": [10, 11, 12]})
    tables = comparison_tables(frame(rows, tmp_path), method_order=["mkdt"])
    assert len(tables) == 2
    cells = {t.caption.split("budget ")[1].split(" images")[0]: t.cells for t in tables}
    assert cells["143"].loc["mkdt", "digits @ 1%"].startswith(f"{np.mean([37, 38, 38.61]):.2f}")
    assert cells["28"].loc["mkdt", "digits @ 1%"].startswith(f"{np.mean([21, 22, 22.28]):.2f}")
    assert list(cells["28"].index) == ["teacher", "mkdt", "none (0)"]  # the ceiling in both
    (paper,) = comparison_tables(frame(rows, tmp_path), "paper", ["mkdt"])
    assert list(paper.cells.index) == ["teacher (1,437)", "mkdt (28)", "mkdt (143)",
                                       "none (0) [28-image budget]",
                                       "none (0) [143-image budget]"]


def test_teachers_encoders_evaluators_and_setups_are_never_pooled(tmp_path):
    rows = grid(teacher="t1") + grid(teacher="t2", values={"mkdt": [1, 2, 3]})
    rows += [row("mkdt", s, 80 + s, arch="resnet18") for s in range(3)]
    rows += [row("mkdt", s, 30 + s, evaluator="knn") for s in range(3)]
    rows += [row("mkdt", s, 5 + s, task="cifar10") for s in range(3)]
    for r in rows:
        if r.method == "mkdt":
            r.config["method_options"] = {"iterations": 100, "init": "high_loss"}
    rows += [row("mkdt", s, 99.0 + s / 10, options={"iterations": 50, "init": "high_loss"},
                 arch="resnet18") for s in range(3)]
    groups = cell_groups(frame(rows, tmp_path))
    assert (groups.groupby(["teacher", "encoder", "evaluator", "task", "fraction", "label",
                            "setup"]).size() == 1).all()
    tables = comparison_tables(frame(rows, tmp_path), method_order=["random", "full", "mkdt"])
    assert len(tables) == 2 and ["[t1]" in t.caption for t in tables] == [True, False]
    t1, t2 = (t.cells for t in tables)
    assert t1.loc["mkdt [resnet18] {iterations=50}", "linear digits @ 5%"] == "99.10 ± 0.08"
    assert t1.loc["mkdt [resnet18] {iterations=100}", "linear digits @ 5%"] == "81.00 ± 0.82"
    convnet = "mkdt [convnet] {iterations=100}"
    assert t1.loc[convnet, "knn digits @ 5%"] == "31.00 ± 0.82"
    assert t1.loc[convnet, "linear cifar10 @ 5%"] == "6.00 ± 0.82"
    assert t1.loc[convnet, "linear digits @ 5%"] == "62.00 ± 0.82"
    assert list(t2.index) == ["mkdt"] and t2.loc["mkdt", "digits @ 5%"] == "3.00 ± 0.82"


def test_variants_are_rows_of_their_own(tmp_path):
    rows = grid(values={"random": [50, 52, 57], "mkdt": [60, 61, 62],
                        "mkdt[init=random]": [40, 41, 45]})
    f = frame(rows, tmp_path)
    (table,) = comparison_tables(f, method_order=["random", "mkdt", "mkdt[init=random]"])
    assert list(table.cells.index) == ["random", "mkdt", "mkdt[init=random]"]
    (paired,) = paired_tables(f, "random", ["random", "mkdt", "mkdt[init=random]"])
    assert paired.cells.loc["mkdt[init=random]", "digits @ 1%"].startswith("-11.00 (p=")
    tidy = tidy_table(f)
    assert set(zip(tidy["method"], tidy["variant"])) == {("random", ""), ("mkdt", ""),
                                                          ("mkdt", "init=random")}


def test_sets_are_labelled_by_the_images_they_hold(tmp_path):
    """``full`` holds the whole training set, ``none`` nothing, whatever the budget; rows
    from before set sizes were recorded get the same labels."""
    for legacy in (False, True):
        f = frame(grid(legacy=legacy, timings={"pretrain_steps": 100.0}), tmp_path)
        (paper,) = comparison_tables(f, "paper", ["random", "full", "mkdt"])
        assert list(paper.cells.index) == ["teacher (1,437)", "random (143)", "full (1,437)",
                                           "mkdt (143)", "none (0)"], legacy
        (default,) = comparison_tables(f, "default", ["random", "full", "mkdt"])
        assert list(default.cells.index) == ["teacher", "random", "full (1,437)", "mkdt",
                                             "none (0)"]
        if not legacy:
            (costs,) = budget_tables(f, ["random", "full", "mkdt"])
            assert costs.cells.loc["full (1,437)", "images"] == "1,437"
            assert costs.cells.loc["none (0)", "images"] == "0"


def test_captions_say_what_a_table_shows(tmp_path):
    (table,) = comparison_tables(frame(grid(), tmp_path), ci=True)
    caption = table.caption
    for part in ("Top-1 accuracy (%)", "digits at 1 % and 5 % labels", "source digits",
                 "1,437 training images", "budget 143 images (9.95 %)", "encoder convnet",
                 "evaluator linear", "teacher SimCLR resnet10, 20 epochs",
                 "mean ± population std over 3 seeds", "95 % t-interval", "ceiling", "floor"):
        assert part in caption, part
    text = Markdown().tables([table])
    assert text.startswith(f"Table: {caption}\n\n| method")


def test_a_supervised_proxy_teacher_is_named_as_such():
    assert describe_teacher({**TEACHER, "kind": "supervised", "arch": "convnet:width=64",
                                "epochs": 10}) == \
        "supervised (labelled proxy) convnet:width=64, 10 epochs"
    assert describe_teacher(TEACHER) == "SimCLR resnet10, 20 epochs"  # no kind: SSL


def test_one_seed_has_no_std_and_intervals_stay_in_0_100(tmp_path):
    rows = [row("random", 0, 50.0), row("mkdt", 0, 99.5), row("mkdt", 1, 100.0),
            row("mkdt", 2, 90.0), row("none", 0, 0.0), row("none", 1, 0.5), row("none", 2, 9.0)]
    (table,) = comparison_tables(frame(rows, tmp_path), ci=True)
    assert table.cells.loc["random", "digits @ 5%"] == "50.00 [n/a] (n=1)"
    mkdt = table.cells.loc["mkdt", "digits @ 5%"]
    assert mkdt.endswith(", 100.00]") and "± 4.60" in mkdt
    assert table.cells.loc["none (0)", "digits @ 5%"].split("[")[1].startswith("0.00,")
    lo, hi = confidence_interval(np.array([99.5, 100.0, 90.0]))
    assert hi == 100.0 and lo < 90
    (single,) = comparison_tables(frame([row("random", 0, 50.0)], tmp_path))
    assert single.cells.loc["random", "digits @ 5%"] == "50.00"
    assert "value of 1 seed" in single.caption


def test_latex_is_a_booktabs_float_with_bold_only_where_significant(tmp_path):
    clear = grid(values={"random": [50, 52, 57], "mkdt": [60, 61, 62]})
    close = grid(values={"random": [50, 52, 57], "mkdt": [51, 50, 59]})
    for rows, bold in ((clear, True), (close, False)):
        text = Latex().tables(comparison_tables(frame(rows, tmp_path)))
        assert text.startswith("\\begin{table}") and text.rstrip().endswith("\\end{table}")
        for part in ("\\caption{Top-1 accuracy (\\%)", "\\toprule", "\\midrule",
                     "\\bottomrule", "$\\pm$"):
            assert part in text, part
        assert "#" not in text and "|" not in text and "±" not in text
        assert ("\\textbf{61.00 $\\pm$ 0.82}" in text) is bold
        assert text.count("\\textbf") == (2 if bold else 0)  # both label fractions
    with pytest.raises(UserError, match="format 'html'"):
        FORMATS.get("html")


def test_paired_table_against_scipy(tmp_path):
    from scipy.stats import ttest_rel

    f = frame(grid(), tmp_path)
    (table,) = paired_tables(f, "random", ["random", "full", "mkdt"])
    assert list(table.cells.index) == ["full (1,437)", "mkdt", "none (0)"]
    p = ttest_rel([60, 61, 62], [50, 52, 57]).pvalue
    assert table.cells.loc["mkdt", "digits @ 1%"] == f"+8.00 (p={p:.3f}, n=3)"
    assert "Difference from random" in table.caption
    with pytest.raises(UserError, match="paired baseline 'kmeans'"):
        paired_tables(f, "kmeans")
    only_one = [r for r in grid() if not (r.method == "none" and r.seed > 0)]
    (table,) = paired_tables(frame(only_one, tmp_path), "random")
    assert table.cells.loc["none (0)", "digits @ 1%"] == "-40.00 (p=n/a, n=1)"


def test_missing_and_failed_cells(tmp_path):
    rows = grid(values={"random": [50, 52, 57]})
    rows += [row("random", s, None, task="cub2011", status="missing",
                 error="missing: /data/CUB_200_2011/images.txt") for s in range(3)]
    rows += [row("mkdt", 0, None, status="failed", error="UserError: boom")]
    (table,) = comparison_tables(frame(rows, tmp_path), method_order=["random", "mkdt"])
    assert table.cells.loc["random", "cub2011 @ 5%"] == \
        "n/a (missing: /data/CUB_200_2011/images.txt)"
    assert table.cells.loc["mkdt", "digits @ 5%"] == "failed"


@pytest.fixture
def cli(capsys):
    """The command line in this process: ``cli(*args)`` -> returncode, stdout, stderr."""
    def run(*args: str) -> SimpleNamespace:
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


def test_csv_is_one_tidy_table_of_the_stored_numbers(tmp_path, cli):
    rows = grid(timings={"pretrain_steps": 100.0, "distill_s": 2.0})
    rows += grid(28, {"random": [40, 41, 42], "mkdt": [45, 44, 43], "none": [9, 9, 9]},
                 timings={"pretrain_steps": 20.0})
    db = tmp_path / "r.sqlite"
    ResultStore(db).add(rows)
    out = cli("table", "--results-db", str(db), "--format", "csv", "--paired", "random",
              "--budget-table", "--ci")
    assert out.returncode == 0, out.stderr
    tidy = pd.read_csv(io.StringIO(out.stdout))
    for column in ("method", "variant", "set_images", "budget_images", "budget_percent",
                   "source", "teacher", "encoder", "evaluator", "task", "label_fraction",
                   "metric", "mean", "std", "n", "ci_low", "ci_high", "diff_mean",
                   "p_value", "pretrain_steps"):
        assert column in tidy.columns, column
    for column in ("mean", "std", "n", "set_images", "budget_images", "label_fraction",
                   "p_value"):
        assert pd.api.types.is_numeric_dtype(tidy[column]), column
    assert len(tidy) == len({(r.method, r.budget, r.fraction) for r in rows})
    stored = pd.DataFrame([vars(r) for r in rows])
    for _, g in tidy.iterrows():
        values = stored[(stored["method"] == g["method"]) &
                        (stored["budget"] == g["budget_images"]) &
                        (stored["fraction"] == g["label_fraction"])]["accuracy"]
        assert g["mean"] == pytest.approx(values.mean())
        assert g["std"] == pytest.approx(values.std(ddof=0))
        assert g["n"] == len(values)
    full = tidy[tidy["method"] == "full"].iloc[0]
    assert full["set_images"] == 1437 and full["budget_images"] == 143
    assert full["budget_percent"] == pytest.approx(100 * 143 / 1437)
    mkdt = tidy[(tidy["method"] == "mkdt") & (tidy["budget_images"] == 143)
                & (tidy["label_fraction"] == 0.01)].iloc[0]
    assert mkdt["diff_mean"] == pytest.approx(8.0) and mkdt["baseline"] == "random"
    run_csv = cli("table", "--results-db", str(db), "--format", "csv", "--out",
                  str(tmp_path / "t.csv"))
    assert run_csv.stdout == "" and pd.read_csv(tmp_path / "t.csv").shape[0] == len(tidy)
    latex = cli("table", "--results-db", str(db), "--format", "latex", "--paired", "random",
                "--budget-table")
    assert latex.returncode == 0 and "##" not in latex.stdout
    assert latex.stdout.count("\\begin{table}") == 6  # 2 budgets x (results, paired, cost)
    md = cli("table", "--results-db", str(db), "--layout", "paper", "--budget-table")
    assert "## digits" in md.stdout and "| full (1,437)" in md.stdout
    assert "equal pre-training steps for every set of one size" in md.stdout.lower()


def test_an_evaluator_with_two_setups_gets_two_columns(tmp_path):
    rows = grid(values={"random": [50, 52, 57]})
    for r in rows:
        r.config["evaluator_options"] = {"steps": 20}
    more = grid(values={"random": [60, 61, 62]})
    for r in more:
        r.config["evaluator_options"] = {"steps": 100}
        r.cell_key += "-100"
    for layout in ("default", "paper", "arch"):
        (table,) = comparison_tables(frame(rows + more, tmp_path), layout)
        columns = [c.split(" / ")[-1] for c in table.cells.columns]
        assert sorted(columns) == ["linear {steps=100} digits @ 1%",
                                   "linear {steps=100} digits @ 5%",
                                   "linear {steps=20} digits @ 1%",
                                   "linear {steps=20} digits @ 5%"]
        assert table.cells.iloc[-1].str.startswith("61.00 ± ").sum() == 1


def test_a_row_stored_before_an_option_existed_reads_as_its_compatible_default(tmp_path):
    """The linear probe's labelled_mode/encode_batch, MKDT's expert_half and pre-training's
    steps came later; rows without them ran as their compatible defaults do."""
    old = grid(values={"mkdt": [50, 52, 57]})
    for r in old:
        r.config["evaluator_options"] = {"steps": 20}
        r.config["method_options"] = {"iterations": 5}
    new = grid(values={"mkdt": [60, 61, 62]})
    for r in new:
        r.config["evaluator_options"] = {"steps": 20, "labelled_mode": "eval",
                                         "encode_batch": 256}
        r.config["method_options"] = {"iterations": 5, "expert_half": False}
        r.config["pretrain"] = {**r.config["pretrain"], "steps": 0}
        r.cell_key += "-new"
    (table,) = comparison_tables(frame(old + new, tmp_path), "default")
    assert list(table.cells.columns) == ["digits @ 1%", "digits @ 5%"]
    assert [i for i in table.cells.index if i.startswith("mkdt")] == ["mkdt"]
    # a value other than the compatible default still sets the rows apart
    for r in new:
        r.config["evaluator_options"]["labelled_mode"] = "train"
    (table,) = comparison_tables(frame(old + new, tmp_path), "default")
    assert "linear {labelled_mode=train} digits @ 1%" in table.cells.columns
    assert "linear {labelled_mode=-} digits @ 1%" not in table.cells.columns


def test_relative_scores_share_of_the_full_random_gap_with_fieller_interval(tmp_path, cli):
    from scipy.stats import ttest_1samp

    f = frame(grid(), tmp_path)
    (table,) = relative_tables(f, ["random", "full", "mkdt"])
    gain = np.array([60, 61, 62]) - np.array([50, 52, 57])
    gap = np.array([70, 72, 71]) - np.array([50, 52, 57])
    lo, hi = fieller_interval(gain, gap)
    # Fieller's interval is the set of ratios a paired t-test of gain - ratio * gap keeps
    for edge in (lo, hi):
        assert ttest_1samp(gain - edge * gap, 0).pvalue == pytest.approx(0.05, abs=1e-6)
    assert ttest_1samp(gain - (lo + hi) / 2 * gap, 0).pvalue > 0.05
    assert table.cells.loc["mkdt", "digits @ 1%"] == \
        f"{100 * gain.mean() / gap.mean():+.1f} % [{100 * lo:+.1f}, {100 * hi:+.1f}] (n=3)"
    assert table.cells.loc["random", "digits @ 1%"] == "0 % (reference)"
    assert table.cells.loc["full (1,437)", "digits @ 1%"] == "100 % (reference)"
    assert table.cells.loc["none (0)", "digits @ 1%"].startswith("-")
    assert "teacher" not in table.cells.index and "Fieller" in table.caption
    # a gap the seeds do not separate from zero has no bounded interval
    noisy = frame(grid(values={"random": [50, 52, 57], "full": [58, 45, 60],
                               "mkdt": [55, 50, 58]}), tmp_path)
    (table,) = relative_tables(noisy, ["random", "full", "mkdt"])
    assert table.cells.loc["mkdt", "digits @ 1%"].endswith("[unbounded] (n=3)")
    with pytest.raises(UserError, match="one 'high' reference .*; none stored"):
        relative_tables(frame(grid(values={"random": [50, 52, 57], "mkdt": [1, 2, 3]}),
                              tmp_path))
    db = tmp_path / "rel.sqlite"
    ResultStore(db).add(grid())
    out = cli("table", "--results-db", str(db), "--relative")
    assert out.returncode == 0 and "Gain over random as a share" in out.stdout
    csv = pd.read_csv(io.StringIO(cli("table", "--results-db", str(db), "--format", "csv",
                                      "--relative").stdout))
    mkdt = csv[(csv["method"] == "mkdt") & (csv["label_fraction"] == 0.01)].iloc[0]
    assert mkdt["relative"] == pytest.approx(100 * gain.mean() / gap.mean())
    assert mkdt["relative_low"] == pytest.approx(100 * lo)
    assert csv.loc[csv["method"] == "teacher", "relative"].isna().all()
    ResultStore(tmp_path / "no-full.sqlite").add(grid(values={"random": [50, 52, 57]}))
    bad = cli("table", "--results-db", str(tmp_path / "no-full.sqlite"), "--relative")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    assert "'high' reference" in bad.stderr and "random" in bad.stderr


def test_paired_p_values_below_one_in_a_thousand_are_not_printed_as_zero(tmp_path):
    values = {"random": [50, 52, 57, 51, 49], "mkdt": [60.1, 62, 67.2, 61, 58.9]}
    (table,) = paired_tables(frame(grid(values=values), tmp_path), "random")
    assert table.cells.loc["mkdt", "digits @ 1%"] == "+10.04 (p<0.001, n=5)"


def test_caption_gives_the_pool_the_methods_distil_from_not_the_teachers_images(tmp_path):
    rows = grid()
    for r in rows:
        if r.method != "teacher":  # methods distil from a 500-image pool (run.train_pool)
            r.config.update(source_images=500, train_pool=500)
    (table,) = comparison_tables(frame(rows, tmp_path))
    assert "methods distil from 500 training images" in table.caption
    assert "budget 143 images (28.6 %)" in table.caption
