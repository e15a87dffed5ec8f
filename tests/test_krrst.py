"""KRR-ST (spec ``krrst.md``) on tiny CPU problems."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import method_context, tiny_teacher
from sklearn.linear_model import Ridge

import mkdt_bench.methods._teacher_views as tv
import mkdt_bench.methods.krrst as kr
from mkdt_bench.augment import apply_crop_flip, crop_flip, draw_crop_flip
from mkdt_bench.data.stats import KRRST_STATS, renormalize
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, MethodContext, create_method
from mkdt_bench.models import create_model

TINY = dict(width=8, pool_size=3, online_iterations=4, outer_steps=8, real_batch=16,
            snapshot_every=2, outer_lr=1e-2)


def tiny_context(root: Path, scratch: Path, seed: int = 0, budget: int = 6,
                 teacher: bool = True) -> MethodContext:
    """40 random 3x8x8 images; targets are the tiny teacher's 8-d features."""
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        targets = tiny_teacher().features(images)
    return method_context(images, targets, root, scratch=scratch, budget=budget, seed=seed,
                          mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                          load_teacher=tiny_teacher if teacher else None)


def test_registered_with_spec_defaults():
    cfg = create_method("krrst").config
    assert "krrst" in METHODS.names()
    assert (cfg["pool_size"], cfg["online_iterations"], cfg["outer_steps"]) == (10, 1000, 160_000)
    assert (cfg["outer_lr"], cfg["real_batch"], cfg["ridge"]) == (1e-4, 1024, 1e-6)
    assert (cfg["pool_lr"], cfg["pool_momentum"], cfg["pool_wd"]) == (0.1, 0.9, 1e-3)
    assert cfg["norm"] == "batchnorm" and not cfg["reference_counter"]
    # the pool net is KRR-ST's convnet_128_256_512_bn (krrst.md §7) unless width is set
    assert (cfg["width"], cfg["widths"], cfg["input_stats"]) == (0, "auto", "dataset")


def test_closed_form_matches_sklearn_ridge():
    g = torch.Generator().manual_seed(0)
    phi_s = kr.with_bias(torch.randn(30, 12, generator=g, dtype=torch.float64))
    phi_t = kr.with_bias(torch.randn(50, 12, generator=g, dtype=torch.float64))
    y_s = torch.randn(30, 5, generator=g, dtype=torch.float64)
    ridge = 1e-3
    lam = ridge * torch.trace(phi_s @ phi_s.T).item()
    # W* = argmin ||Φ_s W − Y_s||² + λ||W||² (the bias column regularised too, §2.2)
    expected = Ridge(alpha=lam, fit_intercept=False).fit(phi_s.numpy(), y_s.numpy())
    got = kr.krr_predict(phi_s, phi_t, y_s, ridge)
    torch.testing.assert_close(got, torch.from_numpy(expected.predict(phi_t.numpy())))


def test_closed_form_matches_least_squares_in_float32():
    g = torch.Generator().manual_seed(1)
    phi_s = kr.with_bias(torch.randn(20, 40, generator=g))  # N < D + 1: full-rank kernel
    phi_t = kr.with_bias(torch.randn(7, 40, generator=g))
    y_s = torch.randn(20, 3, generator=g)
    lam = 1e-6 * torch.trace(phi_s @ phi_s.T)
    w = torch.linalg.lstsq(torch.cat([phi_s, lam.sqrt() * torch.eye(41)]),
                           torch.cat([y_s, torch.zeros(41, 3)])).solution
    torch.testing.assert_close(kr.krr_predict(phi_s, phi_t, y_s, 1e-6), phi_t @ w,
                               rtol=1e-3, atol=1e-3)


