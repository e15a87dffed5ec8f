"""``dm-ssl``: distribution matching of random-network embeddings per latent class, with
the teacher's targets of the learned images; resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mkdt_bench.methods.dm_ssl as dm
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, MethodContext, create_method
from mkdt_bench.models import create_model

TINY = dict(width=8, clusters=2, iterations=6, real_batch=8, snapshot_every=2, lr_img=1.0)


def tiny_teacher() -> torch.nn.Module:
    torch.manual_seed(7)
    return create_model("convnet", in_channels=3, image_size=8, out_dim=1, width=2,
                        depth=2).eval()


def tiny_context(root: Path, scratch: Path, seed: int = 0, budget: int = 6,
                 teacher: bool = True) -> MethodContext:
    """40 random 3x8x8 images; targets are the tiny teacher's 8-d features."""
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        targets = tiny_teacher().features(images)
    return MethodContext(source="tiny", images=images, targets=targets, mean=(0.5, 0.4, 0.3),
                         std=(0.2, 0.25, 0.3), budget=budget, seed=seed,
                         device=torch.device("cpu"), cache=ArtifactCache(root),
                         inputs_key="tiny", scratch=scratch,
                         load_teacher=tiny_teacher if teacher else None)


def test_registered_with_dm_defaults():
    cfg = create_method("dm-ssl").config
    assert (cfg["iterations"], cfg["lr_img"], cfg["momentum"], cfg["real_batch"]) == \
        (20_000, 1.0, 0.5, 256)
    assert cfg["augment"] == "crop_flip" and not METHODS.get("dm-ssl").uses_labels


def test_learns_images_and_relabels_them_with_the_teacher(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "a")
    out = create_method("dm-ssl", **TINY).distill(ctx)
    idx = out.extra["indices"]
    assert idx == torch.randperm(40, generator=torch.Generator().manual_seed(0))[:6].tolist()
    assert out.images.shape == (6, 3, 8, 8) and out.targets.shape == (6, 8) and out.lr is None
    assert not torch.equal(out.images, ctx.images[idx])  # the images moved
    with torch.no_grad():
        assert torch.allclose(out.targets, tiny_teacher().features(out.images), atol=1e-6)
    assert out.extra["iterations"] == 6 and len(out.extra["loss_curve"]) == 3
    assert len(out.extra["cluster"]) == 6 and set(out.extra["cluster"]) <= {0, 1}
    again = create_method("dm-ssl", **TINY).distill(tiny_context(tmp_path, tmp_path / "b"))
    assert torch.equal(out.images, again.images) and torch.equal(out.targets, again.targets)


def test_the_loss_is_dms_mean_embedding_distance(tmp_path, monkeypatch):
    """One step without augmentation, every real image of each cluster in the batch (the
    mean does not depend on their order): the loss is sum_c ||mean f(real_c) - mean
    f(syn_c)||² under the step's network."""
    ctx = tiny_context(tmp_path, tmp_path / "s")
    method = create_method("dm-ssl", **{**TINY, "augment": "none", "real_batch": 40,
                                        "iterations": 1})
    nets = []
    build = dm.DistributionMatchingSSL._network

    def recording(self, ctx, seed):
        nets.append(build(self, ctx, seed))
        return nets[-1]

    monkeypatch.setattr(dm.DistributionMatchingSSL, "_network", recording)
    out = method.distill(ctx)
    clusters = method._clusters(ctx)
    syn = ctx.images[out.extra["indices"]]
    syn_clusters = clusters[out.extra["indices"]]
    with torch.no_grad():
        expected = sum((nets[0].features(ctx.images[clusters == c]).mean(0)
                        - nets[0].features(syn[syn_clusters == c]).mean(0)).pow(2).sum()
                       for c in syn_clusters.unique())
    assert out.extra["loss_curve"][0] == pytest.approx(float(expected), rel=1e-5)


def test_matching_lowers_the_distance_under_unseen_networks(tmp_path):
    """On digits, the learned images' mean embedding is closer to the real one than the
    initial images' under networks the distillation never drew."""
    digits = load_dataset("digits", cache_dir=tmp_path / "cache")
    images = digits.normalized("train")[:300]
    ctx = MethodContext(source="digits", images=images, targets=torch.zeros(300, 4),
                        mean=digits.mean, std=digits.std, budget=20, seed=0,
                        device=torch.device("cpu"), cache=ArtifactCache(tmp_path),
                        inputs_key="d", scratch=tmp_path / "s",
                        load_teacher=lambda: create_model("convnet", in_channels=1,
                                                          image_size=8, out_dim=1, width=4))
    method = create_method("dm-ssl", width=16, clusters=1, iterations=150, real_batch=64,
                           snapshot_every=50, lr_img=100.0, augment="none")
    out = method.distill(ctx)

    def distance(x):
        total = 0.0
        for seed in range(10**6, 10**6 + 10):
            net = method._network(ctx, seed)
            with torch.no_grad():
                total += float((net.features(images).mean(0) - net.features(x).mean(0))
                               .pow(2).sum())
        return total

    assert distance(out.images) < 0.8 * distance(images[out.extra["indices"]])


@pytest.mark.parametrize("augment", ["crop_flip", "none"])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch, augment):
    method = create_method("dm-ssl", **{**TINY, "augment": augment})
    step = dm.DistributionMatchingSSL._step
    calls = {"n": 0}

    def dying(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # after the snapshot of iteration 2, before that of iteration 4
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(dm.DistributionMatchingSSL, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        method.distill(tiny_context(tmp_path, tmp_path / "killed"))
    snap = torch.load(tmp_path / "killed" / dm.SNAPSHOT_FILE, weights_only=True)
    assert snap["iteration"] == 2
    monkeypatch.setattr(dm.DistributionMatchingSSL, "_step", step)
    torch.manual_seed(999)  # the global generator state must not matter
    resumed = method.distill(tiny_context(tmp_path, tmp_path / "killed"))
    whole = method.distill(tiny_context(tmp_path, tmp_path / "whole"))
    assert torch.equal(resumed.images, whole.images)
    assert torch.equal(resumed.targets, whole.targets) and resumed.extra == whole.extra


def test_crop_padding_is_an_eighth_of_the_side():
    assert [dm.crop_padding(s) for s in (8, 32, 64, 4)] == [1, 4, 8, 1]


def test_bad_options_and_inputs_are_named(tmp_path):
    with pytest.raises(UserError, match=r"iterations=0 must be an int in \[1, inf\)"):
        create_method("dm-ssl", iterations=0)
    with pytest.raises(UserError, match=r"lr_img=0.0 must be a number in \(0, inf\)"):
        create_method("dm-ssl", lr_img=0.0)
    with pytest.raises(UserError, match="augment='dsa' is not allowed"):
        create_method("dm-ssl", augment="dsa")
    with pytest.raises(UserError, match="needs the teacher"):
        create_method("dm-ssl", **TINY).distill(tiny_context(tmp_path, tmp_path / "x",
                                                             teacher=False))
    with pytest.raises(UserError, match="clusters=50 is larger than the 40 training"):
        create_method("dm-ssl", **{**TINY, "clusters": 50}).distill(
            tiny_context(tmp_path, tmp_path / "y"))


def test_divergence_names_the_iteration_and_lr(tmp_path):
    method = create_method("dm-ssl", **{**TINY, "lr_img": 1e30, "augment": "none"})
    with pytest.raises(UserError, match=r"dm-ssl diverged at iteration \d+.*lower lr_img"):
        method.distill(tiny_context(tmp_path, tmp_path / "d"))
