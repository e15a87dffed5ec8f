"""Coreset baselines in the teacher's representation space (kmeans, kcenter, herding), the
class-balanced random subset, and the labels a method receives only when it declares them."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import method_context as toy_context

from mkdt_bench import api
from mkdt_bench.config import build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, create_method
from mkdt_bench.methods._coreset import proportional_counts
from mkdt_bench.methods.herding import herd
from mkdt_bench.methods.kcenter import k_center_greedy
from mkdt_bench.methods.kmeans import nearest_distinct
from mkdt_bench.pipeline.planner import plan_grid
from mkdt_bench.report.formats.csv import tidy_table
from mkdt_bench.report.tables import comparison_tables
from mkdt_bench.results import ResultStore
from mkdt_bench.stages.distill import method_context, pool_indices
from mkdt_bench.stages.env import Env
from mkdt_bench.stages.teacher import run_teacher

COVERAGE = ("kmeans", "kcenter", "herding")


def context(tmp_path, targets, seed=0, budget=3, labels=None):
    n = len(targets)
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return toy_context(images.contiguous(), targets, tmp_path, budget=budget, seed=seed,
                       labels=labels, source="toy", inputs_key="toy")


def blobs(per_blob=20, seed=0):
    """Three tight, far-apart groups of 2-d points; point 0 of group g is its centre."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    noise = torch.randn(3, per_blob, 2, generator=g)
    noise[:, 0] = 0.0
    return (centres[:, None] + noise).reshape(-1, 2)


