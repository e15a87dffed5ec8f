"""The report package: formats by registry, one split per source for every format, the
reference rows known by what they record, figures that show one source each, and tables
that render without torch or the method registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from mkdt_bench.cli import main
from mkdt_bench.errors import UserError
from mkdt_bench.report.compose import check_report_rows, compose
from mkdt_bench.report.contents import Report, ReportOptions
from mkdt_bench.report.figures import figures, versus_figures
from mkdt_bench.report.formats import FORMATS, TableFormat
from mkdt_bench.report.tables import comparison_tables
from mkdt_bench.results import ResultRow, ResultStore
from mkdt_bench.rows import SCHEMA_VERSION

TEACHER = {"arch": "resnet10", "ssl": "simclr", "epochs": 20, "train_images": 0,
           "checkpoint": ""}
PRETRAIN = {"epochs": 20, "lr": 0.1, "use_learned_lr": True, "momentum": 0.9,
            "weight_decay": 1e-4, "batch_size": 32, "steps": 0}


def row(label: str, seed: int, accuracy: float, *, reference: str | None = None,
        dataset: str = "digits", arch: str = "convnet", fraction: float = 0.05,
        pretrain: dict | None = None, task: str = "digits", options: dict | None = None
        ) -> ResultRow:
    """A current (schema 2) row as the runner writes it; the teacher row when ``label`` is
    ``teacher``."""
    budget, size = (1437, 1437) if label == "teacher" else (143, {"floor": 0, "high": 1437}.get(
        reference or "", 143))
    config: dict = {"schema": SCHEMA_VERSION, "dataset": dataset, "teacher": "t1",
                    "teacher_config": TEACHER, "source_images": 1437}
    if label != "teacher":
        config.update(method=label.split("[")[0], method_options=options or {},
                      method_code={"version": 1}, train_pool=0, pretrain=pretrain or PRETRAIN)
        if reference:
            config["reference"] = reference
    return ResultRow(cell_key=f"{dataset}-{label}-{arch}-{fraction}-{seed}-{task}",
                     dataset=dataset, method=label, budget=budget,
                     arch="resnet10" if label == "teacher" else arch, evaluator="linear",
                     task=task, fraction=fraction, seed=seed, accuracy=accuracy, status="ok",
                     error=None, config=config, timings={"set_images": size})


def grid(dataset: str = "digits", arch: str = "convnet", names: dict | None = None,
         **kw) -> list[ResultRow]:
    """teacher, the low/high/floor references and one method over 3 seeds and 2 fractions;
    ``names``: the reference rows' labels by role."""
    names = {"low": "random", "high": "full", "floor": "none", **(names or {})}
    values = {("teacher", None): 90, (names["low"], "low"): 50, (names["high"], "high"): 70,
              ("mkdt", None): 60, (names["floor"], "floor"): 10}
    return [row(label, s, v + s + f * 10, reference=ref, dataset=dataset, arch=arch,
                fraction=f, **kw)
            for (label, ref), v in values.items() for s in range(3) for f in (0.01, 0.05)
            if not (label == "teacher" and arch != "convnet")]


def stored(rows: list[ResultRow], tmp_path, name: str = "r.sqlite") -> pd.DataFrame:
    store = ResultStore(tmp_path / name)
    store.add(rows)
    return store.frame()


