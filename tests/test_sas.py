"""SAS (``docs/sas.md``): the greedy within a latent class, the reference's effective
ranking, the budget split over k-means latent classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import method_context

from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, create_method
from mkdt_bench.methods.sas import greedy_in_class, reference_in_class


def context(tmp_path, targets, budget, seed=0):
    n = len(targets)
    return method_context(torch.randn(n, 1, 2, 2), targets, tmp_path, scratch=tmp_path / "s",
                          budget=budget, seed=seed, source="toy", inputs_key="toy")


def duplicates_and_outliers() -> torch.Tensor:
    """Five identical vectors (0-4) and three near-identical ones at a right angle (5-7),
    turned slightly away (negative cosine with the first five: thresholded to 0)."""
    a = torch.tensor([[1.0, 0.0]]).expand(5, 2)
    d = torch.tensor([[-0.01, 1.0], [-0.02, 1.0], [-0.03, 1.0]])
    return F.normalize(torch.cat([a, d]).double(), dim=1)


def naive_greedy(unit: torch.Tensor, count: int, threshold: float) -> list[int]:
    """The §3 gain with the whole similarity matrix, for comparison."""
    sim = unit @ unit.T
    sim = torch.where(sim >= threshold, sim, torch.zeros_like(sim))
    chosen: list[int] = []
    for _ in range(count):
        gains = [float(sim[i].sum() - sim[chosen, i].sum()) if i not in chosen else -1e30
                 for i in range(len(unit))]
        chosen.append(max(range(len(unit)), key=lambda i: (gains[i], -i)))
    return chosen


def test_redundancy_term_trades_a_duplicate_for_a_new_direction():
    unit = duplicates_and_outliers()
    # gains of the duplicates fall 5, 4, 3, 2 as they are chosen; the others stay just
    # under 3, highest for the middle one (6), the most similar to its neighbours
    assert greedy_in_class(unit, 4, 0.0).tolist() == [0, 1, 2, 6]
    # the reference's penalty reads zeroed rows: the four largest sums, all duplicates,
    # ties towards the larger index as its max-heap does
    assert reference_in_class(unit, 4, 0.0).tolist() == [4, 3, 2, 1]


def test_greedy_matches_the_gain_computed_from_the_whole_matrix():
    g = torch.Generator().manual_seed(3)
    unit = F.normalize(torch.randn(40, 6, generator=g).double() + 0.5, dim=1)
    for threshold in (0.0, 0.3):
        assert greedy_in_class(unit, 12, threshold).tolist() == naive_greedy(unit, 12,
                                                                             threshold)
        sums = torch.where(unit @ unit.T >= threshold, unit @ unit.T, 0.0).sum(1)
        ranked = sorted(range(40), key=lambda i: (-float(sums[i]), -i))[:12]
        assert reference_in_class(unit, 12, threshold).tolist() == ranked


def test_budget_split_over_latent_classes_in_proportion(tmp_path):
    g = torch.Generator().manual_seed(0)
    big = torch.randn(60, 4, generator=g) * 0.1 + torch.tensor([10.0, 0, 0, 0])
    small = torch.randn(20, 4, generator=g) * 0.1 + torch.tensor([0, 10.0, 0, 0])
    x = torch.cat([big, small])
    out = create_method("sas", latent_classes=2).distill(context(tmp_path, x, 8))
    assert sorted(out.extra["class_counts"]) == [2, 6]
    assert sorted(out.extra["class_sizes"]) == [20, 60]
    idx = torch.tensor(out.extra["indices"])
    assert int((idx < 60).sum()) == 6 and len(set(idx.tolist())) == 8
    assert torch.equal(out.targets, x[idx]) and out.lr is None and out.method == "sas"


def test_images_and_targets_are_the_chosen_real_ones(tmp_path):
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    ctx = context(tmp_path, x, 10)
    out = create_method("sas", latent_classes=3).distill(ctx)
    idx = out.extra["indices"]
    assert out.images.shape == (10, 1, 2, 2) and out.targets.shape == (10, 8)
    assert torch.equal(out.images, ctx.images[idx]) and torch.equal(out.targets, x[idx])
    assert len(out.extra["latent_class"]) == 10 and sum(out.extra["class_counts"]) == 10


def test_deterministic_per_seed_and_label_free(tmp_path):
    x = torch.randn(80, 8, generator=torch.Generator().manual_seed(2))
    a = create_method("sas", latent_classes=4).distill(context(tmp_path, x, 12, seed=0))
    b = create_method("sas", latent_classes=4).distill(context(tmp_path, x, 12, seed=0))
    assert a.extra == b.extra
    assert not METHODS.get("sas").uses_labels and METHODS.get("sas").seeded


def test_one_latent_class_is_the_plain_greedy(tmp_path):
    unit = duplicates_and_outliers().float()
    out = create_method("sas", latent_classes=1).distill(context(tmp_path, unit, 4))
    assert out.extra["indices"] == [0, 1, 2, 6]
    ref = create_method("sas", latent_classes=1, reference_objective=True)
    assert ref.distill(context(tmp_path, unit, 4)).extra["indices"] == [4, 3, 2, 1]


def test_bad_options_and_sizes_are_named(tmp_path):
    with pytest.raises(UserError, match="latent_classes=0"):
        create_method("sas", latent_classes=0)
    with pytest.raises(UserError, match=r"threshold=-0.1 must be a number in \[0, 1\]"):
        create_method("sas", threshold=-0.1)
    with pytest.raises(UserError, match="latent_classes=10 is larger than the 5 training"):
        create_method("sas").distill(context(tmp_path, torch.randn(5, 3), 2))