@pytest.mark.parametrize("name", COVERAGE)
def test_one_image_from_each_far_apart_group(tmp_path, name):
    x = blobs()
    out = create_method(name).distill(context(tmp_path, x))
    idx = torch.tensor(out.extra["indices"])
    assert sorted((idx // 20).tolist()) == [0, 1, 2]  # every group covered once
    assert out.images.shape == (3, 1, 2, 2) and out.targets.shape == (3, 2) and out.lr is None
    assert torch.equal(out.targets, x[idx]) and torch.equal(out.images[:, 0, 0, 0], idx.float())


def test_kmeans_picks_the_real_point_nearest_each_centroid(tmp_path):
    x = blobs()
    out = create_method("kmeans").distill(context(tmp_path, x))
    # the centre of each group is its exact mean up to the noise; it is the nearest point
    means = x.view(3, 20, 2).mean(1)
    nearest = torch.cdist(means, x).argmin(1)
    assert sorted(out.extra["indices"]) == sorted(nearest.tolist())
    assert sorted(out.extra["cluster_sizes"]) == [20, 20, 20]


def test_nearest_distinct_never_repeats_an_image():
    x = torch.tensor([[0.0], [1.0], [10.0]])
    assert nearest_distinct(torch.tensor([[0.1], [0.2], [0.3]]), x).tolist() == [0, 1, 2]


def test_kcenter_is_farthest_first():
    x = torch.tensor([[0.0], [1.0], [9.0], [10.0], [4.0]])
    idx, radius = k_center_greedy(x, 3, first=0)
    assert idx.tolist() == [0, 3, 4] and radius == pytest.approx(1.0)


def test_herding_keeps_the_running_mean_on_the_pool_mean():
    x = torch.tensor([[0.0], [10.0], [4.0], [6.0], [5.0]])  # mean 5
    idx, gap = herd(x, 3)
    assert idx.tolist() == [4, 2, 3] and gap == pytest.approx(0.0)


@pytest.mark.parametrize("name", [*COVERAGE, "random-balanced"])
def test_same_seed_same_set_and_distinct_indices(tmp_path, name):
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(60) % 4
    a = create_method(name).distill(context(tmp_path, x, budget=10, labels=labels))
    b = create_method(name).distill(context(tmp_path, x, budget=10, labels=labels))
    assert a.extra["indices"] == b.extra["indices"] and torch.equal(a.images, b.images)
    assert len(set(a.extra["indices"])) == 10 and len(a) == 10


@pytest.mark.parametrize("name", ["kmeans", "kcenter", "random-balanced"])
def test_seeded_methods_change_with_the_seed(tmp_path, name):
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(60) % 4
    sets = [create_method(name).distill(context(tmp_path, x, seed, 10, labels)).extra["indices"]
            for seed in range(4)]
    assert len({tuple(s) for s in sets}) > 1
    assert METHODS.get(name).seeded and not METHODS.get("herding").seeded


def test_normalize_selects_in_cosine_geometry(tmp_path):
    # two directions; in raw space the long vectors dominate, in cosine space they coincide
    x = torch.tensor([[1.0, 0.0], [100.0, 0.0], [0.0, 1.0], [0.0, 100.0], [1.0, 1.0]])
    raw = create_method("kcenter").distill(context(tmp_path, x, budget=2, seed=0))
    unit = create_method("kcenter", normalize=True).distill(context(tmp_path, x, 0, 2))
    assert raw.extra["radius"] != pytest.approx(unit.extra["radius"])
    assert unit.extra["radius"] <= 1.0


def test_random_balanced_takes_every_class_equally(tmp_path):
    x = torch.randn(70, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.cat([torch.zeros(50), torch.ones(15), torch.full((5,), 2)]).long()
    out = create_method("random-balanced").distill(context(tmp_path, x, budget=13,
                                                           labels=labels))
    counts = torch.bincount(labels[out.extra["indices"]], minlength=3).tolist()
    assert sorted(counts) == [4, 4, 5]  # 13 over 3 classes, off by at most one
    short = create_method("random-balanced").distill(context(tmp_path, x, budget=30,
                                                             labels=labels))
    counts = torch.bincount(labels[short.extra["indices"]], minlength=3).tolist()
    assert counts[2] == 5 and abs(counts[0] - counts[1]) <= 1  # class 2 runs out
    assert torch.equal(out.targets, x[out.extra["indices"]])


def test_random_balanced_without_labels_is_refused(tmp_path):
    with pytest.raises(UserError, match="needs the training labels"):
        create_method("random-balanced").distill(context(tmp_path, torch.randn(9, 2)))


def test_only_methods_that_declare_labels_receive_them(tmp_path):
    assert METHODS.get("random-balanced").uses_labels
    assert not any(METHODS.get(m).uses_labels for m in METHODS.names()
                   if m != "random-balanced")
    cfg = build_config(flags={"methods": ["random"], "seeds": [0], "fractions": [0.05],
                              "train_pool": 300, "teacher_row": False},
                       overrides=["teacher.arch='convnet:width=8'", "teacher.epochs=1",
                                  "teacher.proj_dim=16", "teacher.batch_size=128",
                                  "pretrain.epochs=1"]).to_dict()
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    plan = plan_grid(cfg, env, ResultStore(tmp_path / "r.sqlite"))
    run_teacher(plan.teacher, env)  # planning computes nothing; the contexts need it
    inputs = plan.distill_units[0].inputs
    plain = method_context(env, inputs, 10, 0, tmp_path / "s")
    labelled = method_context(env, inputs, 10, 0, tmp_path / "s", labels=True)
    assert plain.labels is None
    train_labels = load_dataset("digits", cache_dir=tmp_path / "cache").train_labels
    pool = pool_indices(len(train_labels), 300)
    assert torch.equal(labelled.labels, train_labels[pool])  # positions in the pool
    assert torch.equal(labelled.images, plain.images)


def test_label_rows_are_marked_in_their_config(tmp_path):
    cfg = build_config(flags={"methods": ["random-balanced", "herding"], "seeds": [0],
                              "fractions": [0.05], "teacher_row": False},
                       overrides=["teacher.arch='convnet:width=8'", "teacher.epochs=1",
                                  "teacher.proj_dim=16", "teacher.batch_size=128",
                                  "pretrain.epochs=1"])
    frame = api.run(cfg, cache_dir=tmp_path / "cache", results_db=tmp_path / "r.sqlite",
                    executor="inprocess", threads=1, progress=False).frame
    assert (frame["status"] == "ok").all()
    marks = {m: json.loads(c).get("uses_labels") for m, c in zip(frame["method"],
                                                                 frame["config"])}
    assert marks == {"random-balanced": True, "herding": None}
    (table,) = comparison_tables(frame)
    assert list(table.cells.index) == ["random-balanced †", "herding"]
    assert "†: the method reads the training labels (not self-supervised)" in table.caption
    tidy = tidy_table(frame).set_index("method")
    assert bool(tidy.loc["random-balanced", "uses_labels"])
    assert not tidy.loc["herding", "uses_labels"]


def test_proportional_counts_fill_the_budget_exactly():
    assert proportional_counts(torch.tensor([50, 30, 20]), 10).tolist() == [5, 3, 2]
    assert proportional_counts(torch.tensor([5, 5, 5]), 4).tolist() == [2, 1, 1]
    counts = proportional_counts(torch.tensor([7, 1, 0, 13]), 9)
    assert int(counts.sum()) == 9 and counts[2] == 0
    assert all(c <= s for c, s in zip(counts.tolist(), [7, 1, 0, 13]))
    with pytest.raises(UserError):
        proportional_counts(torch.tensor([1, 2]), 4)


def test_bad_options_are_named():
    with pytest.raises(UserError, match="max_iter=0"):
        create_method("kmeans", max_iter=0)
    with pytest.raises(UserError, match="unknown option 'k'"):
        create_method("kcenter", k=3)


@pytest.mark.parametrize("method, setting, expected", [
    ("sas", "methods.sas.threshold=2.0", "threshold=2.0"),
    ("kmeans", "methods.kmeans.max_iter=0", "max_iter=0"),
    ("dm-ssl", "methods.dm-ssl.augment='dsa'", "'dsa'"),
    ("random-ssl", "methods.random-ssl.ssl='byol'", "'byol'"),
], ids=["sas threshold", "kmeans max_iter", "dm-ssl augment", "random-ssl ssl"])
def test_bad_baseline_options_on_the_command_line(tmp_path, cli_here, method, setting,
                                                  expected):
    from test_bad_input import RUN, check_refusal

    status, _, err = cli_here(*RUN, "--methods", method, "--set", setting,
                              cache=tmp_path / "cache")
    check_refusal(tmp_path / "cache", f"{method} {setting}", status, err, expected)
