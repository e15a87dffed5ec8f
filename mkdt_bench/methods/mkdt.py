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
from mkdt_bench.methods._experts import (
    EXPERT_OPTIONS,
    HALF_KEY,
    build_student,
    ensure_experts,
    expert_config,
    expert_units,
    load_trajectories,
    student_passes,
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
from mkdt_bench.methods.registry import register_method
from mkdt_bench.options import Interval, Opt
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

    Its options are ``mkdt``'s expert options, so both share the cached experts. The
    selection does not depend on the seed.
    """

    options = dict(EXPERT_OPTIONS)
    seeded = False
    test_options = {"width": 8, "num_experts": 2, "train_epochs": 2, "expert_batch": 16}

    def sub_units(self, inputs_key: str) -> list[SubUnit]:
        """One unit per expert (§2)."""
        return expert_units(expert_config(self.config), inputs_key)

    def rough_passes(self, budget: int,
                     pool: int) -> dict[str, tuple[str, dict[str, Any], float, int]]:
        """Each expert trains ``train_epochs`` over the pool; the selection passes the pool
        forward (a third of a pass) through every expert."""
        cfg = self.config
        return {"expert": student_passes(cfg, cfg["train_epochs"] * pool, cfg["expert_batch"]),
                "distilled": student_passes(cfg, cfg["num_experts"] * pool / 3, pool)}

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

    Experts (§2) are shared with ``highloss``. ``unroll``, ``unroll_memory_gb`` and
    ``expert_group`` choose how step 4's gradient is computed, with results equal to float
    rounding (:attr:`Method.engine_options`): a set stored by one engine is reused by another.
    On the CPU the inner loop and the expert training run in a retained glibc heap
    (``allocator.retained_heap``; identical numbers).

    Off the CPU the data stay on the device and an iteration reads nothing back to the
    host: its loss and finiteness checks are read every ``CHECK_EVERY`` iterations and at
    every snapshot. ``run.precision = "bf16"`` runs the unroll under bfloat16 autocast
    (``mkdt_bench.device``; part of the set's cache key). Snapshots are stored on the host
    and resume on any device.

    A non-finite loss, image, target or lr (or a non-positive lr) raises a UserError naming
    the iteration and the learning rates to lower; the last good snapshot stays on disk.
    """

    options = {
        **EXPERT_OPTIONS,
        "init": Opt("high_loss", ("high_loss", "random"),
                    "initial images: the top-budget images by KD loss under the epoch-1 "
                    "snapshots (§3), or the random method's subset of the run seed"),
        "lr_teacher": Opt(0.1, Interval(float, 0, None, closed="neither"),
                          "initial learnable lr η̃ (§3)"),
        "iterations": Opt(5000, Interval(int, 1, None),
                          "outer updates (§4; the paper evaluates images_5000, bug 8)"),
        "syn_steps": Opt(40, Interval(int, 1, None), "N, inner plain-SGD steps (§4)"),
        "expert_epochs": Opt(2, Interval(int, 1, None), "M: the target is θ_{t+M} (§4)"),
        "max_start_epoch": Opt(2, Interval(int, 1, None),
                               "start epoch t ~ Uniform{0, ..., max_start_epoch - 1} (§4)"),
        "batch_syn": Opt(256, Interval(int, 1, None),
                         "inner mini-batch size: chunks of a fresh permutation (§4 step 2)"),
        "lr_img": Opt(1000.0, Interval(float, 0, None, note="0 = the images stay as "
                                       "initialised"), "SGD lr of the images X̃"),
        "lr_labels": Opt(1.0, Interval(float, 0, None, note="0 = the targets stay as "
                                       "initialised"), "SGD lr of the targets Ỹ"),
        "lr_lr": Opt(1e-4, Interval(float, 0, None, note="0 = the lr stays lr_teacher"),
                     "SGD lr of the learnable lr η̃"),
        "momentum": Opt(0.5, Interval(float, 0, 1, closed="left"),
                        "momentum of the three SGD optimisers"),
        "eval_it": Opt(1000, Interval(int, 1, None),
                       "snapshot interval (resumable state in ctx.scratch) and window of the "
                       "reported loss curve"),
        "single_expert": Opt(False, None, "match the first expert drawn in every iteration "
                                          "instead of cycling through all K ([J] HEAD, bug 5, "
                                          "§9.1)"),
        "unroll": Opt("auto", UNROLL_MODES,
                      "engine: \"full\" keeps the whole unrolled graph (fastest, grows with "
                      "syn_steps); \"checkpoint\" rebuilds one inner step at a time while "
                      "walking back (exact, memory independent of syn_steps); \"auto\" takes "
                      "full when its estimated graph fits unroll_memory_gb"),
        "unroll_memory_gb": Opt(0.0, Interval(float, 0, None, note="0 = from the device"),
                                "engine: the memory budget of unroll=auto, in GiB "
                                "(device.unroll_budget_bytes)"),
        "expert_group": Opt(1, Interval(int, 1, None),
                            "engine: train the missing experts this many at a time (one "
                            "torch.func.vmap; each equals its one-by-one training to float "
                            "rounding); for GPUs, slower on the CPU"),
        "expert_half": Opt(False, None, "store the expert snapshots in float16 (half the "
                                        "bytes, under their own cache keys; used in float32)"),
    }
    engine_options = frozenset({"unroll", "unroll_memory_gb", "expert_group"})
    cost_options = ("iterations",)
    compatible_defaults = {"expert_half": False}
    uses_autocast = True
    resumable = True
    test_options = {**HighLossSubset.test_options, "iterations": 4, "syn_steps": 2,
                    "expert_epochs": 1, "batch_syn": 4, "eval_it": 2, "lr_img": 10.0}

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

    def rough_passes(self, budget: int,
                     pool: int) -> dict[str, tuple[str, dict[str, Any], float, int]]:
        """The experts as ``highloss``'s; each iteration passes a batch of ``batch_syn`` set
        images through ``syn_steps`` inner steps, forward and backward twice (the
        meta-gradient through the unrolled steps), after the high-loss selection."""
        cfg = self.config
        batch = min(cfg["batch_syn"], budget)
        unrolled = 2 * cfg["iterations"] * cfg["syn_steps"] * batch
        selection = cfg["num_experts"] * pool / 3 if cfg["init"] == "high_loss" else 0
        return {"expert": student_passes(cfg, cfg["train_epochs"] * pool, cfg["expert_batch"]),
                "distilled": student_passes(cfg, unrolled + selection, batch)}

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
