"""MKDT: dataset distillation via knowledge distillation (Joshi, Ni, Mirzasoleiman, ICLR 2025,
arXiv 2410.02116), and its high-loss-subset ablation baseline. Spec: ``mkdt.md``.

- ``highloss``: the top-``budget`` real images by KD loss under the experts' epoch-1
  snapshots (§3), with their teacher targets; no learned lr (§5 baseline 3).
- ``mkdt``: MTT-style trajectory matching onto those experts (§4), learning the images,
  their target representations and the pre-training lr. ``init="random"`` is the
  "MKDT (random init)" row (§3, §5 item 6).

Both build the same cached experts (§2) for the same expert options, whatever the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.allocator import retained_heap
from mkdt_bench.cache import atomic_torch_save
from mkdt_bench.device import autocast, to_device, to_host, unroll_budget_bytes
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.methods import register_method
from mkdt_bench.methods._experts import (
    EXPERT_BOUNDS,
    EXPERT_DEFAULTS,
    HALF_KEY,
    build_student,
    ensure_experts,
    expert_config,
    expert_units,
    load_trajectories,
)
from mkdt_bench.methods._highloss import high_loss_indices, high_loss_scores, select_high_loss
from mkdt_bench.methods._unroll import (
    UNROLL_MODES,
    ExpertCycle,
    FlatNet,
    choose_unroll,
    meta_step,
    syn_batches,
)
from mkdt_bench.methods.base import Method, MethodContext, SubUnit
from mkdt_bench.options import Interval
from mkdt_bench.safeload import (
    check_ints,
    check_like,
    check_optimizer,
    check_progress,
    check_rows,
    resume,
)
from mkdt_bench.seeding import rng_state, set_rng_state
from mkdt_bench.training import StepRecords

SNAPSHOT_FILE = "mkdt_state.pt"
#: The parts of a resume snapshot and their types (tensors and plain data only).
_SNAPSHOT_KEYS: dict[str, type | tuple[type, ...]] = {
    "images": Tensor, "targets": Tensor, "lr": Tensor, "optimizers": list,
    "generator": Tensor, "cycle": dict, "iteration": int, "losses": list, "indices": list,
    "rng": dict}
#: Iterations between reads of the divergence checks off the CPU (on the CPU: every one).
CHECK_EVERY = 25


@register_method("highloss")
class HighLossSubset(Method):
    """The §3 high-loss real subset with teacher targets and lr ``None`` (§5 baseline 3).

    Options (the expert options of ``mkdt``, same names and defaults, so both share the
    cached experts): ``student``, ``width``, ``num_experts``, ``train_epochs``,
    ``expert_lr``, ``expert_momentum``, ``expert_wd``, ``expert_batch`` (see :class:`MKDT`).
    The selection does not depend on the seed.
    """

    defaults = dict(EXPERT_DEFAULTS)
    bounds = dict(EXPERT_BOUNDS)
    seeded = False

    def sub_units(self, inputs_key: str) -> list[SubUnit]:
        """One unit per expert (§2)."""
        return expert_units(expert_config(self.config), inputs_key)

    def distill(self, ctx: MethodContext) -> DistilledSet:
        idx = select_high_loss(ctx, self.config)
        return self.make_set(ctx, ctx.images[idx], ctx.targets[idx], indices=idx.tolist())


@dataclass
class _State:
    """Everything a resumed run needs to continue bit-identically (§4, snapshots)."""

    images: Tensor
    targets: Tensor
    lr: Tensor
    optimizers: list[torch.optim.SGD]
    generator: torch.Generator
    cycle: ExpertCycle
    iteration: int
    losses: list[float]
    indices: list[int]

    def save(self, path: Path) -> None:
        """The state on the host, so that it resumes on any device."""
        atomic_torch_save(to_host({
            "images": self.images, "targets": self.targets, "lr": self.lr,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "generator": self.generator.get_state(), "cycle": self.cycle.state_dict(),
            "iteration": self.iteration, "losses": self.losses, "indices": self.indices,
            "rng": rng_state(),
        }), path)


@register_method("mkdt")
class MKDT(Method):
    """MKDT trajectory matching (spec ``mkdt.md`` §2-§4); defaults = the CIFAR10 2% column of §8.

    Experts (§2; shared with ``highloss``, one cache artifact per expert, seeded from its
    index and these options, not from the run seed):
        student ("convnet"): model name of the student and the inner-loop network;
            the convnet is depth 3 up to 32 px, depth 4 above (ConvNet-D3 / D4, §2, §8).
        width (128): student width (0 = do not pass a width to the model).
        num_experts (100): K.  train_epochs (20): E; each trajectory has E + 1 snapshots.
        expert_lr (0.1), expert_momentum (0.9), expert_wd (1e-4), expert_batch (256).

    Initialisation (§3):
        init ("high_loss"): top-budget images by KD loss under the epoch-1 snapshots,
            averaged over the experts; "random": a uniform subset drawn from the run seed
            (the same subset as the ``random`` method with that seed).
        lr_teacher (0.1): initial learnable lr η̃.

    Distillation (§4, §8):
        iterations (5000): outer updates. The paper evaluates ``images_5000`` (state after
            4,999 updates, bug 8), also for Tiny's 10,000-iteration runs; 5000 updates
            stand for both.
        syn_steps (40): N inner plain-SGD steps.  expert_epochs (2): M, target θ_{t+M}.
        max_start_epoch (2): t ~ Uniform{0, ..., max_start_epoch - 1}.
        batch_syn (256): inner mini-batch size (chunks of a fresh permutation, §4 step 2).
        lr_img (1000), lr_labels (1), lr_lr (1e-4): SGD lrs of X̃, Ỹ and η̃,
            each with momentum (0.5).
        eval_it (1000): snapshot interval (resumable state in ``ctx.scratch``) and the
            window of the reported loss curve.
        single_expert (False): bug-compatibility with [J] HEAD (bug 5, §9.1): match the
            first expert drawn in every iteration instead of cycling through all K.

    Engine (how step 4's gradient is computed; the results agree to float rounding, not
    bit for bit). ``unroll``, ``unroll_memory_gb`` and ``expert_group`` are engine options
    (:attr:`Method.engine_options`): not part of the distilled set's cache key, so a set
    stored by one engine is reused by another:
        unroll ("auto"): "full" keeps the whole unrolled graph (fastest; its size grows
            with syn_steps: tens of GB at the CIFAR setting); "checkpoint" keeps only the
            N + 1 parameter vectors and rebuilds one inner step's graph at a time while
            walking back (exact, memory independent of syn_steps, about 1.3x the time);
            "auto" takes "full" when the estimated graph (8 bytes per activation float x
            the student's activations per image x min(batch_syn, budget) x syn_steps)
            fits in the memory budget, else "checkpoint" (CIFAR ConvNet-D3, 256 x 40:
            ~43 GiB, "full" on an 80 GB GPU, "checkpoint" on a 23 GB CPU machine;
            100 x 10: ~4 GiB). The choice is stored in the set (``unroll``).
        unroll_memory_gb (0): the memory budget of "auto", in GiB; 0 = from the device
            (``mkdt_bench.device.unroll_budget_bytes``: 90 % of the GPU's free memory,
            half the host's physical memory on the CPU).
        expert_group (1): train the missing experts this many at a time (one
            ``torch.func.vmap`` over their stacked parameters, §2); each keeps its own
            seed, shuffling and SGD state and equals its one-by-one training to float
            rounding, under the same expert cache key. ``highloss`` trains one by one.
            Slower on the CPU (1.6-2.1x per expert-epoch: the stacked convolutions run
            as grouped ones), so 1 there; meant for GPUs (``benchmarks/gpu_check.sh``).
        expert_half (False): store the expert snapshots in float16 (half the bytes: 57
            instead of 113 MB per CIFAR expert); they are the float32 experts rounded,
            under their own cache keys, and are used in float32. Changes the matching
            loss by rounding (``benchmarks/README.md``).

    On the CPU the inner loop and the expert training run in a retained glibc heap
    (``allocator.retained_heap``: no page faults on every new activation tensor; 1.8-2.2x
    faster, identical numbers, 15-45 % more resident memory; ``benchmarks/README.md``).

    Off the CPU the data stay on the device and an iteration reads nothing back to the
    host: its loss and finiteness checks are read every ``CHECK_EVERY`` iterations and at
    every snapshot. ``run.precision = "bf16"`` runs the unroll under bfloat16 autocast
    (``mkdt_bench.device``; part of the set's cache key). Snapshots are stored on the host
    and resume on any device.

    A non-finite loss, image, target or lr (or a non-positive lr) raises a UserError naming
    the iteration and the learning rates to lower; the last good snapshot stays on disk.
    """

    defaults = {
        **EXPERT_DEFAULTS,
        "init": "high_loss",
        "lr_teacher": 0.1,
        "iterations": 5000,
        "syn_steps": 40,
        "expert_epochs": 2,
        "max_start_epoch": 2,
        "batch_syn": 256,
        "lr_img": 1000.0,
        "lr_labels": 1.0,
        "lr_lr": 1e-4,
        "momentum": 0.5,
        "eval_it": 1000,
        "single_expert": False,
        "unroll": "auto",
        "unroll_memory_gb": 0.0,
        "expert_group": 1,
        "expert_half": False,
    }
    choices = {"init": ("high_loss", "random"), "unroll": UNROLL_MODES}
    bounds = {
        **EXPERT_BOUNDS,
        "lr_teacher": Interval(float, 0, None, closed="neither"),
        "iterations": Interval(int, 1, None),
        "syn_steps": Interval(int, 1, None),
        "expert_epochs": Interval(int, 1, None),
        "max_start_epoch": Interval(int, 1, None),
        "batch_syn": Interval(int, 1, None),
        "lr_img": Interval(float, 0, None, note="0 = the images stay as initialised"),
        "lr_labels": Interval(float, 0, None, note="0 = the targets stay as initialised"),
        "lr_lr": Interval(float, 0, None, note="0 = the lr stays lr_teacher"),
        "momentum": Interval(float, 0, 1, closed="left"),
        "eval_it": Interval(int, 1, None),
        "unroll_memory_gb": Interval(float, 0, None, note="0 = from the device"),
        "expert_group": Interval(int, 1, None),
    }
    engine_options = frozenset({"unroll", "unroll_memory_gb", "expert_group"})
    compatible_defaults = {"expert_half": False}
    uses_autocast = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cfg, where = self.config, f"method {self.name!r}"
        last = cfg["max_start_epoch"] - 1 + cfg["expert_epochs"]
        if last > cfg["train_epochs"]:
            raise UserError(f"{where}: max_start_epoch - 1 + expert_epochs = {last} needs "
                            f"snapshots beyond train_epochs={cfg['train_epochs']}; lower "
                            "max_start_epoch or expert_epochs, or raise train_epochs")

    def sub_units(self, inputs_key: str) -> list[SubUnit]:
        """One unit per expert (§2)."""
        return expert_units(self._experts(), inputs_key)

    def _experts(self) -> dict[str, Any]:
        """The expert config, marked for half-precision snapshots if ``expert_half``."""
        experts = expert_config(self.config)
        return {**experts, HALF_KEY: True} if self.config["expert_half"] else experts

    def distill(self, ctx: MethodContext) -> DistilledSet:
        cfg = self.config
        experts = self._experts()
        trajectories = load_trajectories(ensure_experts(ctx, experts, cfg["expert_group"]))
        net = FlatNet(build_student(experts, ctx.images, int(ctx.targets.shape[1]), 0)
                      .to(ctx.device))
        mode = self._unroll_mode(ctx, net)
        path = ctx.scratch / SNAPSHOT_FILE
        state = resume(path, _SNAPSHOT_KEYS, lambda snap: self._resume(ctx, snap))
        if state is None:
            state = self._initial_state(ctx, experts, trajectories)
            state.save(path)
        check_every = 1 if ctx.device.type == "cpu" else CHECK_EVERY
        records = StepRecords()
        bar = ctx.progress.bar(cfg["iterations"], "mkdt", initial=state.iteration)
        with retained_heap(ctx.device.type == "cpu"):
            while state.iteration < cfg["iterations"]:
                records.add(*self._step(ctx, net, mode, trajectories, state))
                state.iteration += 1
                snapshot = (state.iteration % cfg["eval_it"] == 0
                            or state.iteration == cfg["iterations"])
                if snapshot or state.iteration % check_every == 0:
                    lr = self._check(ctx, state, records.read())
                if snapshot:
                    state.save(path)
                    bar.set_postfix(loss=f"{state.losses[-1]:.4f}", lr=f"{lr:.4f}")
                bar.update(1)
        bar.close()
        every = cfg["eval_it"]
        curve = [sum(state.losses[i:i + every]) / len(state.losses[i:i + every])
                 for i in range(0, len(state.losses), every)]
        return self.make_set(ctx, state.images, state.targets, lr=float(state.lr.item()),
                             indices=state.indices, init=cfg["init"],
                             iterations=state.iteration, loss_curve=curve,
                             loss_curve_every=every, unroll=mode)

    def _unroll_mode(self, ctx: MethodContext, net: FlatNet) -> str:
        """The ``unroll`` option, resolved for the memory of ``ctx.device`` (or
        ``unroll_memory_gb``) when "auto"."""
        cfg = self.config
        memory = (int(cfg["unroll_memory_gb"] * 2**30) if cfg["unroll_memory_gb"] > 0
                  else unroll_budget_bytes(ctx.device))
        return choose_unroll(cfg["unroll"], net.module, ctx.images[:1].to(ctx.device),
                             min(cfg["batch_syn"], ctx.budget), cfg["syn_steps"], memory)

    def _optimizers(self, images: Tensor, targets: Tensor, lr: Tensor) -> list[torch.optim.SGD]:
        """SGD with momentum for X̃, Ỹ and η̃ (§4 step 4)."""
        cfg = self.config
        return [torch.optim.SGD([p], lr=cfg[key], momentum=cfg["momentum"])
                for p, key in ((images, "lr_img"), (targets, "lr_labels"), (lr, "lr_lr"))]

    def _state(self, ctx: MethodContext, images: Tensor, targets: Tensor, lr: Tensor,
               generator: torch.Generator, indices: list[int]) -> _State:
        """The learned tensors on ``ctx.device`` with their optimisers; the generator stays a
        CPU one (the same random choices on every device)."""
        images, targets, lr = (to_device(t.detach(), ctx.device).clone().requires_grad_(True)
                               for t in (images, targets, lr))
        cycle = ExpertCycle(self.config["num_experts"], generator, self.config["single_expert"])
        return _State(images, targets, lr, self._optimizers(images, targets, lr), generator,
                      cycle, 0, [], indices)

    def _initial_state(self, ctx: MethodContext, experts: dict[str, Any],
                       trajectories: list[Tensor]) -> _State:
        """X̃, Ỹ = the chosen real images and their teacher targets, η̃ = lr_teacher (§3)."""
        generator = torch.Generator().manual_seed(ctx.seed)
        if self.config["init"] == "high_loss":
            idx = high_loss_indices(high_loss_scores(ctx, experts, trajectories), ctx.budget)
        else:
            idx = torch.randperm(len(ctx.images), generator=generator)[: ctx.budget]
        lr = torch.tensor(self.config["lr_teacher"])
        return self._state(ctx, ctx.images[idx], ctx.targets[idx], lr, generator, idx.tolist())

    def _resume(self, ctx: MethodContext, snap: dict[str, Any]) -> _State:
        """The snapshot's state (loaded on the host), checked against this run and moved to
        ``ctx.device`` (the generator states stay on the host, where they belong); raises
        ``ValueError`` (or torch's errors) when it does not fit."""
        cfg, n = self.config, len(ctx.images)
        check_rows(snap["images"], ctx.images, ctx.budget, "images")
        check_rows(snap["targets"], ctx.targets, ctx.budget, "targets")
        check_like(snap["lr"], torch.tensor(cfg["lr_teacher"]), "lr")
        check_ints(snap["indices"], "indices", ctx.budget, 0, n)
        check_progress(snap["iteration"], snap["losses"], cfg["iterations"])
        check_ints(snap["cycle"].get("order"), "expert order", None, 0, cfg["num_experts"])
        generator = torch.Generator()
        generator.set_state(snap["generator"])
        state = self._state(ctx, snap["images"], snap["targets"], snap["lr"], generator,
                            snap["indices"])
        if len(snap["optimizers"]) != len(state.optimizers):
            raise ValueError(f"not {len(state.optimizers)} optimizer states")
        for opt, opt_state in zip(state.optimizers, snap["optimizers"]):
            check_optimizer(opt_state, opt, "optimizer")
            opt.load_state_dict(opt_state)  # moves the momentum buffers to the parameters
        position = snap["cycle"].get("position")
        if not (type(position) is int and 0 <= position <= len(snap["cycle"]["order"])):
            raise ValueError(f"expert cycle position {position!r} is out of range")
        state.cycle.load_state_dict(snap["cycle"])
        state.iteration, state.losses = snap["iteration"], snap["losses"]
        set_rng_state(snap["rng"])
        return state

    def _step(self, ctx: MethodContext, net: FlatNet, mode: str, trajectories: list[Tensor],
              state: _State) -> tuple[Tensor, ...]:
        """One outer iteration (§4 steps 1-4), without a host read: returns, on the device,
        the matching loss before the update and, after it, whether the images and the
        targets are finite and the learned lr (:meth:`_check` reads them)."""
        cfg = self.config
        trajectory = trajectories[state.cycle.next()]
        t = int(torch.randint(cfg["max_start_epoch"], (1,), generator=state.generator))
        start = to_device(trajectory[t], ctx.device).to(net.dtype)
        target = to_device(trajectory[t + cfg["expert_epochs"]], ctx.device).to(net.dtype)
        batches = syn_batches(len(state.images), cfg["batch_syn"], cfg["syn_steps"],
                              state.generator, ctx.device)
        for opt in state.optimizers:
            opt.zero_grad(set_to_none=True)
        with autocast(ctx.device, ctx.precision):
            loss, backward = meta_step(net, start, target, state.images, state.targets,
                                       state.lr, batches, mode)
            backward()
        for opt in state.optimizers:
            opt.step()
        with torch.no_grad():
            return (loss, torch.isfinite(state.images).all(), torch.isfinite(state.targets).all(),
                    state.lr.detach())

    def _check(self, ctx: MethodContext, state: _State, records: list[list[float]]) -> float:
        """Read the records of the iterations just run (the last ``len(records)``): append
        their losses, or raise at the first that diverged; returns the last lr."""
        first = state.iteration - len(records)
        lr = math.nan
        for n, (loss, images_ok, targets_ok, lr) in enumerate(records, start=first + 1):
            if not math.isfinite(loss):
                raise self._diverged(ctx, n, f"the matching loss is {loss}")
            if not images_ok:
                raise self._diverged(ctx, n, "the images are not finite")
            if not targets_ok:
                raise self._diverged(ctx, n, "the targets are not finite")
            if not (math.isfinite(lr) and lr > 0):
                raise self._diverged(ctx, n, f"the learned lr is {lr}")
            state.losses.append(loss)
        return lr

    def _diverged(self, ctx: MethodContext, iteration: int, what: str) -> UserError:
        cfg = self.config
        last = (iteration - 1) // cfg["eval_it"] * cfg["eval_it"]
        return UserError(
            f"mkdt diverged at iteration {iteration}: {what}; lower lr_img "
            f"(now {cfg['lr_img']:g}), lr_lr ({cfg['lr_lr']:g}) or lr_labels "
            f"({cfg['lr_labels']:g}); the last good snapshot (iteration {last}) is kept in "
            f"{ctx.scratch / SNAPSHOT_FILE}")
