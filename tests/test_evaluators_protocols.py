"""The ``knn`` monitor and the ``linear-val`` probe; ``linear`` unchanged by the L-BFGS refactor."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS, create_evaluator, linear_val
from mkdt_bench.evaluators import base as evaluators_base
from mkdt_bench.evaluators.base import extract_features, labelled_subset
from mkdt_bench.evaluators.knn import knn_predict

CPU = torch.device("cpu")


class Flatten(nn.Module):
    """An 'encoder' whose features are the raw pixels."""

    def features(self, x):
        return x.flatten(1)


def make_task(n_train=400, n_test=200, classes=3, separable=True, seed=0):
    """``classes``-class 1x1x``classes`` 'images': a bright pixel per class, or pure noise."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.randint(0, classes, (n,), generator=g)
        if separable:
            noise = torch.randint(-20, 21, (n, classes), generator=g)
            pixels = 40 + 150 * F.one_hot(labels, classes) + noise
        else:
            pixels = torch.randint(0, 256, (n, classes), generator=g)
        return pixels.view(n, 1, 1, classes).to(torch.uint8), labels

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    return ImageDataset("toy", xtr, ytr, xte, yte, [str(c) for c in range(classes)], (0.5,),
                        (0.25,))


def brute_force_knn(bank, bank_labels, queries, k, weighting):
    """One query at a time: sorted cosine similarities, Counter vote, ties to the smallest class."""
    preds = []
    for q in queries:
        sims = [(F.cosine_similarity(q, b, dim=0).item(), int(c))
                for b, c in zip(bank, bank_labels)]
        votes = Counter()
        for sim, c in sorted(sims, key=lambda t: -t[0])[:k]:
            votes[c] += sim if weighting == "similarity" else 1
        preds.append(max(votes, key=lambda c: (votes[c], -c)))
    return torch.tensor(preds)


def test_registered():
    assert {"knn", "linear-val"} <= set(EVALUATORS.names())


@pytest.mark.parametrize("name", ["knn", "linear-val"])
def test_separable_and_random(name):
    evaluator = create_evaluator(name)
    good = evaluator.evaluate(Flatten(), make_task(), 0.1, 0, CPU)
    assert good["accuracy"] > 95 and good["labelled"] == 40
    chance = evaluator.evaluate(Flatten(), make_task(separable=False, classes=2), 0.1, 0, CPU)
    assert 30 < chance["accuracy"] < 70


@pytest.mark.parametrize("weighting", ["uniform", "similarity"])
@pytest.mark.parametrize("k", [1, 7, 100])
def test_knn_matches_brute_force(weighting, k):
    g = torch.Generator().manual_seed(k)
    bank, queries = torch.randn(40, 5, generator=g), torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 4, (40,), generator=g)
    pred = knn_predict(bank, labels, queries, k, 4, weighting, chunk=8)
    assert torch.equal(pred, brute_force_knn(bank, labels, queries, k, weighting))


@pytest.mark.parametrize("weighting", ["uniform", "similarity"])
def test_knn_evaluate_matches_brute_force(weighting):
    task = make_task(n_train=200, n_test=50, classes=4, separable=False, seed=1)
    metrics = create_evaluator("knn", k=5, weighting=weighting).evaluate(Flatten(), task, 0.2, 2,
                                                                         CPU)
    idx = torch.tensor(labelled_subset(200, 0.2, 2))
    bank = extract_features(Flatten(), task.normalized("train")[idx], CPU)
    queries = extract_features(Flatten(), task.normalized("test"), CPU)
    pred = brute_force_knn(bank, task.train_labels[idx], queries, 5, weighting)
    expected = (pred == task.test_labels).double().mean().item() * 100
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["k"] == 5 and metrics["labelled"] == 40


def test_knn_ties_and_negative_similarities():
    bank, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0])
    for weighting in ("uniform", "similarity"):  # one vote each, equal similarity: class 0
        assert knn_predict(bank, labels, torch.tensor([[1.0, 1.0]]), 2, 2, weighting).item() == 0
    # the only neighbour (class 1) is dissimilar; class 0 has no vote and must not win at 0
    bank, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([1, 1, 0])
    pred = knn_predict(bank, labels, torch.tensor([[-1.0, -0.5]]), 1, 2, "similarity")
    assert pred.item() == 1


def test_knn_k_clipped_to_bank():
    metrics = create_evaluator("knn", k=1000).evaluate(Flatten(), make_task(), 0.1, 0, CPU)
    assert metrics["k"] == 40


class SpyTask:
    """Delegates to a task and logs every touch of its test split."""

    def __init__(self, task, log):
        self._task, self._log = task, log

    def __getattr__(self, name):
        if name.startswith("test"):
            self._log.append(name)
        return getattr(self._task, name)

    def normalized(self, split, index=None):
        self._log.append(f"normalized:{split}")
        return self._task.normalized(split, index)


