"""Conformance with the official code, stage by stage, on the committed golden fixtures.

``tests/reference/make_fixtures.py`` ran the official MKDT (``jiayini1119/MKDT@eaf200e``)
and KRR-ST (``db-Lee/selfsup_dd@4beb4b1``) code on small fixed inputs and stored inputs and
outputs in ``tests/reference/fixtures/`` (``fixtures.json``: commits, versions, settings).
Each test feeds the same inputs to this harness and compares.

Errors are ``max |harness − reference| / max |reference|`` per tensor (``common.relative_error``).
Tolerances are rounding bounds, stated per test. The float64 ones are 1e-12 or tighter:
unit roundoff is 1.1e-16, and the two codes differ only in summation order (e.g. ``pow(2).
sum()`` vs ``mse_loss(reduction="sum")``, ``K @ Φᵀ`` with or without a contiguous copy,
batch size 1 vs 8 in a convolution), which moves a reduction of n terms by at most ~n·u; a
wrong formula, momentum, batch order or sign moves results by 1e-3 and more. Where the
harness deviates from the reference on purpose, it runs in its reference-reproducing mode
and a second assertion shows that its default differs.

The fixtures were made with the torch version and CPU kernels (``cpu_capability``) in
``fixtures.json``. float32 stages are bit-identical there (asserted with ``torch.equal``
when both match, :data:`SAME_KERNELS`); other float32 kernels round differently and the
float32 tolerances below apply. ``test_seeded_initialisations_match_reference_seeding``
depends on torch's initialisation code and is skipped under another torch version.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from reference.common import (
    KRRST_MEAN,
    KRRST_STD,
    MKDT_MEAN,
    MKDT_STD,
    generated_state,
    linear_teacher_weight,
    load,
    load_settings,
    normalize,
    relative_error,
    resnet18_krrst_template,
    state_sha256,
)
from torch import Tensor, nn

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.evaluators import _lbfgs
from mkdt_bench.evaluators.base import extract_features, labelled_subset
from mkdt_bench.evaluators.linear import LinearProbe, train_mode_features
from mkdt_bench.methods import _experts as E
from mkdt_bench.methods import _highloss as H
from mkdt_bench.methods import _unroll as U
from mkdt_bench.methods.base import MethodContext
from mkdt_bench.methods.krrst import KRRST, ModelPool, outer_lr_at
from mkdt_bench.methods.mkdt import MKDT
from mkdt_bench.models import create_model
from mkdt_bench.pretraining import train as pretrain_module
from mkdt_bench.teachers.checkpoint import load_teacher_checkpoint
from mkdt_bench.teachers.encoder import encode

CPU = torch.device("cpu")
SETTINGS = load_settings()
CFG = SETTINGS["settings"]
#: The fixtures' torch version and CPU kernels: float32 results can be compared bit for bit.
SAME_KERNELS = (torch.__version__ == SETTINGS["versions"]["torch"]
                and torch.backends.cpu.get_cpu_capability()
                == SETTINGS["versions"]["cpu_capability"])


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the fixtures were made: the thread count changes the summation
    order of CPU kernels, so bit-for-bit comparisons hold only at the same count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def inputs() -> dict[str, Tensor]:
    return load("inputs.pt")


@pytest.fixture
def float64():
    """torch's default dtype float64 for the test (the reference ran under it)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def close(what: str, actual: Tensor, expected: Tensor, tol: float) -> float:
    """Assert the relative error is within ``tol``; print it (``pytest -s`` lists them)."""
    err = relative_error(actual, expected)
    print(f"conformance: {what}: {err:.3g} (tolerance {tol:g})")
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"
    return err


def differs(what: str, actual: Tensor, expected: Tensor, at_least: float = 1e-3) -> None:
    err = relative_error(actual, expected)
    assert err >= at_least, f"{what}: expected to differ from the reference, error {err:.3g}"


def flat_state(module: nn.Module) -> Tensor:
    """Parameters and buffers in state-dict order, as float64 (the fixtures' layout)."""
    return torch.cat([v.detach().double().reshape(-1) for v in module.state_dict().values()])


