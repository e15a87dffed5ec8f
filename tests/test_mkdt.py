"""MKDT and the high-loss baseline (spec ``mkdt.md`` §2-§4, §9) on tiny CPU problems."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import method_context
from torch.func import functional_call

import mkdt_bench.methods._experts as experts
import mkdt_bench.methods._highloss as highloss
import mkdt_bench.methods._unroll as unroll
import mkdt_bench.methods.mkdt as mk
from mkdt_bench.errors import UserError
from mkdt_bench.methods import METHODS, MethodContext, create_method
from mkdt_bench.methods.mkdt import SNAPSHOT_FILE
from mkdt_bench.models import create_model

EXPERTS = dict(width=8, num_experts=3, train_epochs=3, expert_batch=8)
TINY = dict(EXPERTS, iterations=6, syn_steps=3, batch_syn=4, eval_it=2, lr_img=10.0)


def tiny_context(root: Path, scratch: Path, seed: int = 0, n: int = 24, dim: int = 6,
                 budget: int = 6) -> MethodContext:
    """24 random 1x8x8 images with random 6-d targets (also pasted into the kill script)."""
    g = torch.Generator().manual_seed(123)
    images = torch.randn(n, 1, 8, 8, generator=g)
    targets = torch.randn(n, dim, generator=g)
    return method_context(images, targets, root, scratch=scratch, budget=budget, seed=seed)


def tiny_net(dim: int = 6, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnet", in_channels=1, image_size=8, out_dim=dim, width=width)


def test_registered():
    assert {"mkdt", "highloss"} <= set(METHODS.names())
    assert create_method("mkdt").config["iterations"] == 5000
    assert create_method("highloss").config == {k: create_method("mkdt").config[k]
                                                 for k in experts.EXPERT_DEFAULTS}


def test_bad_options():
    with pytest.raises(UserError, match="beyond train_epochs"):
        create_method("mkdt", train_epochs=3, max_start_epoch=3, expert_epochs=2)
    with pytest.raises(UserError, match="init"):
        create_method("mkdt", init="kmeans")
    with pytest.raises(UserError, match="num_experts"):
        create_method("highloss", num_experts=0)


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(10, 1, 8, 8, generator=g, requires_grad=True)
    targets = torch.randn(10, 6, generator=g, requires_grad=True)
    lr = torch.tensor(0.1, requires_grad=True)
    batches = unroll.syn_batches(10, 4, 4, g)
    return images, targets, lr, batches


def test_unrolled_loss_is_differentiable():
    model = tiny_net()
    net = unroll.FlatNet(model)
    start = net.flatten(model)
    target = start + 0.05 * torch.randn(net.num_params, generator=torch.Generator().manual_seed(1))
    images, targets, lr, batches = _problem()
    theta_n = unroll.unroll(net, start, images, targets, lr, batches)
    loss = unroll.matching_loss(theta_n, start, target)
    grads = torch.autograd.grad(loss, (images, targets, lr))
    assert torch.isfinite(loss)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def _plain_unroll(model, params, images, targets, lr, batches):
    """Obviously-correct reference: named parameters, autograd.grad per step."""
    params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    for idx in batches:
        loss = ((functional_call(model, params, (images[idx],)) - targets[idx]) ** 2).mean()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {name: p - lr * g for (name, p), g in zip(params.items(), grads)}
    return params


def test_functional_unroll_matches_plain_autograd():
    model = tiny_net()
    net = unroll.FlatNet(model)
    start_params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(2)
    target_params = {n: p.detach() + 0.05 * torch.randn(p.shape, generator=g)
                     for n, p in start_params.items()}
    images, targets, lr, batches = _problem()

    final = _plain_unroll(model, start_params, images, targets, lr, batches)
    num = sum(((final[n] - target_params[n]) ** 2).sum() for n in final)
    den = sum(((start_params[n].detach() - target_params[n]) ** 2).sum() for n in final)
    ref_loss = num / den
    ref_grads = torch.autograd.grad(ref_loss, (images, targets, lr))

    start = net.flatten(model)
    target = torch.cat([target_params[n].reshape(-1) for n in net.names])
    theta_n = unroll.unroll(net, start, images, targets, lr, batches)
    loss = unroll.matching_loss(theta_n, start, target)
    grads = torch.autograd.grad(loss, (images, targets, lr))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_syn_batches_pop_remainder_first():
    batches = unroll.syn_batches(10, 4, 5, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [2, 4, 4, 2, 4]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))


def test_expert_cycle_visits_every_expert_once_per_pass():
    cycle = unroll.ExpertCycle(5, torch.Generator().manual_seed(0))
    picks = [cycle.next() for _ in range(20)]
    passes = [picks[i:i + 5] for i in range(0, 20, 5)]
    assert all(sorted(p) == list(range(5)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    single = unroll.ExpertCycle(5, torch.Generator().manual_seed(0), single=True)
    assert len({single.next() for _ in range(12)}) == 1  # bug 5 compatibility


def test_experts_shapes_and_cache(tmp_path, monkeypatch):
    calls = []
    train = experts.train_expert

    def counting(cfg, index, *args):
        calls.append(index)
        return train(cfg, index, *args)

    monkeypatch.setattr(experts, "train_expert", counting)
    cfg = experts.expert_config(create_method("mkdt", **TINY).config)
    ctx = tiny_context(tmp_path, tmp_path / "s0")
    paths = experts.ensure_experts(ctx, cfg)
    assert calls == [0, 1, 2] and len(paths) == 3
    trajectories = experts.load_trajectories(paths)
    num_params = unroll.FlatNet(tiny_net()).num_params
    assert all(t.shape == (cfg["train_epochs"] + 1, num_params) for t in trajectories)
    assert not torch.equal(trajectories[0][0], trajectories[0][1])
    assert not torch.equal(trajectories[0][0], trajectories[1][0])
    # cached and independent of the run seed: no retraining for another seed or highloss
    assert experts.ensure_experts(tiny_context(tmp_path, tmp_path / "s1", seed=7), cfg) == paths
    create_method("highloss", **EXPERTS).distill(ctx)
    assert calls == [0, 1, 2]
    assert torch.equal(train(cfg, 1, ctx.images, ctx.targets, ctx.device), trajectories[1])


def test_high_loss_ordering(tmp_path):
    cfg = experts.expert_config(create_method("highloss", **EXPERTS).config)
    ctx = tiny_context(tmp_path, tmp_path / "s", budget=3)
    ctx.targets.zero_()
    ctx.targets[5] = 3.0
    ctx.targets[2] = 2.0
    ctx.targets[9] = -1.0
    net = unroll.FlatNet(tiny_net())
    bias = slice(net.num_params - 6, net.num_params)  # head.bias is the last parameter
    assert net.names[-1] == "head.bias"
    trajectories = []
    for b in (0.0, 0.5):  # all weights 0: every image's output is the head bias b
        snap = torch.zeros(cfg["train_epochs"] + 1, net.num_params)
        snap[:, bias] = b
        trajectories.append(snap)
    scores = highloss.high_loss_scores(ctx, cfg, trajectories)
    expected = sum(((b - ctx.targets) ** 2).mean(1) for b in (0.0, 0.5)) / 2
    torch.testing.assert_close(scores, expected)
    assert highloss.high_loss_indices(scores, 3).tolist() == [5, 2, 9]


def test_highloss_method(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "s")
    out = create_method("highloss", **EXPERTS).distill(ctx)
    idx = torch.tensor(out.extra["indices"])
    cfg = experts.expert_config(create_method("highloss", **EXPERTS).config)
    trajectories = experts.load_trajectories(experts.ensure_experts(ctx, cfg))
    scores = highloss.high_loss_scores(ctx, cfg, trajectories)
    assert out.lr is None and len(out) == ctx.budget
    assert torch.equal(idx, torch.argsort(scores, descending=True, stable=True)[: ctx.budget])
    assert torch.equal(out.images, ctx.images[idx]) and torch.equal(out.targets, ctx.targets[idx])


def test_highloss_and_mkdt_offer_the_same_expert_units():
    """The executor runs the experts first (sub-units); both methods name the same ones."""
    high = create_method("highloss", **EXPERTS).sub_units("inputs")
    mkdt = create_method("mkdt", **EXPERTS).sub_units("inputs")
    assert len(high) == EXPERTS.get("num_experts", 100)
    assert [(u.stage, u.key) for u in high] == [(u.stage, u.key) for u in mkdt]
    half = create_method("mkdt", **EXPERTS, expert_half=True).sub_units("inputs")
    assert {u.key for u in half}.isdisjoint(u.key for u in mkdt)


def test_mkdt_output_and_random_init(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "a")
    out = create_method("mkdt", **TINY).distill(ctx)
    assert out.images.shape == (6, 1, 8, 8) and out.targets.shape == (6, 6)
    assert isinstance(out.lr, float) and out.lr != 0.1
    assert out.extra["iterations"] == 6 and len(out.extra["loss_curve"]) == 3
    idx = out.extra["indices"]
    assert not torch.equal(out.images, ctx.images[idx])
    assert not torch.equal(out.targets, ctx.targets[idx])
    ctx_r = tiny_context(tmp_path, tmp_path / "b")
    rand = create_method("mkdt", **TINY, init="random").distill(ctx_r)
    assert rand.extra["indices"] == create_method("random").distill(ctx_r).extra["indices"]


SCRIPT = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[2]))
torch.use_deterministic_algorithms(sys.argv[3] == "1", warn_only=True)
sys.path.insert(0, {tests!r})
from conftest import method_context
from mkdt_bench.methods import MethodContext, create_method
import mkdt_bench.methods.mkdt as mk
{context}
save = mk.atomic_torch_save

def slow_save(obj, path):  # stall after the first snapshot past iteration 0: the kill lands here
    save(obj, path)
    if obj["iteration"] > 0:
        time.sleep(60)

mk.atomic_torch_save = slow_save
root = Path(sys.argv[1])
create_method("mkdt", **{opts}).distill(tiny_context(root, root / "scratch-killed"))
print("finished")
"""


