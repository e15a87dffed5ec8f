"""Experts trained several at a time equal those trained one by one (spec ``mkdt.md`` §2)."""

from __future__ import annotations

import pytest
import torch
from conftest import CPU, method_context

import mkdt_bench.methods._experts as experts
from mkdt_bench.errors import UserError

CFG = dict(experts.EXPERT_DEFAULTS, width=8, num_experts=3, train_epochs=3, expert_batch=10)


def _data():
    g = torch.Generator().manual_seed(123)
    return torch.randn(24, 1, 8, 8, generator=g), torch.randn(24, 6, generator=g)


@pytest.mark.parametrize("optimizer", [{}, {"expert_momentum": 0.0, "expert_wd": 0.0}])
def test_grouped_trajectories_equal_sequential(optimizer):
    cfg = {**CFG, **optimizer}
    images, targets = _data()
    grouped = experts.train_experts(cfg, [2, 0], images, targets, CPU)
    for index, trajectory in zip([2, 0], grouped):
        alone = experts.train_expert(cfg, index, images, targets, CPU)
        assert trajectory.shape == alone.shape == (4, alone.shape[1])
        assert torch.equal(trajectory[0], alone[0])  # own seed, own initialisation
        assert not torch.equal(alone[-1], alone[0])
        torch.testing.assert_close(trajectory, alone, rtol=1e-4, atol=1e-5)
        assert trajectory.untyped_storage().nbytes() == trajectory.nbytes  # saved alone


def test_grouped_cache_trains_only_missing(tmp_path, monkeypatch):
    images, targets = _data()
    ctx = method_context(images, targets, tmp_path, scratch=tmp_path / "s")
    experts.ensure_expert(ctx, CFG, 1)
    calls = []
    train = experts.train_experts

    def counting(cfg, indices, *args):
        calls.append(list(indices))
        return train(cfg, indices, *args)

    monkeypatch.setattr(experts, "train_experts", counting)
    paths = experts.ensure_experts(ctx, CFG, group=2)
    assert calls == [[0, 2]]
    assert experts.ensure_experts(ctx, CFG) == paths  # same keys as one-by-one training
    for index, trajectory in enumerate(experts.load_trajectories(paths)):
        sequential = experts.train_expert(CFG, index, images, targets, CPU)
        torch.testing.assert_close(trajectory, sequential, rtol=1e-4, atol=1e-5)


def test_grouped_divergence_names_the_expert():
    images, targets = _data()
    with pytest.raises(UserError, match=r"expert \d at epoch \d diverged.*expert_lr \(now 1e\+"):
        experts.train_experts({**CFG, "expert_lr": 1e30}, [0, 1], images, targets, CPU)