def load_flat_state(module: nn.Module, flat: Tensor) -> None:
    """Inverse of :func:`flat_state` (the reference's and this harness's state dicts list the
    same tensors in the same order under other names)."""
    state, offset = OrderedDict(), 0
    for key, value in module.state_dict().items():
        n = value.numel()
        state[key] = flat[offset:offset + n].view_as(value).to(value.dtype)
        offset += n
    assert offset == len(flat)
    module.load_state_dict(state)


def expert_config() -> dict:
    e = CFG["mkdt"]["experts"]
    return {"student": "convnet", "width": 32, "num_experts": len(e["clock_seeds"]),
            "train_epochs": e["train_epochs"], "expert_lr": e["lr_teacher"],
            "expert_momentum": e["mom"], "expert_wd": e["l2"], "expert_batch": e["batch_train"]}


def test_fixtures_come_from_the_pinned_reference_commits():
    refs = SETTINGS["references"]
    assert refs["mkdt"]["repository"] == "jiayini1119/MKDT"
    assert refs["mkdt"]["commit"].startswith("eaf200e")
    assert refs["krrst"]["repository"] == "db-Lee/selfsup_dd"
    assert refs["krrst"]["commit"].startswith("4beb4b1")
    assert sum(SETTINGS["files"].values()) < 5e6  # a few MB, committed


# ------------------------------------------------------------------------ MKDT: teacher


def test_teacher_representations_of_a_krrst_checkpoint(tmp_path, inputs):
    """``get_target_rep.py``: the KRR-ST-layout ResNet-18 checkpoint, eval mode, 512-d pooled
    features. float64: identical but for convolution summation order (reference batch 1,
    here 8): tolerance 1e-13. The pipeline's ``encode`` runs and stores float32: 1e-5
    (float32 rounding through 18 layers, 5e-7 measured)."""
    cfg = CFG["mkdt"]["teacher"]
    checkpoint = generated_state(resnet18_krrst_template(), cfg["checkpoint_seed"])
    assert state_sha256(checkpoint) == SETTINGS["results"]["mkdt"]["teacher"]["checkpoint_sha256"]
    torch.save(checkpoint, tmp_path / "barlow_twins_resnet18_cifar10.pt")
    u8 = inputs["images_u8"][:cfg["images"]]
    labels = torch.zeros(len(u8), dtype=torch.long)
    dataset = ImageDataset("fixture", u8, labels, u8, labels, ["x"], MKDT_MEAN, MKDT_STD)
    model = load_teacher_checkpoint(tmp_path / "barlow_twins_resnet18_cifar10.pt",
                                    "resnet18-teacher", dataset)
    expected = load("teacher.pt")["representations"]
    with torch.no_grad():
        reps64 = copy.deepcopy(model).double().features(normalize(u8, MKDT_MEAN, MKDT_STD,
                                                                  torch.float64))
    close("teacher features, float64", reps64, expected, 1e-13)
    reps32 = encode(model, dataset.normalized("train"), CPU)
    close("teacher encode(), float32", reps32, expected, 1e-5)


# -------------------------------------------------------------------- MKDT: KD experts


@pytest.fixture
def reference_initialisation(monkeypatch):
    """The harness's expert seeds and initialisations set to the reference experts'
    (``buffer.py`` seeds from the clock; the fixture pinned it to ``clock_seeds``)."""
    trajectories = load("experts.pt")["trajectories"]
    seeds = CFG["mkdt"]["experts"]["clock_seeds"]
    build = E.build_student

    def reference_init(cfg, images, out_dim, seed):
        model = build(cfg, images, out_dim, seed)
        init = trajectories[seeds.index(seed), 0].to(next(model.parameters()).dtype, copy=True)
        nn.utils.vector_to_parameters(init, model.parameters())
        return model

    monkeypatch.setattr(E, "expert_seed", lambda cfg, index: seeds[index])
    monkeypatch.setattr(E, "build_student", reference_init)
    return trajectories