def test_a_new_format_is_one_registration_and_reaches_the_cli(tmp_path, monkeypatch, capsys):
    """The issue's promise: HTML or JSON later = one new file (here: a class) + one line."""
    monkeypatch.setattr(FORMATS, "_items", dict(FORMATS._items))

    @FORMATS.register("json")
    class Json(TableFormat):
        def write(self, report: Report) -> str:
            return json.dumps([{"source": source, "captions": [t.caption for t in tables],
                                "rows": [list(t.cells.index) for t in tables]}
                               for source, tables in report.sections])

    rows = grid() + grid(dataset="other")
    frame = stored(rows, tmp_path)
    written = json.loads(compose(frame, ReportOptions(format="json"), headed=True))
    assert [s["source"] for s in written] == ["digits", "other"]
    assert written[0]["rows"][0] == ["teacher", "random", "full (1,437)", "mkdt", "none (0)"]
    assert main(["table", "--results-db", str(tmp_path / "r.sqlite"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == written
    with pytest.raises(UserError, match="unknown table format 'yaml'"):
        compose(frame, ReportOptions(format="yaml"))


def test_every_format_splits_the_sources_alike(tmp_path):
    """Two data sets, one of them with two encoders: LaTeX prints the tables markdown
    prints (per source, the cross-architecture table only where a source has several
    encoders), and the CSV holds both sources."""
    rows = grid() + grid(arch="resnet18") + grid(dataset="other")
    frame = stored(rows, tmp_path)
    markdown = compose(frame, ReportOptions(format="markdown"), headed=True)
    latex = compose(frame, ReportOptions(format="latex"), headed=True)
    captions = [line.removeprefix("Table: ") for line in markdown.splitlines()
                if line.startswith("Table: ")]
    floats = [line for line in latex.splitlines() if line.startswith("\\caption{")]
    assert len(captions) == len(floats) == 3  # digits: comparison + arch; other: comparison
    assert [c.startswith("Top-1") for c in captions] == [True, True, True]
    assert ["source other" in c for c in captions] == [False, False, True]
    assert ["source other" in f for f in floats] == [False, False, True]
    assert markdown.startswith("## digits\n\n") and "\n\n## other\n\n" in markdown
    csv = compose(frame, ReportOptions(format="csv"), headed=True)
    assert set(pd.read_csv(pd.io.common.StringIO(csv))["source"]) == {"digits", "other"}


def test_reference_rows_are_known_by_what_they_record_not_their_name(tmp_path):
    """A floor row named ``empty`` is last and named in the caption; a relative score runs
    between the rows that record ``low`` and ``high``, whatever their labels."""
    rows = grid(names={"low": "subset", "high": "pool", "floor": "empty"})
    frame = stored(rows, tmp_path)
    (table,) = comparison_tables(frame)
    assert list(table.cells.index)[-1] == "empty (0)"
    assert "empty: no pre-training (floor)" in table.caption
    text = compose(frame, ReportOptions(relative=True))
    assert "Gain over subset as a share of the pool - subset gap" in text
    assert "| subset " in text and "0 % (reference)" in text
    plain = stored([r for r in rows if r.method != "pool"], tmp_path, "nohigh.sqlite")
    with pytest.raises(UserError, match="one 'high' reference .*; none stored"):
        compose(plain, ReportOptions(relative=True))


def test_run_checks_the_reference_rows_by_their_declared_role():
    options = ReportOptions(relative=True)
    roles = {"lo": "low", "hi": "high", "x": None}
    check_report_rows(options, ["lo", "hi", "m"], roles)
    with pytest.raises(UserError, match="--relative needs 'hi' among the methods"):
        check_report_rows(options, ["lo", "m"], roles)
    with pytest.raises(UserError, match="--paired m2 needs 'm2'"):
        check_report_rows(ReportOptions(paired="m2"), ["lo", "m"], roles)


def test_tables_render_without_torch_or_the_method_registry(tmp_path):
    frame = stored(grid(), tmp_path)
    frame.to_pickle(tmp_path / "frame.pkl")
    script = textwrap.dedent(f"""
        import sys
        import pandas as pd
        from mkdt_bench.report.compose import compose
        from mkdt_bench.report.contents import ReportOptions
        frame = pd.read_pickle({str(tmp_path / "frame.pkl")!r})
        for fmt in ("markdown", "latex", "csv"):
            assert compose(frame, ReportOptions(format=fmt, relative=True, paired="random",
                                                budget_table=True), headed=True)
        heavy = [m for m in ("torch", "mkdt_bench.methods", "mkdt_bench.evaluators")
                 if m in sys.modules]
        print("imported:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "imported: []"


def _legends(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_a_figure_shows_one_source_and_names_only_its_own_setups(tmp_path):
    """mkdt's pre-training differs between the two sources, never within one: no legend
    carries the other source's ``{pretrain...}`` suffix."""
    rows = grid() + grid(dataset="other", pretrain={**PRETRAIN, "epochs": 10})
    made = figures(stored(rows, tmp_path))
    assert [name.split("-")[0] for name, _ in made] == ["digits", "other"]
    for _, fig in made:
        assert "mkdt" in _legends(fig) and not any("{" in t for t in _legends(fig))


def test_titles_stay_inside_the_figure_beside_a_wide_legend(tmp_path):
    long_task = "imagefolder:/data/" + "a-long-folder-name/" * 4 + "cifar10-jpeg-with-a-long-name"
    rows = grid(task=long_task)
    rows += [row("mkdt[init=random,iterations=50,lr_img=1000,expert_epochs=2,syn_steps=40]", s,
                 55.0 + s, fraction=f, task=long_task) for s in range(3) for f in (0.01, 0.05)]
    ((_, fig),) = figures(stored(rows, tmp_path))
    title = fig.axes[0].title.get_window_extent()
    assert title.x0 >= 0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1


def test_no_two_lines_look_alike_beyond_ten_sets(tmp_path):
    """Twelve sets: colour and dash pattern differ for every pair of lines (the colour
    cycle repeats after ten); in an ablation, more than six sets that do not sweep the
    option differ as well."""
    labels = [f"m{i}" for i in range(12)]
    rows = grid() + [row(label, s, 40.0 + i + s, fraction=f) for i, label in enumerate(labels)
                     for s in range(3) for f in (0.01, 0.05)]
    ((_, fig),) = figures(stored(rows, tmp_path))
    styles = [(c.lines[0].get_color(), c.lines[0].get_linestyle())
              for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(styles) == 15 and len(set(styles)) == 15  # 12 + random, full, mkdt
    swept = [row(f"mkdt[iterations={n}]", s, 60.0 + n / 10 + s, fraction=0.05,
                 options={"iterations": n})
             for n in (10, 50) for s in range(3)]
    others = [r for r in rows if r.fraction == 0.05]
    ((_, versus),) = versus_figures(stored(others + swept, tmp_path, "v.sqlite"), "iterations")
    lines = [line for line in versus.axes[0].get_lines()
             if line.get_label().split(" ")[0] in labels]
    assert len(lines) == 12
    assert len({(line.get_color(), line.get_linestyle())
                for line in lines}) == 12
