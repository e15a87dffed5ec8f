"""Expert trajectories for MKDT (spec ``mkdt.md`` §2).

:func:`ensure_experts` trains K students by knowledge distillation (MSE onto the teacher
representations) and stores each one's parameters at epochs 0..E as one cache artifact, so
a killed run resumes at the next expert and every method and seed sharing the expert
options shares the experts. :func:`expert_units` offers the same K trainings to an
executor as independent units (same cache keys); :func:`train_experts` trains several at
once (one ``torch.func.vmap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mkdt_bench.allocator import retained_heap
from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.device import resident, to_device
from mkdt_bench.errors import UserError
from mkdt_bench.methods._unroll import FlatNet, require_buffer_free
from mkdt_bench.methods.base import MethodContext
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.options import Interval, Opt
from mkdt_bench.safeload import corrupt_artifact, load_artifact
from mkdt_bench.seeding import derive_seed

#: Options that define the experts (§2), shared by ``mkdt`` and ``highloss`` (same names
#: and defaults, so both share the cached experts). Each expert is seeded from its index and
#: these options, not from the run seed.
EXPERT_OPTIONS: dict[str, Opt] = {
    "student": Opt("convnet", None, "model of the experts and the student (ConvNet-D3 up "
                                    "to 32 px, D4 above; §2, §8)"),
    "width": Opt(128, Interval(int, 0, None, note="0 = the student's default"),
                 "student width"),
    "num_experts": Opt(100, Interval(int, 1, None), "K, the number of expert trajectories"),
    "train_epochs": Opt(20, Interval(int, 1, None),
                        "E, epochs per expert; each trajectory has E + 1 snapshots"),
    "expert_lr": Opt(0.1, Interval(float, 0, None, closed="neither"), "experts' SGD lr"),
    "expert_momentum": Opt(0.9, Interval(float, 0, 1, closed="left"),
                           "experts' SGD momentum"),
    "expert_wd": Opt(1e-4, Interval(float, 0, None), "experts' weight decay"),
    "expert_batch": Opt(256, Interval(int, 1, None), "experts' batch size"),
}
#: The expert options at their defaults.
EXPERT_DEFAULTS: dict[str, Any] = {key: opt.default for key, opt in EXPERT_OPTIONS.items()}

TRAJECTORY_FILE = "trajectory.pt"


def expert_config(options: dict[str, Any]) -> dict[str, Any]:
    """The expert part of a method's options (what names an expert artifact)."""
    return {key: options[key] for key in EXPERT_DEFAULTS}


def student_passes(cfg: dict[str, Any], count: float,
                   batch: int) -> tuple[str, dict[str, Any], float, int]:
    """``count`` passes through the §2 student in batches of ``batch``, as
    :meth:`Method.rough_passes` gives them."""
    return cfg["student"], {"width": cfg["width"]} if cfg["width"] else {}, count, batch


def build_student(cfg: dict[str, Any], images: Tensor, out_dim: int, seed: int) -> Encoder:
    """The §2 student for ``images`` (N x C x H x W) regressing ``out_dim`` features.

    Initialised from ``seed`` without touching the global generator. ``width`` is passed
    to the model unless it is 0 (for students without a width option).
    """
    kwargs = {"width": cfg["width"]} if cfg["width"] else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(cfg["student"], in_channels=int(images.shape[1]),
                            image_size=int(images.shape[-1]), out_dim=out_dim, **kwargs)


#: Key of the expert config that stores half-precision snapshots (mkdt ``expert_half``);
#: present only when on, so float32 experts keep their cache keys.
HALF_KEY = "half_snapshots"


def expert_seed(cfg: dict[str, Any], index: int) -> int:
    """Expert ``index``'s seed: from its index and the expert options, never the run seed
    (nor the snapshot precision: a half-precision expert is the float32 one rounded)."""
    trained = {key: value for key, value in cfg.items() if key != HALF_KEY}
    return derive_seed("mkdt-expert", config_hash(trained), index)