def test_expert_epochs_match_buffer_py(inputs, reference_initialisation):
    """``buffer.py`` / ``utils.epoch``: same initialisation, same batch order (a generator
    seeded like the harness's) -> the same parameters after each of 2 epochs, in float32
    as the reference casts: bit-identical with the fixtures' kernels. With other float32
    kernels: tolerance 1e-3, float32 rounding amplified by 8 SGD steps (the same training
    in float64 differs from the reference's float32 by up to 3e-4 on other inputs); the
    fixture's weight decay (5e-3) and momentum move the parameters by more than 4e-3."""
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float32)
    for index in range(2):
        trajectory = E.train_expert(expert_config(), index, images, inputs["targets"], CPU)
        if SAME_KERNELS:
            assert torch.equal(trajectory, reference_initialisation[index]), f"expert {index}"
        close(f"expert {index}, float32", trajectory, reference_initialisation[index], 1e-3)


def test_vmapped_experts_match_buffer_py(inputs, reference_initialisation):
    """``train_experts`` (one vmap over both experts, grouped convolutions) against the
    reference: float32 summation order differs in the grouped convolutions, and 8 SGD
    steps with momentum amplify it: tolerance 1e-3 (float32; a wrong momentum or batch
    order gives > 1e-2). In float64 the same comparison against the one-by-one training
    (bit-identical to the reference above) is a rounding test: 1e-12."""
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float32)
    cfg = expert_config()
    vmapped = E.train_experts(cfg, [0, 1], images, inputs["targets"], CPU)
    for index in range(2):
        close(f"vmapped expert {index}, float32", vmapped[index],
              reference_initialisation[index], 1e-3)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        images64, targets64 = images.double(), inputs["targets"].double()
        vmapped64 = E.train_experts(cfg, [0, 1], images64, targets64, CPU)
        for index in range(2):
            one = E.train_expert(cfg, index, images64, targets64, CPU)
            close(f"vmapped expert {index}, float64", vmapped64[index], one, 1e-12)
            # the reference's own float32 rounding, amplified by 8 SGD steps
            close(f"expert {index}, float64 vs reference float32", one,
                  reference_initialisation[index], 1e-3)
    finally:
        torch.set_default_dtype(old)


def test_seeded_initialisations_match_reference_seeding(inputs):
    """Under the same seed, the harness's student initialisation is the reference's
    ``get_network`` one (same layers, same order of random draws). Depends on torch's
    init code, so only checked under the torch version that made the fixtures."""
    if torch.__version__ != SETTINGS["versions"]["torch"]:
        pytest.skip(f"fixtures made with torch {SETTINGS['versions']['torch']}")
    trajectories = load("experts.pt")["trajectories"]
    images = normalize(inputs["images_u8"][:2], MKDT_MEAN, MKDT_STD, torch.float32)
    for index, seed in enumerate(CFG["mkdt"]["experts"]["clock_seeds"]):
        model = E.build_student(expert_config(), images, CFG["mkdt"]["target_dim"], seed)
        assert torch.equal(U.FlatNet.flatten(model), trajectories[index, 0])


# ------------------------------------------------------------------ MKDT: high-loss init


def test_high_loss_scores_and_selection_match_sort_dset_py(tmp_path, inputs):
    """``sort_dset.py``: mean over experts of the per-image KD loss under the epoch-1
    snapshot. The reference sums float32 losses in float64, the harness too, but stores the
    scores as float32: 1.2e-7 per score with the fixtures' kernels (float32 unit roundoff
    6e-8, twice), 1e-5 with others (float32 forward). Ranking and the 2 % / 5 % selections:
    identical (the closest two scores are 1e-4 apart)."""
    ref = load("highloss.pt")
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float32)
    ctx = MethodContext(source="fixture", images=images, targets=inputs["targets"],
                        mean=MKDT_MEAN, std=MKDT_STD, budget=0, seed=0, device=CPU,
                        cache=ArtifactCache(tmp_path / "cache"), inputs_key="fixture",
                        scratch=tmp_path)
    trajectories = list(load("experts.pt")["trajectories"])
    scores = H.high_loss_scores(ctx, expert_config(), trajectories)
    per_score = ((scores.double() - ref["scores"]).abs() / ref["scores"].abs()).max().item()
    print(f"conformance: high-loss scores (per score): {per_score:.3g}")
    assert per_score <= (1.2e-7 if SAME_KERNELS else 1e-5), per_score
    assert torch.equal(H.high_loss_indices(scores, len(scores)), ref["order"])
    n = len(images)
    assert torch.equal(H.high_loss_indices(scores, int(0.02 * n)), ref["top2"])
    assert torch.equal(H.high_loss_indices(scores, int(0.05 * n)), ref["top5"])