def test_gradients_reach_images_and_targets():
    model = create_model("convnet", in_channels=3, image_size=8, out_dim=8, width=8,
                         norm="batchnorm").eval()
    g = torch.Generator().manual_seed(2)
    x_s = torch.randn(6, 3, 8, 8, generator=g, requires_grad=True)
    y_s = torch.randn(6, 8, generator=g, requires_grad=True)
    real = torch.randn(16, 3, 8, 8, generator=g)
    y_t = torch.randn(16, 8, generator=g)
    with torch.no_grad():
        phi_t = kr.with_bias(model.features(real))
    y_hat = kr.krr_predict(kr.with_bias(model.features(x_s)), phi_t, y_s, 1e-6)
    grads = torch.autograd.grad(torch.nn.functional.mse_loss(y_hat, y_t), [x_s, y_s])
    for grad in grads:
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def _counter_pool(reference: bool, generator: torch.Generator) -> kr.ModelPool:
    cfg = dict(pool_size=1, online_iterations=3, pool_lr=0.1, pool_momentum=0.9, pool_wd=1e-3,
               reference_counter=reference)

    def build(seed: int):
        torch.manual_seed(seed)
        return create_model("convnet", in_channels=3, image_size=8, out_dim=4, width=4)

    return kr.ModelPool(build, cfg, generator)


@pytest.mark.parametrize("reference", [False, True])
def test_pool_counter_rule(reference):
    pool = _counter_pool(reference, torch.Generator().manual_seed(0))
    x, y = torch.randn(5, 3, 8, 8), torch.randn(5, 4)
    pool.counters[0] = 1
    trained, counters, fresh = [], [], []
    for _ in range(9):
        before = pool.models[0]
        pool.update(0, x, y)
        trained.append(pool.since_init[0])
        counters.append(pool.counters[0])
        fresh.append(pool.models[0] is not before)
    if reference:  # §6.1: never reset, so every update after the first reset re-creates
        assert counters == [2, 3, 3, 3, 3, 3, 3, 3, 3]
        assert fresh == [False, False, True, True, True, True, True, True, True]
        assert trained == [1, 2, 0, 0, 0, 0, 0, 0, 0]
    else:  # §8.1: the counter restarts, so the new model is trained T steps again
        assert counters == [2, 3, 0, 1, 2, 3, 0, 1, 2]
        assert fresh == [False, False, True, False, False, False, True, False, False]
        assert trained == [1, 2, 0, 1, 2, 3, 0, 1, 2]


def test_warm_up_draws_steps_below_t():
    pool = _counter_pool(False, torch.Generator().manual_seed(3))
    pool.warm_up(torch.randn(5, 3, 8, 8), torch.randn(5, 4))
    assert 1 <= pool.counters[0] <= 2 and pool.since_init[0] == pool.counters[0]


def test_crop_flip_keeps_shape_and_pads_with_raw_zero():
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.25)
    x = torch.randn(64, 3, 8, 8)
    out = crop_flip(x, mean, std, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pad_value = (-mean / std).view(3)
    border = torch.isclose(out, pad_value.view(1, 3, 1, 1).expand_as(out)).all(dim=1)
    assert border.any()  # some pixels are padding, at -mean/std
    again = crop_flip(x, mean, std, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_batched_crop_flip_equals_a_crop_and_flip_per_image():
    """The batch-wide gathers copy the values of the per-image crop and flip, bit for bit."""
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.full((1, 3, 1, 1), 0.25)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 8, 6, generator=g)  # not square: rows and columns differ
    offsets, flips = draw_crop_flip(64, 3, g)
    padded = torch.nn.functional.pad(x * std + mean, (3,) * 4)
    crops = [padded[i, :, dy:dy + 8, dx:dx + 6] for i, (dy, dx) in enumerate(offsets.tolist())]
    expected = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flips.tolist())])
    assert flips.any() and not flips.all()
    assert torch.equal(apply_crop_flip(x, mean, std, 3, offsets, flips),
                       (expected - mean) / std)


