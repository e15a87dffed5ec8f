"""Method variants: one method several times with its own options, each a named row."""

from __future__ import annotations

import pandas as pd
import pytest

from mkdt_bench import api
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.config import build_config
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.report.tables import comparison_tables, paired_tables
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.env import Env
from mkdt_bench.variants import canonical_label, parse_label, split_methods, split_variant

FAST = ["teacher.arch='convnet:width=16'", "teacher.epochs=1", "teacher.proj_dim=32",
        "teacher.batch_size=128", "pretrain.epochs=1",
        "methods.highloss.width=8", "methods.highloss.num_experts=2",
        "methods.highloss.train_epochs=2"]


def test_labels_parse_into_method_and_typed_options():
    assert parse_label("mkdt") == ("mkdt", {})
    assert parse_label("mkdt[init=random]") == ("mkdt", {"init": "random"})
    assert parse_label(" mkdt[ iterations = 200 , lr_img=1e3, single_expert=true ] ") == (
        "mkdt", {"iterations": 200, "lr_img": 1000.0, "single_expert": True})
    assert parse_label("import:/data/sets/x") == ("import:/data/sets/x", {})
    assert canonical_label("mkdt[ init = random ]") == "mkdt[init=random]"
    assert canonical_label(" random ") == "random"
    assert split_variant("mkdt[init=random,iterations=0]") == ("mkdt", "init=random,iterations=0")
    assert split_variant("random") == ("random", "")


def test_method_lists_keep_commas_inside_brackets():
    assert split_methods("mkdt,mkdt[init=random,iterations=50], random") == [
        "mkdt", "mkdt[init=random,iterations=50]", "random"]
    with pytest.raises(UserError, match="unbalanced brackets"):
        split_methods("mkdt[init=random,random")


@pytest.mark.parametrize("label, message", [
    ("mkdt[init]", "'init' is not KEY=VALUE"),
    ("mkdt[init=random,init=high_loss]", "sets 'init' twice"),
    ("mkdt[init=random]x", "is not NAME or NAME"),
    ("mkdt[init=sideways]", r"mkdt\[init=sideways\]: .*init='sideways' is not allowed"),
    ("mkdt[colour=red]", r"mkdt\[colour=red\]: .*unknown option 'colour'"),
    ("mkdtt[init=random]", "unknown method 'mkdtt'"),
])
def test_bad_variants_are_named(label, message):
    with pytest.raises(UserError, match=message):
        build_config("quick", {"methods": [label]})


def test_variant_options_go_on_top_of_the_method_section():
    cfg = build_config("quick", {"methods": ["mkdt", "mkdt[init=random]",
                                             "mkdt[ iterations=5 ]"]}).to_dict()
    assert cfg["run"]["methods"] == ["mkdt", "mkdt[init=random]", "mkdt[iterations=5]"]
    base = cfg["methods"]["mkdt"]
    assert cfg["methods"]["mkdt[init=random]"] == {**base, "init": "random"}
    assert cfg["methods"]["mkdt[iterations=5]"] == {**base, "iterations": 5}
    assert base["width"] == 16  # the preset's [methods.mkdt] section reaches every variant
    with pytest.raises(UserError, match=r"lists 'mkdt\[init=random\]' twice"):
        build_config("quick", {"methods": ["mkdt[init=random]", "mkdt[ init=random ]"]})


def test_variants_are_rows_of_their_own_end_to_end(tmp_path):
    labels = ["highloss", "highloss[num_experts=1]", "highloss[width=8]", "random"]
    cfg = build_config(flags={"methods": labels, "seeds": [0, 1], "fractions": [0.05],
                              "teacher_row": False}, overrides=FAST)
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    store = ResultStore(tmp_path / "results.sqlite")
    plan = plan_grid(cfg.to_dict(), env, store)

    def run() -> pd.DataFrame:
        return api.run(cfg, cache_dir=env.cache_dir, results_db=store.path,
                       executor="inprocess", threads=1, progress=False).frame

    # highloss[width=8] equals highloss (width 8 in FAST): one set, distilled once; the two
    # highloss sets are unseeded, random has one per seed
    assert len(plan.distill_units) == 2 + 2
    frame = run()
    assert (frame["status"] == "ok").all()
    assert sorted(set(frame["method"])) == sorted(labels)
    assert len(frame) == len(labels) * 2  # one cell per row and seed
    by = frame.set_index(["method", "seed"])["accuracy"]
    for seed in (0, 1):  # an identical set and seed give the identical number
        assert by["highloss[width=8]", seed] == by["highloss", seed]
    cache = ArtifactCache(tmp_path / "cache")
    sets = {r.method: r.encoder.distilled_key for r in plan.eval_units}
    one = DistilledSet.load(cache.path("distilled", sets["highloss[num_experts=1]"]))
    two = DistilledSet.load(cache.path("distilled", sets["highloss"]))
    assert one.extra["indices"] != two.extra["indices"]  # scored by another expert count
    (table,) = comparison_tables(frame, method_order=labels)
    assert list(table.cells.index) == labels
    (paired,) = paired_tables(frame, "random", labels)
    assert "highloss[num_experts=1]" in paired.cells.index
    again = run()  # a rerun computes nothing and returns the same rows
    assert sorted(again["cell_key"]) == sorted(frame["cell_key"])


def test_cli_reads_variants_with_commas_and_names_a_bad_one(capsys):
    from mkdt_bench.cli import main

    code = main(["run", "--methods", "random,mkdt[init=random,iterations=0]", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: mkdt[init=random,iterations=0]: ") and "iterations=0" in err