# ----------------------------------------------------------- MKDT: trajectory matching


def run_mkdt_iterations(inputs, monkeypatch, tmp_path, dtype: torch.dtype, mode: str,
                        ref: dict) -> list[dict[str, Tensor]]:
    """Two ``MKDT._step`` iterations from the reference's initial state, with the
    reference's random permutations replayed to ``syn_batches``."""
    d = CFG["mkdt"]["distill"]
    method = MKDT(student="convnet", width=32, num_experts=1, train_epochs=2,
                  iterations=d["iters"], syn_steps=d["syn_steps"],
                  expert_epochs=d["expert_epochs"], max_start_epoch=d["max_start_epoch"],
                  batch_syn=d["batch_syn"], lr_img=d["lr_img"], lr_labels=d["lr_labels"],
                  lr_lr=d["lr_lr"], lr_teacher=d["lr_teacher"], unroll=mode)
    idx = ref["init_indices"]
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, dtype)[idx]
    targets = inputs["targets"].to(dtype)[idx]
    trajectories = [load("experts.pt")["trajectories"][0].to(dtype)]
    net = U.FlatNet(E.build_student({"student": "convnet", "width": 32}, images,
                                    targets.shape[1], 0).to(dtype))
    ctx = SimpleNamespace(device=CPU, scratch=tmp_path, precision="default")
    state = method._state(ctx, images, targets, torch.tensor(d["lr_teacher"], dtype=dtype),
                          torch.Generator().manual_seed(0), idx.tolist())
    perms = iter(ref["randperms"])
    randperm = torch.randperm

    def replay(n, *args, **kwargs):
        return next(perms).clone() if n == len(images) else randperm(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", replay)
    out = []
    for _ in range(d["iters"]):
        loss = method._step(ctx, net, mode, trajectories, state)[0]
        out.append({"loss": loss.detach().to(torch.float64),
                    "grad_images": state.images.grad.clone(),
                    "grad_targets": state.targets.grad.clone(), "grad_lr": state.lr.grad.clone(),
                    "images": state.images.detach().clone(),
                    "targets": state.targets.detach().clone(), "lr": state.lr.detach().clone()})
    monkeypatch.setattr(torch, "randperm", randperm)
    assert next(perms, None) is None  # every reference permutation was used
    return out


@pytest.mark.parametrize("mode", ["full", "checkpoint"])
def test_trajectory_matching_matches_distill_py(inputs, monkeypatch, tmp_path, mode):
    """``distill.py``, 2 outer iterations (5 inner steps of 4 / 2 images, a re-drawn
    permutation, momentum 0.5 carried into the second update), float64: loss, gradients of
    images / targets / lr and the updated values. Differences: the reference divides both
    norms by the parameter count and sums with ``mse_loss``; ``checkpoint`` also re-orders
    the reverse pass. Tolerance 1e-12 (observed ~1e-15)."""
    ref = load("distill64.pt")
    out = run_mkdt_iterations(inputs, monkeypatch, tmp_path, torch.float64, mode, ref)
    assert (ref["start_epoch"] == 0).all()
    for it, got in enumerate(out):
        for key in ("loss", "grad_images", "grad_targets", "grad_lr", "targets", "lr"):
            close(f"{mode} iteration {it + 1} {key}", got[key], ref[key][it], 1e-12)
    close(f"{mode} images after 2 updates", out[-1]["images"], ref["images"], 1e-12)


def float32_unroll_tolerance(iteration: int, key: str) -> float:
    """1e-5, but for iteration 2's image and target gradients (and the images after it)
    under other CPU kernels than the fixtures'. Iteration 2 starts from images moved by
    iteration 1's update, and the second-order gradient amplifies the kernels' rounding of
    that start about a thousandfold: with AVX-512 kernels against the fixtures' AVX2 ones,
    iteration 1 is within 6.3e-7 (same inputs), iteration 2's grad_images 5.7e-4,
    grad_targets 2.6e-5, the images after 2 updates 8.7e-6 (every other value ≤ 6e-7)."""
    if SAME_KERNELS or iteration == 1:
        return 1e-5
    return {"grad_images": 2e-3, "grad_targets": 2e-4, "images": 5e-5}.get(key, 1e-5)


def test_full_unroll_matches_distill_py_in_float32(inputs, monkeypatch, tmp_path):
    """The same in float32 (the precision runs use) with ``unroll=full``: the graph is the
    reference's, op for op, except the reference's extra division by the parameter count
    and its ``mse_loss`` sums: tolerance 1e-5 (float32 rounding through 5 second-order
    steps; 7e-7 measured with the fixtures' kernels), looser for iteration 2's gradients
    under other kernels (:func:`float32_unroll_tolerance`)."""
    ref = load("distill32.pt")
    out = run_mkdt_iterations(inputs, monkeypatch, tmp_path, torch.float32, "full", ref)
    for it, got in enumerate(out):
        for key in ("loss", "grad_images", "grad_targets", "grad_lr", "targets", "lr"):
            close(f"float32 iteration {it + 1} {key}", got[key], ref[key][it],
                  float32_unroll_tolerance(it + 1, key))
    close("float32 images after 2 updates", out[-1]["images"], ref["images"],
          float32_unroll_tolerance(2, "images"))


# --------------------------------------------------------- MKDT: evaluation (protocol A)


def test_pretraining_epochs_match_pretrain_mse_py(float64, monkeypatch):
    """``pretrain_mse.py``: a fresh ConvNet trained 2 epochs on the distilled set (SGD 0.9,
    wd 1e-4, lr = the learned lr, batch 4 of 6 shuffled by a generator of the seed), from the
    reference's initialisation: float64, tolerance 1e-12."""
    ref, distilled = load("pretrain.pt"), load("distill64.pt")
    cfg = CFG["mkdt"]["pretrain"]
    data = DistilledSet(images=distilled["images"], targets=distilled["targets"][-1],
                        lr=float(ref["lr"]), source="fixture", mean=MKDT_MEAN, std=MKDT_STD,
                        method="mkdt")
    build = pretrain_module.create_model

    def reference_init(*args, **kwargs):
        model = build(*args, **kwargs)
        load_flat_state(model, ref["init"])
        return model

    monkeypatch.setattr(pretrain_module, "create_model", reference_init)
    options = {"epochs": cfg["epochs"], "lr": 0.1, "use_learned_lr": True, "momentum": 0.9,
               "weight_decay": cfg["wd"], "batch_size": cfg["batch"], "steps": 0}
    model, steps = pretrain_module.pretrain_encoder(data, "convnet:width=32", options,
                                                    cfg["clock_seed"], CPU)
    assert steps == cfg["epochs"] * 2
    close("pre-trained encoder", flat_state(model), ref["final"], 1e-12)


def test_lbfgs_probe_matches_linear_evaluation_py(float64):
    """``train_clf`` + ``test_clf``: the same features and seed -> the same probe weights
    (20 L-BFGS steps of 20 iterations, float64: tolerance 1e-10, the iterations amplify
    rounding) and the same test accuracy."""
    ref = load("probe.pt")
    p = CFG["mkdt"]["probe"]
    clf = _lbfgs.fit_linear_lbfgs(ref["x_train"], ref["y_train"], p["classes"],
                                  p["reg_weight"], p["le_iters"], p["seed"])
    close("probe weight", clf.weight.detach(), ref["weight"], 1e-10)
    close("probe bias", clf.bias.detach(), ref["bias"], 1e-10)
    # accuracy() averages in float32: 1e-4 is far below one test image (2.5 points)
    assert _lbfgs.accuracy(clf, ref["x_test"], ref["y_test"]) == pytest.approx(
        ref["accuracy"].item(), abs=1e-4)


def reference_bn_encoder() -> nn.Module:
    """The reference's ``ConvNetBN`` (width 128, depth 3, BatchNorm) with the fixture's
    generated weights, as this harness's ``convnet:norm=batchnorm``."""
    p = CFG["mkdt"]["probe"]
    encoder = create_model("convnet:norm=batchnorm", in_channels=3, image_size=32, out_dim=512)
    keys = SETTINGS["results"]["mkdt"]["probe"]["encoder_keys"]
    template = OrderedDict(zip(keys, encoder.state_dict().values(), strict=True))
    weights = generated_state(template, p["encoder_seed"])
    assert state_sha256(weights) == SETTINGS["results"]["mkdt"]["probe"]["encoder_sha256"]
    encoder.load_state_dict(OrderedDict(zip(encoder.state_dict(), weights.values(),
                                            strict=True)))
    return encoder.double()


def test_probe_encoding_mode_matches_le_run(float64, inputs):
    """``le_run`` encodes the labelled subset with the encoder in train mode (batch
    statistics of 256-image batches, running statistics updated), then the test set in
    eval mode. ``labelled_mode="train"`` reproduces it: labelled subset, features, updated
    statistics and test features within 1e-12 (float64). The default (``"eval"``, the
    standard protocol) gives different features for a BatchNorm encoder."""
    ref, p = load("probe.pt"), CFG["mkdt"]["probe"]
    n = len(inputs["images_u8"])
    subset = labelled_subset(n, p["subset_frac"], p["seed"])
    assert subset == ref["subset"].tolist()
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float64)[subset]
    test = normalize(inputs["test_images_u8"], MKDT_MEAN, MKDT_STD, torch.float64)
    encoder = reference_bn_encoder()
    reference_mode = copy.deepcopy(encoder)
    z_train = train_mode_features(reference_mode, images, p["test_batch_size"], CPU)
    close("labelled features, train mode", z_train, ref["z_train"], 1e-12)
    running = torch.cat([v.reshape(-1) for k, v in reference_mode.state_dict().items()
                         if "running" in k])
    close("running statistics after encoding", running, ref["running_after"], 1e-12)
    close("test features", extract_features(reference_mode, test, CPU), ref["z_test"], 1e-12)
    differs("labelled features, eval mode (default)", extract_features(encoder, images, CPU),
            ref["z_train"])
    assert LinearProbe(labelled_mode="train").config["encode_batch"] == p["test_batch_size"]