def test_distill_learns_and_is_deterministic(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "a")
    method = create_method("krrst", **TINY)
    out = method.distill(ctx)
    assert out.images.shape == (6, 3, 8, 8) and out.targets.shape == (6, 8)
    assert out.lr is None and out.method == "krrst"
    idx = out.extra["indices"]
    assert idx == torch.randperm(40, generator=torch.Generator().manual_seed(0))[:6].tolist()
    assert not torch.equal(out.images, ctx.images[idx])  # the images moved
    assert not torch.equal(out.targets, ctx.targets[idx])  # and the targets
    assert out.extra["steps"] == 8 and len(out.extra["loss_curve"]) == 4
    again = method.distill(tiny_context(tmp_path, tmp_path / "b"))
    assert torch.equal(out.images, again.images) and torch.equal(out.targets, again.targets)


@pytest.mark.parametrize("views", [0, 3], ids=["faithful", "teacher_views"])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch, views):
    method = create_method("krrst", **TINY, teacher_views=views)
    step = kr.KRRST._step
    calls = {"n": 0}

    def dying(self, *args):
        calls["n"] += 1
        if calls["n"] == 6:  # after the snapshot of step 4, before that of step 6
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(kr.KRRST, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        method.distill(tiny_context(tmp_path, tmp_path / "killed"))
    assert torch.load(tmp_path / "killed" / kr.SNAPSHOT_FILE, weights_only=True)["step"] == 4
    monkeypatch.setattr(kr.KRRST, "_step", step)
    torch.manual_seed(999)  # the global generator state must not matter
    resumed = method.distill(tiny_context(tmp_path, tmp_path / "killed"))
    whole = method.distill(tiny_context(tmp_path, tmp_path / "whole"))
    assert torch.equal(resumed.images, whole.images)
    assert torch.equal(resumed.targets, whole.targets)
    assert resumed.extra == whole.extra


def test_reference_input_space_stores_raw_pixels(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "r")
    out = create_method("krrst", **dict(TINY, outer_steps=1, outer_lr=1e-12,
                                        reference_input_space=True)).distill(ctx)
    mean, std = torch.tensor(ctx.mean).view(1, 3, 1, 1), torch.tensor(ctx.std).view(1, 3, 1, 1)
    raw = ctx.images[out.extra["indices"]] * std + mean
    torch.testing.assert_close(out.images, raw, rtol=0, atol=1e-6)
    assert out.mean == (0.0,) * 3 and out.std == (1.0,) * 3
    assert out.extra["input_space"] == "raw"


def test_reference_counter_mostly_untrained(tmp_path):
    opts = dict(TINY, online_iterations=2, outer_steps=30, snapshot_every=30)
    ref = create_method("krrst", **opts, reference_counter=True).distill(
        tiny_context(tmp_path, tmp_path / "ref"))
    fixed = create_method("krrst", **opts).distill(tiny_context(tmp_path, tmp_path / "fix"))
    assert ref.extra["untrained_step_fraction"] > 0.6
    assert fixed.extra["untrained_step_fraction"] < 0.5


def test_bad_sizes_and_options(tmp_path):
    with pytest.raises(UserError, match="real_batch=64 is larger than the 40 training images"):
        create_method("krrst", **dict(TINY, real_batch=64)).distill(
            tiny_context(tmp_path, tmp_path / "x"))
    with pytest.raises(UserError, match=r"pool_size=0 must be an int in \[1, inf\)"):
        create_method("krrst", pool_size=0)
    with pytest.raises(UserError, match="online_iterations=1"):
        create_method("krrst", online_iterations=1)
    with pytest.raises(UserError, match="outer_optimizer"):
        create_method("krrst", outer_optimizer="lbfgs")
    with pytest.raises(UserError, match="needs the teacher"):
        create_method("krrst", **TINY).distill(
            tiny_context(tmp_path, tmp_path / "y", teacher=False))


def test_divergence_names_the_step_and_lr(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "d")
    with pytest.raises(UserError, match=r"krrst diverged at outer step \d+.*outer_lr") as info:
        create_method("krrst", **dict(TINY, outer_lr=1e38, outer_optimizer="sgd",
                                      outer_steps=40)).distill(ctx)
    assert "\n" not in str(info.value)


def test_channels_last_teacher_is_a_copy_with_equal_results(tmp_path, monkeypatch):
    """float64: Adam amplifies float32 rounding differences over the 8 tiny steps."""
    layouts = set()
    step = kr.KRRST._step

    def recording(self, ctx, teacher, *args):
        weight = next(p for p in teacher.parameters() if p.dim() == 4)
        layouts.add((self.config["teacher_channels_last"],
                     weight.is_contiguous(memory_format=torch.channels_last)))
        return step(self, ctx, teacher, *args)

    monkeypatch.setattr(kr.KRRST, "_step", recording)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        shared = tiny_teacher()
        out = {}
        for flag in (True, False):
            ctx = tiny_context(tmp_path, tmp_path / str(flag))
            ctx.load_teacher = lambda: shared
            out[flag] = create_method("krrst", **TINY, teacher_channels_last=flag).distill(ctx)
    finally:
        torch.set_default_dtype(default)
    assert all(p.is_contiguous() for p in shared.parameters())  # the shared one untouched
    assert layouts == {(True, True), (False, False)}
    assert out[True].images.dtype == torch.float64
    assert not torch.equal(out[True].images, tiny_context(tmp_path, tmp_path).images[
        out[True].extra["indices"]].double())
    torch.testing.assert_close(out[True].images, out[False].images, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(out[True].targets, out[False].targets, rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- teacher_views (opt-in)

VIEWS = dict(TINY, teacher_views=3)


def test_teacher_views_zero_is_the_faithful_path(tmp_path):
    plain = create_method("krrst", **TINY).distill(tiny_context(tmp_path, tmp_path / "a"))
    off = create_method("krrst", **TINY, teacher_views=0).distill(
        tiny_context(tmp_path, tmp_path / "b"))
    assert torch.equal(plain.images, off.images) and torch.equal(plain.targets, off.targets)
    assert plain.extra == off.extra
    assert not (tmp_path / "artifacts" / tv.STAGE).exists()


def test_views_replay_crop_flip_and_store_the_teachers_targets(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "s")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (ctx.mean, ctx.std))
    offsets, flips = draw_crop_flip(40, 4, torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        apply_crop_flip(ctx.images, mean, std, 4, offsets.to(torch.uint8), flips),
        crop_flip(ctx.images, mean, std, 4, torch.Generator().manual_seed(5)), rtol=0, atol=0)
    create_method("krrst", **VIEWS).distill(ctx)
    (manifest,) = (tmp_path / "artifacts" / tv.STAGE).glob("*/manifest.json")
    stored = torch.load(manifest.parent / tv.VIEWS_FILE, weights_only=True)
    assert stored["targets"].shape == (3, 40, 8) and stored["offsets"].dtype == torch.uint8
    assert len(set(stored["offsets"].flatten().tolist())) > 1 and stored["flips"].any()
    teacher = tiny_teacher()
    for v in range(3):
        real = apply_crop_flip(ctx.images, mean, std, 4, stored["offsets"][v],
                                  stored["flips"][v])
        assert not torch.allclose(real, ctx.images)
        with torch.no_grad():
            torch.testing.assert_close(stored["targets"][v], teacher.features(real))
    views = tv.TeacherViews(stored["offsets"], stored["flips"], stored["targets"], 4)
    real, y_t = views.batch(ctx.images, torch.arange(40), mean, std,
                            torch.Generator().manual_seed(0))
    with torch.no_grad():  # each image's rebuilt view goes with that view's target
        torch.testing.assert_close(y_t, teacher.features(real))


def test_views_artifact_is_shared_across_seeds_without_the_teacher(tmp_path):
    first = create_method("krrst", **VIEWS).distill(tiny_context(tmp_path, tmp_path / "a"))
    (manifest,) = (tmp_path / "artifacts" / tv.STAGE).glob("*/manifest.json")
    mtime = manifest.stat().st_mtime_ns

    def no_teacher() -> torch.nn.Module:
        raise AssertionError("the teacher was loaded despite the cached views")

    ctx = tiny_context(tmp_path, tmp_path / "b", seed=1)
    ctx.load_teacher = no_teacher
    second = create_method("krrst", **VIEWS).distill(ctx)
    assert manifest.stat().st_mtime_ns == mtime
    assert len(list((tmp_path / "artifacts" / tv.STAGE).glob("*/manifest.json"))) == 1
    assert first.extra["indices"] != second.extra["indices"]
    faithful = create_method("krrst", **TINY).distill(tiny_context(tmp_path, tmp_path / "c"))
    assert not torch.equal(first.images, faithful.images)  # other views, other targets


def test_bad_teacher_views(tmp_path):
    with pytest.raises(UserError,
                       match=r"teacher_views=-1 must be an int in \[0, inf\) \(0 = off\)") as info:
        create_method("krrst", teacher_views=-1)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="teacher_views=2 needs augment=True"):
        create_method("krrst", teacher_views=2, augment=False)


def test_pool_network_widths(tmp_path):
    """``width`` > 0: one width for every block; else ``widths``: "auto" = KRR-ST's network
    for the image size (krrst.md §7), or explicit per-block widths."""
    ctx = tiny_context(tmp_path, tmp_path / "w")

    def conv_widths(**options) -> list[int]:
        net = create_method("krrst", **options)._build(ctx, 0)
        return [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]

    assert conv_widths() == [128, 256, 512]
    assert kr.reference_widths(64) == [64, 128, 256, 512]
    assert conv_widths(width=8) == [8, 8, 8]
    assert conv_widths(widths="4-8") == [4, 8]
    with pytest.raises(UserError, match="width=16 and widths='8-8' both set"):
        create_method("krrst", width=16, widths="8-8")
    with pytest.raises(UserError, match="widths '8-x' must be positive integers"):
        create_method("krrst", widths="8-x")


def test_input_stats_krrst_normalises_with_krrst_statistics(tmp_path):
    """``input_stats="krrst"``: the teacher and the pool see the source's pixels normalised
    with KRR-ST's statistics (CIFAR-100 std 0.2673 ...), Y_s is the teacher's features of
    those, and the stored set holds the same pixels in the data set's statistics."""
    seen: list[torch.Tensor] = []

    def recording_teacher() -> torch.nn.Module:
        teacher = tiny_teacher()
        features = teacher.features

        def record(x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return features(x)

        teacher.features = record
        return teacher

    ctx = replace(tiny_context(tmp_path, tmp_path / "s"), source="cifar100",
                  load_teacher=recording_teacher)
    opts = dict(TINY, outer_steps=2, outer_lr=1e-12, augment=False)
    out = create_method("krrst", **opts, input_stats="krrst").distill(ctx)
    krrst = KRRST_STATS["cifar100"]
    pixels = renormalize(ctx.images, (ctx.mean, ctx.std), krrst)
    idx = out.extra["indices"]
    assert out.mean == ctx.mean and out.std == ctx.std
    torch.testing.assert_close(out.images, ctx.images[idx], rtol=0, atol=1e-6)
    assert out.extra["input_stats"] == {"mean": list(krrst[0]), "std": list(krrst[1])}
    with torch.no_grad():
        expected = tiny_teacher().features(pixels[idx])
    torch.testing.assert_close(out.targets, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out.targets, ctx.targets[idx], atol=1e-3)
    rows = {tuple(r.flatten().tolist()) for r in pixels}
    assert seen and all(tuple(r.flatten().tolist()) in rows for x in seen for r in x)
    seen.clear()
    default = create_method("krrst", **opts).distill(replace(ctx, scratch=tmp_path / "d"))
    assert default.extra["input_stats"]["std"] == list(ctx.std)
    torch.testing.assert_close(default.targets, ctx.targets[idx], rtol=0, atol=1e-5)
    with pytest.raises(UserError, match="no statistics for 'tiny'; known: cifar10, cifar100"):
        create_method("krrst", **opts, input_stats="krrst").distill(
            tiny_context(tmp_path, tmp_path / "t"))
