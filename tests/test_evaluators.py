"""Pre-training and the L-BFGS linear probe."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import EVALUATORS, create_evaluator, linear
from mkdt_bench.evaluators.base import extract_features, labelled_subset
from mkdt_bench.models import create_model
from mkdt_bench.pretraining import PRETRAIN_DEFAULTS
from mkdt_bench.pretraining.train import pretrain_encoder

CPU = torch.device("cpu")


class Flatten(nn.Module):
    """An 'encoder' whose features are the raw pixels."""

    def features(self, x):
        return x.flatten(1)


def blobs(n_train=400, n_test=200, separable=True, seed=0):
    """Two-class 1x2x2 'images': class means far apart, or pure noise."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        shift = (labels * 120 + 60) if separable else torch.full((n,), 128)
        noise = torch.randint(-20, 21, (n, 1, 2, 2), generator=g)
        return (shift.view(-1, 1, 1, 1) + noise).clamp(0, 255).to(torch.uint8), labels

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    return ImageDataset("blobs", xtr, ytr, xte, yte, ["a", "b"], (0.5,), (0.25,))


def test_linear_registered():
    assert "linear" in EVALUATORS.names()


def test_linear_probe_separable_and_random():
    probe = create_evaluator("linear")
    good = probe.evaluate(Flatten(), blobs(), 0.1, 0, CPU)
    assert good["accuracy"] > 95 and good["labelled"] == 40
    chance = probe.evaluate(Flatten(), blobs(separable=False), 0.1, 0, CPU)
    assert 30 < chance["accuracy"] < 70


def test_linear_probe_deterministic():
    probe = create_evaluator("linear", steps=5)
    task = blobs(separable=False)
    assert probe.evaluate(Flatten(), task, 0.2, 3, CPU) == probe.evaluate(Flatten(), task, 0.2,
                                                                          3, CPU)


def test_labelled_subset():
    a = labelled_subset(1000, 0.05, seed=0)
    assert len(a) == 50 and len(set(a)) == 50
    assert a == labelled_subset(1000, 0.05, seed=0) != labelled_subset(1000, 0.05, seed=1)
    with pytest.raises(UserError, match="must be in"):
        labelled_subset(1000, 1.5, 0)
    with pytest.raises(UserError, match="selects no image"):
        labelled_subset(10, 0.01, 0)


def _distilled(n=64, lr=None):
    """Targets that are a fixed linear function of the images, so an encoder can fit them."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 8, 8, generator=g)
    targets = images.flatten(1) @ torch.randn(64, 16, generator=g) / 8
    return DistilledSet(images, targets, lr, "digits", (0.3,), (0.4,), "random")


def test_pretrain_fits_targets_and_is_seeded():
    ds = _distilled()
    cfg = dict(PRETRAIN_DEFAULTS, epochs=30, batch_size=32)
    model, steps = pretrain_encoder(ds, "convnet", cfg, seed=0, device=CPU)
    assert steps == 30 * 2
    start, _ = pretrain_encoder(ds, "convnet", dict(cfg, epochs=0), seed=0, device=CPU)
    with torch.no_grad():
        before = nn.functional.mse_loss(start(ds.images), ds.targets)
        after = nn.functional.mse_loss(model(ds.images), ds.targets)
    assert after < 0.8 * before
    again, _ = pretrain_encoder(ds, "convnet", cfg, seed=0, device=CPU)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_pretrain_uses_learned_lr():
    cfg = dict(PRETRAIN_DEFAULTS, epochs=1)
    ds = _distilled(lr=1e6)  # absurd learned lr: diverges, proving it is used
    with pytest.raises(UserError, match="lower pretrain.lr"):
        pretrain_encoder(ds, "convnet", dict(cfg, epochs=5), seed=0, device=CPU)
    model, steps = pretrain_encoder(ds, "convnet", dict(cfg, use_learned_lr=False), 0, CPU)
    assert steps == 1


def test_pretrain_empty_set_is_random_init():
    ds = _distilled(n=0)
    model, steps = pretrain_encoder(ds, "convnet", PRETRAIN_DEFAULTS, seed=0, device=CPU)
    assert steps == 0
    assert model.features(torch.randn(2, 1, 8, 8)).shape == (2, model.feature_dim)


def test_linear_probe_labelled_mode_train_reproduces_the_reference_encoding(monkeypatch):
    """``labelled_mode="train"`` encodes the labelled subset as MKDT's ``le_run`` does: a
    BatchNorm encoder in train mode, ``encode_batch`` images at a time (batch statistics;
    running statistics updated), then the test split in eval mode. The caller's encoder is
    left untouched; the default encodes both in eval mode."""
    torch.manual_seed(0)
    encoder = create_model("convnet:width=4,depth=1,norm=batchnorm", in_channels=1,
                           image_size=2, out_dim=3)
    with torch.no_grad():
        encoder.body[1].running_mean.fill_(5.0)  # far from the data's statistics
    before = copy.deepcopy(encoder.state_dict())
    fitted = []

    def capture(x, *args, **kwargs):
        fitted.append(x)
        return fit(x, *args, **kwargs)

    fit = linear.fit_linear_lbfgs
    monkeypatch.setattr(linear, "fit_linear_lbfgs", capture)
    task = blobs()
    create_evaluator("linear", labelled_mode="train", encode_batch=16).evaluate(
        encoder, task, 0.1, 0, CPU)
    create_evaluator("linear").evaluate(encoder, task, 0.1, 0, CPU)
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    images = task.normalized("train")[labelled_subset(len(task.train_labels), 0.1, 0)]
    reference = copy.deepcopy(encoder).train()
    with torch.no_grad():
        expected = torch.cat([reference.features(images[i:i + 16]) for i in range(0, 40, 16)])
    torch.testing.assert_close(fitted[0], expected)
    torch.testing.assert_close(fitted[1], extract_features(encoder, images, CPU))
    assert not torch.allclose(fitted[0], fitted[1], atol=1e-3)
    with pytest.raises(UserError, match="labelled_mode='test' is not allowed"):
        create_evaluator("linear", labelled_mode="test")
    with pytest.raises(UserError, match=r"encode_batch=0 must be an int in \[1, inf\)"):
        create_evaluator("linear", encode_batch=0)


def test_cells_of_one_encoder_encode_the_test_set_once(monkeypatch):
    """The 1 % and 5 % cells (and other evaluators) of one encoder reuse its test features;
    other weights, or another task object, encode again; the scores do not change."""
    from mkdt_bench.evaluators import base

    torch.manual_seed(0)
    encoder = create_model("convnet", in_channels=1, image_size=2, out_dim=4, width=4,
                           depth=1).eval()
    task = blobs(n_test=300)
    sizes = []
    features = encoder.features

    def counted(x):
        sizes.append(len(x))
        return features(x)

    monkeypatch.setattr(encoder, "features", counted)
    base._LAST_TEST_FEATURES.clear()
    scores = [create_evaluator(name).evaluate(encoder, task, fraction, 0, CPU)
              for name, fraction in (("linear", 0.1), ("linear", 0.2), ("knn", 0.1))]
    assert sizes.count(300) == 1 and sorted(sizes) == [40, 40, 80, 300]
    base._LAST_TEST_FEATURES.clear()
    assert create_evaluator("linear").evaluate(encoder, task, 0.2, 0, CPU) == scores[1]
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    create_evaluator("linear").evaluate(encoder, task, 0.2, 0, CPU)
    create_evaluator("linear").evaluate(encoder, blobs(n_test=300), 0.2, 0, CPU)
    assert sizes.count(300) == 4
