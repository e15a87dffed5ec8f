"""Every hot path on a CUDA stand-in (:mod:`mkdt_bench.standin`): the device checks of a GPU
on a machine without one.

The stand-ins are ``meta`` tensors and ``FakeTensorMode`` tensors on ``cuda``; the latter
cannot run a backward pass without a CUDA driver, so paths with one run on ``meta`` only
(its kernels apply the same cross-device checks). Device values are placeholders: these
tests check placement, what comes back to the host, and how often the host waits for the
device (``host_reads``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import CPU, method_context, tiny_teacher

import mkdt_bench.methods._experts as experts
import mkdt_bench.methods._highloss as highloss
import mkdt_bench.methods._unroll as unroll
import mkdt_bench.methods.krrst as kr
import mkdt_bench.methods.mkdt as mk
from mkdt_bench import device as dev
from mkdt_bench import safeload
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.evaluators import create_evaluator
from mkdt_bench.memory import PeakMemory
from mkdt_bench.methods import MethodContext, create_method
from mkdt_bench.models import create_model
from mkdt_bench.pipeline.executors import task_device
from mkdt_bench.pretraining import PRETRAIN_DEFAULTS
from mkdt_bench.pretraining.train import pretrain_encoder
from mkdt_bench.standin import device_standin
from mkdt_bench.teachers import TEACHER_DEFAULTS
from mkdt_bench.teachers.encoder import build_teacher, encode
from mkdt_bench.teachers.ssl import train_teacher

pytestmark = pytest.mark.filterwarnings(  # loading a state into meta modules copies nothing
    "ignore:for .*copying from a non-meta parameter:UserWarning")

FORWARD = ["meta", "cuda"]  # stand-ins of paths without a backward pass
BACKWARD = ["meta"]  # paths with one (fake CUDA tensors cannot run it without a driver)

MKDT = dict(width=8, num_experts=2, train_epochs=2, expert_batch=8, expert_epochs=1, iterations=4,
            syn_steps=3, batch_syn=4, eval_it=2, lr_img=10.0)
KRRST = dict(width=8, pool_size=2, online_iterations=3, outer_steps=4, real_batch=16,
             snapshot_every=2, outer_lr=1e-2)


@pytest.fixture
def standin(request):
    with device_standin(request.param) as s:
        yield s


@pytest.fixture
def restore_backends():
    """The CPU's settings again after a test that configures the process."""
    yield
    dev.configure(CPU, "default", False)


def mkdt_context(root: Path, device: torch.device = CPU) -> MethodContext:
    """24 random 1x8x8 images with random 6-d targets."""
    g = torch.Generator().manual_seed(123)
    images, targets = torch.randn(24, 1, 8, 8, generator=g), torch.randn(24, 6, generator=g)
    return method_context(images, targets, root / "cache", scratch=root / "scratch",
                          device=device)


def krrst_context(root: Path, device: torch.device = CPU) -> MethodContext:
    """40 random 3x8x8 images; targets are the tiny teacher's 8-d features."""
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        targets = tiny_teacher().features(images)
    return method_context(images, targets, root / "cache", scratch=root / "scratch",
                          device=device, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                          load_teacher=lambda: tiny_teacher(device=device))


# --------------------------------------------------------------------------- the stand-in