def train_expert(cfg: dict[str, Any], index: int, images: Tensor, targets: Tensor,
                 device: torch.device) -> Tensor:
    """Train one KD student (§2); returns its ``(E + 1) x P`` trajectory on the CPU.

    SGD (``expert_lr``, ``expert_momentum``, ``expert_wd``), shuffled batches of
    ``expert_batch``, ``train_epochs`` epochs, no augmentation; row e holds the flat
    parameters after e epochs (row 0: the initialisation). The data stay on the device
    where they fit (:func:`~mkdt_bench.device.resident`); the losses are checked once per
    epoch (:func:`check_epoch`), so a step reads nothing back to the host.
    """
    seed = expert_seed(cfg, index)
    model = build_student(cfg, images, int(targets.shape[1]), seed).to(device).train()
    require_buffer_free(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["expert_lr"],
                          momentum=cfg["expert_momentum"], weight_decay=cfg["expert_wd"])
    generator = torch.Generator().manual_seed(seed)
    images, targets = resident(images, device), resident(targets, device)
    snapshots = [FlatNet.flatten(model).cpu()]
    for epoch in range(cfg["train_epochs"]):
        losses = []
        for idx in epoch_batches(len(images), cfg["expert_batch"], generator, images.device):
            x, y = to_device(images[idx], device), to_device(targets[idx], device)
            loss = F.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        check_epoch(torch.stack(losses).view(-1, 1), [index], epoch, cfg["expert_lr"])
        snapshots.append(FlatNet.flatten(model).cpu())
    return torch.stack(snapshots)


def epoch_batches(n: int, batch: int, generator: torch.Generator,
                  device: torch.device) -> list[Tensor]:
    """One epoch's shuffled index batches (a permutation from the CPU ``generator``), moved
    to ``device`` in one copy."""
    return list(to_device(torch.randperm(n, generator=generator), device).split(batch))


def check_epoch(losses: Tensor, indices: Sequence[int], epoch: int, lr: float) -> None:
    """UserError for the first non-finite loss of an epoch (``losses``: steps x experts,
    read on the host in one go), naming the expert and the epoch."""
    losses = losses.cpu()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        step, column = bad[0].tolist()
        raise UserError(f"expert {indices[column]} at epoch {epoch + 1} diverged (loss "
                        f"{losses[step, column].item()}); lower expert_lr (now {lr:g})")


def train_experts(cfg: dict[str, Any], indices: Sequence[int], images: Tensor,
                  targets: Tensor, device: torch.device) -> list[Tensor]:
    """:func:`train_expert` for several experts at once (§2), one ``torch.func.vmap`` over
    their stacked parameters: each keeps its own seed, initialisation, shuffling and
    SGD state, so every trajectory equals its sequential one to float rounding (the
    stacked convolutions run as grouped ones)."""
    seeds = [expert_seed(cfg, index) for index in indices]
    models = [build_student(cfg, images, int(targets.shape[1]), seed).to(device).train()
              for seed in seeds]
    for model in models:
        require_buffer_free(model)
    net = FlatNet(models[0])
    theta = torch.stack([FlatNet.flatten(model) for model in models])
    step = torch.func.vmap(torch.func.grad_and_value(net.mse))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    images, targets = resident(images, device), resident(targets, device)
    snapshots = [theta.cpu()]
    buf: Tensor | None = None
    lr, momentum, wd = cfg["expert_lr"], cfg["expert_momentum"], cfg["expert_wd"]
    for epoch in range(cfg["train_epochs"]):
        orders = [epoch_batches(len(images), cfg["expert_batch"], g, images.device)
                  for g in generators]
        losses = []
        for idx in map(torch.stack, zip(*orders)):
            grad_, loss = step(theta, to_device(images[idx], device),
                               to_device(targets[idx], device))
            losses.append(loss.detach())
            # torch.optim.SGD (no dampening or Nesterov), on the stacked parameters
            if wd:
                grad_ = grad_.add(theta, alpha=wd)
            if momentum:
                buf = grad_.clone() if buf is None else buf.mul_(momentum).add_(grad_)
                grad_ = buf
            theta = theta.add(grad_, alpha=-lr)
        check_epoch(torch.stack(losses), indices, epoch, lr)
        snapshots.append(theta.cpu())
    return [t.clone() for t in torch.stack(snapshots, dim=1).unbind(0)]  # own storage each