# ------------------------------------------------------------------------------ KRR-ST


class LinearTeacher(nn.Module):
    """The fixtures' stand-in teacher: ``Flatten`` + ``Linear(bias=False)``."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)

    def features(self, x: Tensor) -> Tensor:
        return F.linear(x.flatten(1), self.weight)


def krrst_method(**overrides) -> KRRST:
    k = CFG["krrst"]
    options = dict(model="convnet", width=0, widths="4-8-16", norm="batchnorm",
                   pool_size=k["num_models"], online_iterations=k["online_iteration"],
                   pool_lr=k["online_lr"], pool_momentum=0.9, pool_wd=k["online_wd"],
                   outer_steps=k["outer_iteration"], outer_lr=k["outer_lr"],
                   final_lr_factor=1e-3, outer_optimizer="adam",
                   real_batch=len(k["real_indices"]), augment=False, ridge=1e-6,
                   reference_input_space=True, teacher_channels_last=False)
    return KRRST(**{**options, **overrides})


def krrst_context(tmp_path: Path, images: Tensor, targets: Tensor, budget: int,
                  teacher: nn.Module | None = None) -> MethodContext:
    load_teacher = (lambda: teacher) if teacher is not None else None
    return MethodContext(source="fixture", images=images, targets=targets, mean=KRRST_MEAN,
                         std=KRRST_STD, budget=budget, seed=0, device=CPU,
                         cache=ArtifactCache(tmp_path / "cache"), inputs_key="fixture",
                         scratch=tmp_path, load_teacher=load_teacher)


def test_krrst_outer_steps_match_distill_run(float64, inputs, tmp_path):
    """``model_pool.ModelPool`` + ``algorithms/distill.run`` + ``train.py``'s AdamW and
    LinearLR, with ``reference_input_space=true`` (raw X_s): the warmed-up pool model
    (``convnet_4_8_16_bn`` = ``convnet:widths=4-8-16,norm=batchnorm``), then per outer step
    the lr, loss, gradients of X_s and Y_s, the Adam update and the pool model after its
    online step (parameters and BatchNorm statistics). float64; the KRR solve and the
    kernels sum in another order: tolerance 1e-11 (observed ≤ ~1e-13). The initial targets
    g*(norm(X_s)) were bit-equal on the AVX2 machines that made the fixtures; an Intel
    AVX-512 machine's float64 kernels are 1.45e-15 away (tolerance 1e-13)."""
    k, ref = CFG["krrst"], load("krrst.pt")
    mean = torch.tensor(KRRST_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(KRRST_STD).view(1, -1, 1, 1)
    raw = inputs["images_u8"].double() / 255
    x_syn, real = raw[k["syn_indices"]], (raw[k["real_indices"]] - mean) / std
    teacher = LinearTeacher(linear_teacher_weight(k["teacher_seed"], k["target_dim"]).double())
    with torch.no_grad():  # one float64 product; other CPUs' kernels round it otherwise
        close("Y_s = g*(norm(X_s))", teacher.features((x_syn - mean) / std), ref["y_syn"], 1e-13)
    method = krrst_method()
    ctx = krrst_context(tmp_path, real, torch.zeros(len(real), k["target_dim"]), len(x_syn))
    state = method._state(ctx, x_syn, ref["y_syn"], torch.Generator().manual_seed(0),
                          list(k["syn_indices"]))
    model = state.pool.models[0]
    load_flat_state(model, ref["pool_init"])
    for _ in range(int(ref["warmup_steps"])):  # ModelPool.init's randint(1, T) steps
        state.pool._sgd_step(0, state.images.detach(), state.targets.detach())
    state.pool.counters[0] = int(ref["warmup_steps"])
    close("pool model after warm-up", flat_state(model), ref["pool_warm"], 1e-12)
    state.batches.next = lambda: torch.arange(len(real))  # the reference's one fixed batch
    grads = []
    step = state.optimizer.step

    def recording_step(*args, **kwargs):
        grads.append((state.images.grad.clone(), state.targets.grad.clone()))
        return step(*args, **kwargs)

    state.optimizer.step = recording_step
    for i in range(k["outer_steps_run"]):
        loss, _ = method._step(ctx, teacher, state, mean, std)
        state.step += 1
        close(f"step {i + 1} lr", torch.tensor(state.optimizer.param_groups[0]["lr"]),
              ref["lr"][i], 1e-15)
        close(f"step {i + 1} loss", loss, ref["loss"][i], 1e-11)
        close(f"step {i + 1} grad X_s", grads[i][0], ref["grad_x"][i], 1e-11)
        close(f"step {i + 1} grad Y_s", grads[i][1], ref["grad_y"][i], 1e-11)
        close(f"step {i + 1} X_s", state.images, ref["x"][i], 1e-11)
        close(f"step {i + 1} Y_s", state.targets, ref["y"][i], 1e-11)
        close(f"step {i + 1} pool model", flat_state(model), ref["pool"][i], 1e-11)
        assert state.pool.counters[0] == int(ref["iterations"][i])


def test_krrst_initial_set_in_reference_input_space(float64, inputs, tmp_path):
    """``train.py`` L47-63: X_s = raw loader images (un-normalised), Y_s = g*(norm(X_s)).
    ``reference_input_space=true`` stores raw pixels (to rounding of the normalisation
    round trip: 1e-15); the default keeps X_s normalised, like the real images."""
    k = CFG["krrst"]
    mean = torch.tensor(KRRST_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(KRRST_STD).view(1, -1, 1, 1)
    raw = inputs["images_u8"].double() / 255
    teacher = LinearTeacher(linear_teacher_weight(k["teacher_seed"], k["target_dim"]).double())
    normalised = (raw - mean) / std
    with torch.no_grad():
        targets = teacher.features(normalised)
    ctx = krrst_context(tmp_path, normalised, targets, 6)
    state = krrst_method(online_iterations=2)._initial_state(ctx)
    idx = state.indices
    close("X_s, reference input space", state.images, raw[idx], 1e-15)
    close("Y_s = g*(norm(X_s))", state.targets, targets[idx], 0)
    default = krrst_method(online_iterations=2, reference_input_space=False)._initial_state(ctx)
    differs("X_s, default (normalised) space", default.images, raw[idx])


def test_krrst_pool_counter_matches_model_pool_py():
    """``ModelPool.update`` never resets the step counter after a re-initialisation
    (krrst.md §6.1): ``reference_counter=true`` gives the reference's counters and
    re-initialisations update for update; the default resets it, so its models train again."""
    ref, c = load("krrst_pool.pt"), CFG["krrst"]["counter"]
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2)

    def build(seed: int):
        torch.manual_seed(seed)
        return create_model("convnet:widths=2,norm=batchnorm", in_channels=3, image_size=8,
                            out_dim=2)

    def run(reference_counter: bool) -> tuple[list[list[int]], list[bool]]:
        cfg = {"pool_size": c["num_models"], "pool_lr": 0.1, "pool_momentum": 0.9,
               "pool_wd": 1e-3, "online_iterations": c["online_iteration"],
               "reference_counter": reference_counter}
        pool = ModelPool(build, cfg, torch.Generator().manual_seed(0))
        pool.counters = ref["initial"].tolist()
        counters, reinit = [], []
        for i in c["updates"]:
            before = pool.models[i]
            pool.update(i, x, y)
            counters.append(list(pool.counters))
            reinit.append(pool.models[i] is not before)
        return counters, reinit

    counters, reinit = run(reference_counter=True)
    assert counters == ref["counters"].tolist() and reinit == ref["reinitialised"].tolist()
    default_counters, default_reinit = run(reference_counter=False)
    assert default_reinit != ref["reinitialised"].tolist()
    assert sum(default_reinit) < sum(reinit)


def test_krrst_lr_schedule_matches_linear_lr():
    """``train.py`` L73-74: ``LinearLR(1 -> 1e-3)`` over 160,000 steps, read before each
    step. The reference multiplies by a ratio every step, the harness uses the closed form:
    the chained product accumulates float64 rounding, ≤ 160,000 · 1.1e-16 = 1.8e-11."""
    ref, s = load("krrst_lr.pt"), CFG["krrst"]["schedule"]
    ours = torch.tensor([outer_lr_at(s["outer_lr"], 1e-3, int(step), s["total"])
                         for step in ref["steps"]], dtype=torch.float64)
    per_step = ((ours - ref["lr"]).abs() / ref["lr"]).max().item()
    assert per_step <= 1.8e-11, per_step


def test_krrst_reference_networks_have_the_reference_parameter_counts():
    """KRR-ST's pool / evaluation networks (krrst.md §7), counted by the reference's
    ``get_model``: ``convnet_128_256_512_bn`` (CIFAR, 32 px) and
    ``convnet_64_128_256_512_bn`` (Tiny, 64 px), both with a 512-d head; also what the
    ``krrst`` default (``widths="auto"``) builds."""
    counts = SETTINGS["results"]["krrst"]["param_counts"]
    for name, widths in (("convnet_128_256_512_bn", "128-256-512"),
                         ("convnet_64_128_256_512_bn", "64-128-256-512")):
        size = counts[name]["image_size"]
        model = create_model(f"convnet:widths={widths},norm=batchnorm", in_channels=3,
                             image_size=size, out_dim=512)
        assert sum(p.numel() for p in model.parameters()) == counts[name]["parameters"]
        assert model.feature_dim == counts[name]["features"]
        ctx = SimpleNamespace(images=torch.zeros(1, 3, size, size), targets=torch.zeros(1, 512),
                              device=CPU)
        pool_net = KRRST()._build(ctx, 0)
        assert sum(p.numel() for p in pool_net.parameters()) == counts[name]["parameters"]