@pytest.mark.parametrize("standin", FORWARD, indirect=True)
def test_standin_refuses_what_a_gpu_refuses(standin):
    x = torch.randn(4, 3).to(standin.device)
    index = torch.randperm(4, generator=torch.Generator().manual_seed(0))  # a real CPU tensor
    assert torch.equal(index, torch.randperm(4, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(RuntimeError, match="same device"):
        torch.zeros_like(x).index_add_(0, index, x)
    with pytest.raises(RuntimeError, match="device"):
        x + torch.ones(4, 3)
    assert x[index].device == standin.device  # a CPU index of a device tensor is allowed
    reads = standin.host_reads
    assert x.sum().item() == 1.0 and torch.equal(x.cpu(), torch.ones(4, 3))
    assert standin.host_reads == reads + 2


# --------------------------------------------------------------------------- MKDT


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
@pytest.mark.parametrize("mode", ["full", "checkpoint"])
def test_meta_step_on_the_device(standin, mode):
    """Issue 18 crash 1: the checkpointed backward added CPU index batches into device
    gradients (``index_add_``); batches from the CPU generator are moved first."""
    device = standin.device
    torch.manual_seed(0)
    net = unroll.FlatNet(create_model("convnet", in_channels=1, image_size=8, out_dim=6,
                                      width=8).to(device))
    start = net.flatten(net.module)
    images = torch.randn(10, 1, 8, 8).to(device).requires_grad_(True)
    targets = torch.randn(10, 6).to(device).requires_grad_(True)
    lr = torch.tensor(0.1).to(device).requires_grad_(True)
    batches = unroll.syn_batches(10, 4, 3, torch.Generator().manual_seed(1))  # on the CPU
    reads = standin.host_reads
    loss, backward = unroll.meta_step(net, start, start + 0.05, images, targets, lr, batches,
                                      mode)
    backward()
    assert standin.host_reads == reads  # nothing waits for the device
    assert loss.device == device and loss.shape == ()
    for leaf in (images, targets, lr):
        assert leaf.grad.device == device and leaf.grad.shape == leaf.shape


def test_syn_batches_move_in_one_copy_and_keep_the_cpu_choices():
    cpu = unroll.syn_batches(10, 4, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(
        cpu, unroll.syn_batches(10, 4, 5, torch.Generator().manual_seed(3), CPU)))
    with device_standin("meta") as standin:
        moved = unroll.syn_batches(10, 4, 5, torch.Generator().manual_seed(3), standin.device)
    assert [b.device.type for b in moved] == ["meta"] * 5
    assert [len(b) for b in moved] == [len(b) for b in cpu]


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
@pytest.mark.parametrize("mode", ["full", "checkpoint"])
def test_mkdt_distills_on_the_device(tmp_path, standin, mode):
    """Experts, high-loss scores and the iterations of both unroll modes, end to end."""
    ctx = mkdt_context(tmp_path, standin.device)
    method = create_method("mkdt", **MKDT, unroll=mode)
    out = method.distill(ctx)
    assert out.images.device == CPU and out.images.shape == (6, 1, 8, 8)
    assert out.targets.shape == (6, 6) and out.extra["unroll"] == mode
    assert out.extra["iterations"] == 4 and len(out.extra["loss_curve"]) == 2
    for path in experts.ensure_experts(ctx, experts.expert_config(method.config)):
        trajectory = torch.load(path, weights_only=True)  # stored on the host
        assert trajectory.device == CPU and trajectory.shape[0] == 3


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
def test_mkdt_iteration_reads_nothing_back(tmp_path, standin):
    """An iteration leaves its loss and checks on the device (old: 4 host reads each)."""
    ctx = mkdt_context(tmp_path, standin.device)
    method = create_method("mkdt", **MKDT, unroll="checkpoint")
    cfg = experts.expert_config(method.config)
    trajectories = experts.load_trajectories(experts.ensure_experts(ctx, cfg))
    net = unroll.FlatNet(experts.build_student(cfg, ctx.images, 6, 0).to(standin.device))
    state = method._initial_state(ctx, cfg, trajectories)
    reads = standin.host_reads
    records = [method._step(ctx, net, "checkpoint", trajectories, state) for _ in range(3)]
    assert standin.host_reads == reads
    assert all(r.device == standin.device for step in records for r in step)


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
def test_expert_training_on_the_device(standin):
    """Trajectories come back to the host; a step reads nothing back (old: 2 per step),
    an epoch its losses and its snapshot."""
    cfg = dict(experts.EXPERT_DEFAULTS, width=8, num_experts=2, train_epochs=2,
               expert_batch=8)
    g = torch.Generator().manual_seed(0)
    images, targets = torch.randn(24, 1, 8, 8, generator=g), torch.randn(24, 6, generator=g)
    reads = standin.host_reads
    one = experts.train_expert(cfg, 0, images, targets, standin.device)
    assert standin.host_reads - reads <= 1 + 2 * cfg["train_epochs"]
    grouped = experts.train_experts(cfg, [0, 1], images, targets, standin.device)
    for trajectory in (one, *grouped):
        assert trajectory.device == CPU and trajectory.shape == one.shape == (3, one.shape[1])


@pytest.mark.parametrize("standin", FORWARD, indirect=True)
def test_high_loss_scores_on_the_device(tmp_path, standin):
    cpu = mkdt_context(tmp_path)
    cfg = experts.expert_config(create_method("mkdt", **MKDT).config)
    trajectories = experts.load_trajectories(experts.ensure_experts(cpu, cfg))
    ctx = replace(cpu, device=standin.device, cache=ArtifactCache(tmp_path / "device"))
    scores = highloss.high_loss_scores(ctx, cfg, trajectories)
    assert scores.device == CPU and scores.shape == (24,)


# --------------------------------------------------------------------------- KRR-ST


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
@pytest.mark.parametrize("views", [0, 2], ids=["faithful", "teacher_views"])
def test_krrst_distills_on_the_device(tmp_path, standin, views):
    out = create_method("krrst", **KRRST, teacher_views=views).distill(
        krrst_context(tmp_path, standin.device))
    assert out.images.device == CPU and out.images.shape == (6, 3, 8, 8)
    assert out.targets.shape == (6, 8) and out.extra["steps"] == 4


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
def test_krrst_step_reads_nothing_back(tmp_path, standin):
    """A step leaves its loss and checks on the device (old: about 3 host reads a step,
    plus a gather of the batch on the host)."""
    ctx = krrst_context(tmp_path, standin.device)
    method = create_method("krrst", **KRRST)
    state = method._initial_state(ctx)
    mean = std = torch.ones(1, 3, 1, 1).to(standin.device)
    images = dev.resident(ctx.images, standin.device)
    reads = standin.host_reads
    for _ in range(3):
        loss, finite = method._step(ctx, ctx.load_teacher(), state, mean, std, None, images)
        state.step += 1
    assert standin.host_reads == reads
    assert loss.device == finite.device == standin.device


# --------------------------------------------------------------------------- resume


def _interrupted(tmp_path: Path, name: str, monkeypatch) -> tuple[object, Path]:
    """A CPU run of ``name`` killed after its first snapshot (iteration / step 2)."""
    module, options, context = {"mkdt": (mk.MKDT, MKDT, mkdt_context),
                                "krrst": (kr.KRRST, KRRST, krrst_context)}[name]
    method = create_method(name, **options)
    step, calls = module._step, {"n": 0}

    def dying(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(module, "_step", dying)
    with pytest.raises(KeyboardInterrupt):
        method.distill(context(tmp_path))
    monkeypatch.setattr(module, "_step", step)
    snapshot = tmp_path / "scratch" / (mk.SNAPSHOT_FILE if name == "mkdt" else kr.SNAPSHOT_FILE)
    return method, snapshot


@pytest.mark.parametrize("name", ["mkdt", "krrst"])
def test_resume_finishes_on_the_device(tmp_path, monkeypatch, name):
    """Issue 18 crash 2: the snapshot was loaded onto the device, generator states
    included (``RNG state must be a torch.ByteTensor``); now it is loaded on the host."""
    method, snapshot = _interrupted(tmp_path, name, monkeypatch)
    assert torch.load(snapshot, weights_only=True)["images"].device == CPU
    context = mkdt_context if name == "mkdt" else krrst_context
    with device_standin("meta") as standin:
        out = method.distill(context(tmp_path, standin.device))
    assert out.images.device == CPU and len(out) == 6
    assert out.extra["iterations" if name == "mkdt" else "steps"] == 4
    assert len(out.extra["loss_curve"]) == 2


@pytest.mark.parametrize("standin", FORWARD, indirect=True)
@pytest.mark.parametrize("name", ["mkdt", "krrst"])
def test_resumed_state_is_placed_on_the_device(tmp_path, monkeypatch, standin, name):
    """Learned tensors, optimiser states and pool models on the device; generator states
    and KRR-ST's batch order on the host (they index host tensors)."""
    method, snapshot = _interrupted(tmp_path, name, monkeypatch)
    context = mkdt_context if name == "mkdt" else krrst_context
    state = method._resume(context(tmp_path, standin.device), safeload.load(snapshot))
    assert state.images.device == state.targets.device == standin.device
    assert state.generator.device == CPU
    optimizers = state.optimizers if name == "mkdt" else [state.optimizer]
    buffers = [t for opt in optimizers for s in opt.state.values() for k, t in s.items()
               if k != "step"]
    assert buffers and all(t.device == standin.device for t in buffers)
    if name == "krrst":
        assert state.batches.perm.device == CPU
        assert {p.device for m in state.pool.models for p in m.parameters()} == {
            standin.device}


# --------------------------------------------------------------------------- teacher


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
def test_teacher_training_on_the_device(tmp_path, digits, standin):
    cfg = dict(TEACHER_DEFAULTS, arch="convnet:width=8", epochs=1, batch_size=64,
               proj_dim=16, train_images=128)
    model = train_teacher(digits, cfg, tmp_path, standin.device)
    assert {p.device for p in model.parameters()} == {standin.device}
    state = torch.load(tmp_path / "teacher_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["generator"].device == CPU


@pytest.mark.parametrize("standin", FORWARD, indirect=True)
def test_representations_on_the_device(digits, standin):
    model = build_teacher("convnet:width=8", digits).to(standin.device)
    reps = encode(model, digits.normalized("train")[:100], standin.device, batch_size=32)
    assert reps.device == CPU and reps.shape == (100, model.feature_dim)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("standin", BACKWARD, indirect=True)
def test_pretraining_on_the_device(digits, standin):
    g = torch.Generator().manual_seed(0)
    distilled = DistilledSet(images=torch.randn(20, 1, 8, 8, generator=g),
                             targets=torch.randn(20, 4, generator=g), lr=0.05,
                             source="digits", mean=digits.mean, std=digits.std, method="x")
    cfg = dict(PRETRAIN_DEFAULTS, epochs=2, batch_size=8)
    model, steps = pretrain_encoder(distilled, "convnet:width=8", cfg, 0, standin.device)
    assert steps == 2 * 3 and {p.device for p in model.parameters()} == {standin.device}


EVALUATORS = [("linear", {"steps": 2}, FORWARD), ("linear-val", {"steps": 2}, FORWARD),
              ("knn", {"k": 3}, FORWARD), ("finetune", {"steps": 3, "augment": True}, BACKWARD)]


@pytest.mark.parametrize("name, options, kind", [
    (name, options, kind) for name, options, kinds in EVALUATORS for kind in kinds],
    ids=[f"{name}-{kind}" for name, _, kinds in EVALUATORS for kind in kinds])
def test_every_evaluator_on_the_device(digits, name, options, kind):
    with device_standin(kind) as standin:
        torch.manual_seed(0)
        encoder = create_model("convnet:width=8", in_channels=1, image_size=8,
                               out_dim=4).to(standin.device).eval()
        metrics = create_evaluator(name, **options).evaluate(encoder, digits, 0.2, 0,
                                                             standin.device)
    assert isinstance(metrics["accuracy"], float) and metrics["labelled"] > 0


# --------------------------------------------------------------------------- the whole grid


@pytest.mark.slow
@pytest.mark.usefixtures("restore_backends")
def test_grid_on_the_device(tmp_path):
    """Every stage of a grid (teacher, experts, MKDT, KRR-ST, pre-training, evaluators)
    on the stand-in, through the planner and the in-process executor."""
    from mkdt_bench import api
    from mkdt_bench.config import build_config

    overrides = ["teacher.arch='convnet:width=8'", "teacher.epochs=1", "teacher.proj_dim=16",
                 "teacher.batch_size=128", "teacher.train_images=256", "pretrain.epochs=1",
                 *[f"methods.mkdt.{k}={v}" for k, v in MKDT.items()],
                 "methods.mkdt.unroll='checkpoint'", "methods.mkdt.expert_batch=64",
                 "methods.highloss.width=8", "methods.highloss.num_experts=2",
                 "methods.highloss.train_epochs=2", "methods.highloss.expert_batch=64",
                 *[f"methods.krrst.{k}={v}" for k, v in KRRST.items()]]
    cfg = build_config(flags={"methods": ["random", "highloss", "mkdt", "krrst"],
                              "seeds": [0], "fractions": [0.2], "budget": "20",
                              "train_pool": 200, "evaluators": ["linear", "knn"]},
                       overrides=overrides)
    with device_standin("meta"):
        frame = api.run(cfg, cache_dir=tmp_path, executor="inprocess", threads=1,
                        device="meta", progress=False).frame
    assert set(frame["status"]) == {"ok"}, frame[["method", "error"]]
    assert set(frame["method"]) == {"random", "highloss", "mkdt", "krrst", "teacher"}
    assert set(frame["device"]) == {"meta"}


# --------------------------------------------------------------------------- devices


def _fake_gpus(monkeypatch, count: int, free: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))


def test_device_names_resolve_with_their_index(monkeypatch):
    if not torch.cuda.is_available():
        assert dev.resolve_device("auto") == CPU
        with pytest.raises(UserError, match="'cuda' was asked for but CUDA is not available"):
            dev.resolve_device("cuda")
    _fake_gpus(monkeypatch, 2)
    assert dev.resolve_device("auto") == dev.resolve_device("cuda") == torch.device("cuda", 0)
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError, match="has 2 CUDA device"):
        dev.resolve_device("cuda:2")
    with pytest.raises(UserError, match="'tpu' must be cpu, cuda, cuda:N or auto"):
        dev.check_device_name("tpu")


def test_ray_tasks_get_their_own_gpu():
    assert task_device("auto", 0) == "cpu" and task_device("auto", 4) == "cuda"
    assert task_device("cuda:0", 1) == task_device("cuda", 1) == "cuda"
    assert task_device("cpu", 4) == "cpu"
    with pytest.raises(UserError, match="cuda:1 with --executor ray.*cuda:0"):
        task_device("cuda:1", 4)
    with pytest.raises(UserError, match="has no GPU"):
        task_device("cuda", 0)


def test_auto_unroll_budgets_from_the_device(tmp_path, monkeypatch):
    """The paper's CIFAR setting (~43 GiB full graph): full on an 80 GB GPU, checkpoint on
    a 23 GB host or a 40 GB GPU; a stand-in device (memory unknown): checkpoint."""
    net = create_model("convnet", in_channels=3, image_size=32, out_dim=512, width=128)
    image = torch.zeros(1, 3, 32, 32)
    need = unroll.full_unroll_bytes(net, image, 256, 40)
    assert 40 * 2**30 < need < 46 * 2**30

    def mode(device: torch.device) -> str:
        return unroll.choose_unroll("auto", net, image, 256, 40, dev.unroll_budget_bytes(device))

    monkeypatch.setattr(dev, "physical_memory_bytes", lambda: 23 * 10**9)
    assert mode(CPU) == "checkpoint"
    monkeypatch.setattr(dev, "physical_memory_bytes", lambda: 200 * 10**9)
    assert mode(CPU) == "full"
    assert mode(torch.device("meta")) == "checkpoint"
    _fake_gpus(monkeypatch, 1, free=80 * 10**9)
    assert mode(torch.device("cuda", 0)) == "full"
    _fake_gpus(monkeypatch, 1, free=40 * 10**9)
    assert mode(torch.device("cuda", 0)) == "checkpoint"


def test_peak_memory_reads_the_current_device_and_nests(monkeypatch):
    """CUDA peaks are read on the unit's (current) device, and an inner stage's reset does
    not erase its parent's peak (old: read without a device; the parent saw the inner
    stage's peak only)."""
    mib = 2**20
    counter = {"peak": 0, "devices": set()}

    def max_allocated(device=None):
        counter["devices"].add(device)
        return counter["peak"]

    def reset(device=None):
        counter["devices"].add(device)
        counter["peak"] = 0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", max_allocated)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    with PeakMemory() as outer:
        counter["peak"] = 500 * mib
        with PeakMemory() as inner:
            counter["peak"] = 100 * mib
        counter["peak"] = max(counter["peak"], 50 * mib)
    assert outer.result()["peak_cuda_mib"] == 500.0
    assert inner.result()["peak_cuda_mib"] == 100.0
    assert counter["devices"] == {1}


@pytest.mark.usefixtures("restore_backends")
@pytest.mark.parametrize("precision, matmul, conv", [("default", "ieee", "tf32"),
                                                      ("fp32", "ieee", "ieee"),
                                                      ("tf32", "tf32", "tf32"),
                                                      ("bf16", "tf32", "tf32")])
def test_precision_and_determinism_settings(monkeypatch, precision, matmul, conv):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    dev.configure(torch.device("cuda"), precision, deterministic=False)
    seen = dev.settings(torch.device("cuda"), precision, False)
    assert (seen["matmul_fp32_precision"], seen["cudnn_conv_fp32_precision"]) == (matmul, conv)
    assert seen["deterministic_algorithms"] == seen["cudnn_deterministic"] == "False"
    dev.configure(torch.device("cuda"), precision, deterministic=True)
    seen = dev.settings(torch.device("cuda"), precision, True)
    assert seen["deterministic_algorithms"] == seen["cudnn_deterministic"] == "True"
    assert seen["cudnn_benchmark"] == "False" and seen["precision"] == precision
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == dev.CUBLAS_WORKSPACE
    dev.configure(CPU, precision, deterministic=False)  # the CPU is always deterministic
    assert torch.are_deterministic_algorithms_enabled()
    with pytest.raises(UserError, match="run.precision='fp16'"):
        dev.configure(CPU, "fp16")


def test_bf16_autocast_only_where_asked():
    with dev.autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    for precision in ("default", "fp32", "tf32"):
        with dev.autocast(CPU, precision):
            assert not torch.is_autocast_enabled("cpu")


# --------------------------------------------------------------------------- rows and flags


def test_device_defaults_to_auto_in_help_and_config(capsys):
    from mkdt_bench.cli import main
    from mkdt_bench.config import build_config

    assert build_config().to_dict()["run"]["device"] == "auto"
    for command in ("run", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "default auto" in " ".join(capsys.readouterr().out.split())


@pytest.mark.usefixtures("restore_backends")
def test_rows_record_the_resolved_device_and_the_settings(tmp_path):
    import json

    from mkdt_bench import api
    from mkdt_bench.config import build_config

    cfg = build_config(flags={"methods": ["none"], "seeds": [0], "fractions": [0.05],
                              "teacher_row": False},
                       overrides=["teacher.arch='convnet:width=8'", "teacher.epochs=1",
                                  "teacher.proj_dim=16", "teacher.batch_size=128",
                                  "teacher.train_images=256", "run.precision='tf32'"])
    frame = api.run(cfg, cache_dir=tmp_path, executor="inprocess", threads=1,
                    progress=False).frame
    resolved = str(dev.resolve_device("auto"))  # cpu here, cuda:0 on a GPU machine
    assert list(frame["device"]) == [resolved] and set(frame["status"]) == {"ok"}
    versions = json.loads(frame["versions"].iloc[0])
    assert versions["precision"] == "tf32" and versions["device_name"] != ""
    assert versions["matmul_fp32_precision"] == "tf32"
    assert {"cudnn_conv_fp32_precision", "cudnn_deterministic", "cudnn_benchmark",
            "deterministic_algorithms", "torch"} <= set(versions)