def test_linear_val_touches_test_split_once_after_all_fits(monkeypatch):
    log = []
    fit, extract = linear_val.fit_linear_lbfgs, linear_val.extract_features

    def logged_fit(*args, **kwargs):
        log.append("fit")
        return fit(*args, **kwargs)

    def logged_extract(*args, **kwargs):
        log.append("extract")
        return extract(*args, **kwargs)

    monkeypatch.setattr(linear_val, "fit_linear_lbfgs", logged_fit)
    monkeypatch.setattr(linear_val, "extract_features", logged_extract)
    monkeypatch.setattr(evaluators_base, "extract_features", logged_extract)  # the test set
    grid = [1e-4, 1e-2, 1.0]
    evaluator = create_evaluator("linear-val", l2_grid=grid, steps=3)
    evaluator.evaluate(Flatten(), SpyTask(make_task(), log), 0.1, 0, CPU)
    assert log.count("fit") == len(grid) + 1  # one per grid value, then the refit
    first_test = min(i for i, e in enumerate(log) if e.startswith(("test", "normalized:test")))
    assert log[first_test:] == ["normalized:test", "extract", "test_labels"]
    assert log[:first_test] == ["normalized:train", "extract"] + ["fit"] * (len(grid) + 1)


@pytest.mark.parametrize("grid", [[1e3, 1e-4], [1e-4, 1e3]])
def test_linear_val_picks_best_validation_value(grid):
    # l2 = 1e3 flattens W to ~0 (bias only: the majority class); 1e-4 separates the classes
    metrics = create_evaluator("linear-val", l2_grid=grid).evaluate(Flatten(), make_task(), 0.2,
                                                                    0, CPU)
    assert metrics["l2"] == 1e-4 and metrics["val_accuracy"] > 95 and metrics["accuracy"] > 95


def test_linear_val_choice_is_argmax_of_single_value_runs():
    task, grid = make_task(classes=4, separable=False, seed=3), [1e-4, 1e-2, 1e-1, 1.0]
    vals = [create_evaluator("linear-val", l2_grid=[l2], steps=5)
            .evaluate(Flatten(), task, 0.3, 1, CPU)["val_accuracy"] for l2 in grid]
    metrics = create_evaluator("linear-val", l2_grid=grid, steps=5).evaluate(Flatten(), task,
                                                                             0.3, 1, CPU)
    assert metrics["val_accuracy"] == max(vals)
    assert metrics["l2"] == grid[vals.index(max(vals))]


@pytest.mark.parametrize("name, options", [("knn", {}), ("linear-val", {"steps": 5})])
def test_deterministic(name, options):
    evaluator, task = create_evaluator(name, **options), make_task(separable=False)
    first = evaluator.evaluate(Flatten(), task, 0.2, 3, CPU)
    assert first == evaluator.evaluate(Flatten(), task, 0.2, 3, CPU)


def test_linear_val_grid_from_cli_string():
    assert create_evaluator("linear-val", l2_grid="1e-3,0.1").config["l2_grid"] == [1e-3, 0.1]


@pytest.mark.parametrize("name, options, option", [
    ("linear-val", {"l2_grid": []}, "l2_grid"),
    ("linear-val", {"l2_grid": ["x"]}, "l2_grid"),
    ("linear-val", {"l2_grid": [-1.0]}, "l2_grid"),
    ("linear-val", {"val_fraction": 0.0}, "val_fraction"),
    ("linear-val", {"val_fraction": 1.0}, "val_fraction"),
    ("linear-val", {"val_fraction": -0.5}, "val_fraction"),
    ("linear-val", {"steps": 0}, "steps"),
    ("knn", {"k": 0}, "k="),
    ("knn", {"k": -3}, "k="),
    ("knn", {"weighting": "distance"}, "weighting"),
])
def test_bad_options(name, options, option):
    with pytest.raises(UserError) as err:
        create_evaluator(name, **options)
    assert option in str(err.value) and "\n" not in str(err.value)


def test_linear_val_split_needs_both_parts():
    with pytest.raises(UserError, match="4 labelled images gives 0 validation and 4 fit"):
        create_evaluator("linear-val").evaluate(Flatten(), make_task(), 0.01, 0, CPU)


def old_linear(task, fraction, seed, steps, l2):
    """``linear.py``'s algorithm before the L-BFGS fit was factored out, verbatim."""
    idx = torch.tensor(labelled_subset(len(task.train_labels), fraction, seed))
    x_train = extract_features(Flatten(), task.normalized("train")[idx], CPU)
    y_train = task.train_labels[idx]
    x_test = extract_features(Flatten(), task.normalized("test"), CPU)
    torch.manual_seed(seed)
    clf = nn.Linear(x_train.shape[1], task.num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=20)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x_train), y_train)
        loss = loss + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    with torch.no_grad():
        pred = clf(x_test).argmax(1)
    return {"accuracy": (pred == task.test_labels).float().mean().item() * 100,
            "labelled": float(len(idx))}


@pytest.mark.parametrize("l2", [1e-3, 0.5])
def test_linear_unchanged_by_refactor(l2):
    task = make_task(classes=4, separable=False, seed=5)
    new = create_evaluator("linear", steps=4, l2=l2).evaluate(Flatten(), task, 0.3, 7, CPU)
    old = old_linear(task, 0.3, 7, 4, l2)
    assert new["accuracy"] == pytest.approx(old["accuracy"])
    assert new["labelled"] == old["labelled"]


def test_mean_per_class_accuracy_on_unbalanced_labels():
    from mkdt_bench.evaluators.base import test_scores

    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 2])  # class 1 always wrong
    scores = test_scores(pred, labels)
    assert scores["accuracy"] == pytest.approx(90.0)
    assert scores["mean_per_class_accuracy"] == pytest.approx(100 * (1 + 0 + 1) / 3)