def test_resume_after_kill_is_bit_identical(tmp_path):
    opts = dict(TINY, iterations=8)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), opts=repr(opts),
                                    context=inspect.getsource(tiny_context)))
    snapshot = tmp_path / "scratch-killed" / SNAPSHOT_FILE
    deterministic = "1" if torch.are_deterministic_algorithms_enabled() else "0"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path),
                             str(torch.get_num_threads()), deterministic],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline and proc.poll() is None:
            if snapshot.is_file() and torch.load(snapshot, weights_only=True)["iteration"] > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(snapshot, weights_only=True)["iteration"] == 2

    method = create_method("mkdt", **opts)
    resumed = method.distill(tiny_context(tmp_path, tmp_path / "scratch-killed"))
    whole = method.distill(tiny_context(tmp_path, tmp_path / "scratch-whole"))
    assert torch.equal(resumed.images, whole.images)
    assert torch.equal(resumed.targets, whole.targets)
    assert resumed.lr == whole.lr
    assert resumed.extra == whole.extra


def test_nan_guard_keeps_last_good_snapshot(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "s")
    with pytest.raises(UserError, match=r"iteration \d+.*lr_img \(now 1e\+30\)") as info:
        create_method("mkdt", **dict(TINY, lr_img=1e30, iterations=20)).distill(ctx)
    assert "\n" not in str(info.value)
    state = torch.load(ctx.scratch / SNAPSHOT_FILE, weights_only=True)
    failed = int(str(info.value).split("iteration ")[1].split(":")[0])
    assert state["iteration"] < failed
    assert torch.isfinite(state["images"]).all() and torch.isfinite(state["lr"])