def expert_inputs(ctx: MethodContext) -> dict[str, str]:
    """The inputs an expert artifact (and the high-loss scores) are trained on."""
    return {"representations": ctx.inputs_key}


def expert_key(cfg: dict[str, Any], index: int, inputs_key: str) -> str:
    """Cache key of expert ``index`` trained on the inputs named ``inputs_key``."""
    return ArtifactCache.key("expert", {**cfg, "index": index}, {"representations": inputs_key})


def ensure_expert(ctx: MethodContext, cfg: dict[str, Any], index: int,
                  trained: Tensor | None = None) -> Path:
    """The trajectory file of expert ``index``, trained first if not cached (§2); a
    ``trained`` trajectory (from :func:`train_experts`) is stored instead of training.
    On the CPU the training runs in :func:`retained_heap` (about 2x faster, same numbers)."""
    config = {**cfg, "index": index}

    def produce(tmp: Path) -> dict[str, Any]:
        trajectory = trained
        if trajectory is None:
            with retained_heap(ctx.device.type == "cpu"):
                trajectory = train_expert(cfg, index, ctx.images, ctx.targets, ctx.device)
        if cfg.get(HALF_KEY):
            trajectory = trajectory.half()
        torch.save(trajectory, tmp / TRAJECTORY_FILE)
        return {"snapshots": len(trajectory), "num_params": int(trajectory.shape[1]),
                "dtype": str(trajectory.dtype).removeprefix("torch.")}

    path = ctx.cache.get_or_create("expert", expert_key(cfg, index, ctx.inputs_key), produce,
                                   config=config, inputs=expert_inputs(ctx))
    return path / TRAJECTORY_FILE


def ensure_experts(ctx: MethodContext, cfg: dict[str, Any], group: int = 1) -> list[Path]:
    """The trajectory files of the K experts, training those not cached yet (§2).

    ``group`` > 1 trains the missing experts ``group`` at a time (:func:`train_experts`);
    each is still its own artifact under the same key (equal to float rounding).
    """
    if group > 1:
        missing = [index for index in range(cfg["num_experts"])
                   if not ctx.cache.exists("expert", expert_key(cfg, index, ctx.inputs_key))]
        for first in range(0, len(missing), group):
            chunk = missing[first:first + group]
            with retained_heap(ctx.device.type == "cpu"):
                trajectories = train_experts(cfg, chunk, ctx.images, ctx.targets, ctx.device)
            for index, trajectory in zip(chunk, trajectories):
                ensure_expert(ctx, cfg, index, trajectory)
    paths = []
    bar = ctx.progress.bar(cfg["num_experts"], "experts")
    for index in range(cfg["num_experts"]):
        paths.append(ensure_expert(ctx, cfg, index))
        bar.update(1)
    bar.close()
    return paths


@dataclass(frozen=True)
class ExpertUnit:
    """Training of one expert as a method sub-unit (see :meth:`Method.sub_units`)."""

    key: str
    cfg: dict[str, Any]
    index: int
    stage: str = "expert"

    def run(self, ctx: MethodContext) -> None:
        ensure_expert(ctx, self.cfg, self.index)


def expert_units(cfg: dict[str, Any], inputs_key: str) -> list[ExpertUnit]:
    """One unit per expert, so an executor can train the K experts in parallel."""
    return [ExpertUnit(expert_key(cfg, index, inputs_key), cfg, index)
            for index in range(cfg["num_experts"])]


def load_trajectories(paths: Sequence[Path]) -> list[Tensor]:
    """Memory-mapped ``(E + 1) x P`` trajectories: only the snapshots used are read. A file
    that holds anything else makes its artifact corrupt."""
    trajectories = []
    for path in paths:
        trajectory = load_artifact(path, mmap=True)
        if not (isinstance(trajectory, Tensor) and trajectory.is_floating_point()
                and trajectory.ndim == 2 and len(trajectory) > 0
                and trajectory.shape == (trajectories or [trajectory])[0].shape):
            raise corrupt_artifact(path, "not a trajectory (epochs x parameters) like the others")
        trajectories.append(trajectory)
    return trajectories