def test_unroll_mse_is_the_kd_loss():
    model = tiny_net()
    net = unroll.FlatNet(model)
    x, y = torch.randn(4, 1, 8, 8), torch.randn(4, 6)
    torch.testing.assert_close(net.mse(net.flatten(model), x, y), F.mse_loss(model(x), y))


def test_unroll_modes_give_the_same_distilled_set(tmp_path):
    """Six iterations in both modes; float64, as tiny problems amplify rounding ~100x per
    iteration (float32 agrees to ~1e-7 after one iteration, see test_unroll.py)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = {mode: create_method("mkdt", **dict(TINY, syn_steps=5, unroll=mode))
               .distill(tiny_context(tmp_path, tmp_path / mode))
               for mode in ("full", "checkpoint")}
    finally:
        torch.set_default_dtype(default)
    full, ckpt = out["full"], out["checkpoint"]
    assert not torch.equal(full.images, tiny_context(tmp_path, tmp_path).images[
        full.extra["indices"]])  # the images moved: the comparison below is not vacuous
    assert full.images.dtype == torch.float64
    torch.testing.assert_close(ckpt.images, full.images, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ckpt.targets, full.targets, rtol=1e-7, atol=1e-9)
    assert ckpt.lr == pytest.approx(full.lr, rel=1e-9)
    assert ckpt.extra["loss_curve"] == pytest.approx(full.extra["loss_curve"], rel=1e-9)


def test_bad_unroll_options():
    with pytest.raises(UserError, match="unroll.*'checkpoint'"):
        create_method("mkdt", unroll="fast")
    with pytest.raises(UserError,
                       match=r"unroll_memory_gb=-1.0 must be a number in \[0, inf\) \(0 = from"):
        create_method("mkdt", unroll_memory_gb=-1.0)


def test_auto_unroll_follows_the_budget(tmp_path, monkeypatch):
    modes = []
    meta_step = mk.meta_step

    def recording(*args):
        modes.append(args[-1])
        return meta_step(*args)

    monkeypatch.setattr(mk, "meta_step", recording)
    opts = dict(TINY, iterations=1)
    create_method("mkdt", **opts).distill(tiny_context(tmp_path, tmp_path / "a"))
    create_method("mkdt", **opts, unroll_memory_gb=1e-6).distill(
        tiny_context(tmp_path, tmp_path / "b"))  # 1 KiB: less than 4 images x 3 steps
    assert modes == ["full", "checkpoint"]


def test_half_precision_snapshots(tmp_path):
    ctx = tiny_context(tmp_path, tmp_path / "s")
    method = create_method("mkdt", **dict(TINY, iterations=2), expert_half=True)
    out = method.distill(ctx)
    assert torch.isfinite(out.images).all() and out.lr != 0.1
    full_cfg = experts.expert_config(method.config)
    full = experts.load_trajectories(experts.ensure_experts(ctx, full_cfg))
    half = experts.load_trajectories(experts.ensure_experts(ctx, method._experts()))
    assert [u.key for u in method.sub_units("tiny-inputs")] == [
        experts.expert_key(method._experts(), i, "tiny-inputs") for i in range(3)]
    for h, f in zip(half, full):
        assert h.dtype == torch.float16 and f.dtype == torch.float32
        assert torch.equal(h, f.half())  # the same experts, rounded
