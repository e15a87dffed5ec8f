"""Expert trajectories and the trajectory-matching engine behind MKDT (spec ``mkdt.md`` §2-§4).

- :func:`ensure_experts` trains K students by knowledge distillation (MSE onto the teacher
  representations, §2) and stores each one's parameters at epochs 0..E as one cache
  artifact, so a killed run resumes at the next expert and every method and seed sharing
  the expert options shares the experts. :func:`expert_units` offers the same K trainings
  to an executor as independent units (same cache keys).
- :func:`high_loss_scores` scores every training image by its KD loss under the epoch-1
  snapshots, averaged over the experts (§3); cached as well.
- :class:`FlatNet`, :func:`unroll` and :func:`matching_loss` are the differentiable inner
  loop of §4: N plain-SGD steps on the synthetic set from an expert snapshot, compared
  with a later snapshot of the same expert.
- :class:`ExpertCycle` and :func:`syn_batches` are the per-iteration random choices of §4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.errors import UserError
from mkdt_bench.methods.base import MethodContext
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.seeding import derive_seed
from mkdt_bench.training import checked_step

#: Options that define the experts (§2), shared by ``mkdt`` and ``highloss``.
EXPERT_DEFAULTS: dict[str, Any] = {
    "student": "convnet",
    "width": 128,
    "num_experts": 100,
    "train_epochs": 20,
    "expert_lr": 0.1,
    "expert_momentum": 0.9,
    "expert_wd": 1e-4,
    "expert_batch": 256,
}

#: The snapshot the high-loss initialisation scores with: after epoch 1 (§3; bug 12).
SCORE_EPOCH = 1

TRAJECTORY_FILE = "trajectory.pt"


def expert_config(options: dict[str, Any]) -> dict[str, Any]:
    """The expert part of a method's options (what names an expert artifact)."""
    return {key: options[key] for key in EXPERT_DEFAULTS}


def check_expert_config(where: str, cfg: dict[str, Any]) -> None:
    """One-line UserError for expert options no expert can be trained with."""
    for key in ("num_experts", "train_epochs", "expert_batch"):
        if cfg[key] < 1:
            raise UserError(f"{where}: {key}={cfg[key]} must be at least 1")
    if cfg["width"] < 0:
        raise UserError(f"{where}: width={cfg['width']} must be 0 or more (0 = the student's "
                        "default)")


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


def require_buffer_free(module: nn.Module) -> None:
    """UserError for students with buffers (batch-norm statistics): snapshots hold parameters
    only (§2) and the functional inner loop has no place for running statistics."""
    if next(module.buffers(), None) is not None:
        raise UserError(f"trajectory matching needs a student without buffers; "
                        f"{type(module).__name__} has some (batch-norm statistics?): use the "
                        "instance-norm convnet")


class FlatNet:
    """A buffer-free module as a function of one flat parameter vector (MTT's ReparamModule).

    The flat layout is ``module.parameters()`` order, the layout of a stored snapshot (§2).

    Example::

        net = FlatNet(model)
        theta = net.flatten(model)
        out = net(theta, x)                   # model(x) with parameters theta
        g = net.grad(theta, x, y)             # d MSE(net(theta, x), y) / d theta
    """

    def __init__(self, module: nn.Module) -> None:
        require_buffer_free(module)
        named = list(module.named_parameters())
        self.module = module
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.num_params = sum(self.numels)
        self.grad = grad(self.mse)

    @staticmethod
    def flatten(module: nn.Module) -> Tensor:
        """The module's current parameters as one detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        return {name: t.view(shape)
                for name, t, shape in zip(self.names, flat.split(self.numels), self.shapes)}

    def __call__(self, flat: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.module, self.unflatten(flat), (x,))

    def mse(self, flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The KD loss ``nn.MSELoss`` (mean over batch x D) of §2 and §4."""
        return F.mse_loss(self(flat, x), y)


def unroll(net: FlatNet, theta: Tensor, images: Tensor, targets: Tensor, lr: Tensor,
           batches: Sequence[Tensor]) -> Tensor:
    """θ̂_N from θ̂_0 = ``theta``: one plain-SGD step per index batch b (§4 step 2).

    θ̂ₙ₊₁ = θ̂ₙ − η̃ ∇_θ MSE(g_θ̂ₙ(X̃_b), Ỹ_b), no momentum or weight decay. The result is
    differentiable w.r.t. ``images``, ``targets`` and ``lr`` through the whole chain.
    """
    for idx in batches:
        theta = theta - lr * net.grad(theta, images[idx], targets[idx])
    return theta


def matching_loss(theta_n: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """L = ‖θ̂_N − θ_{t+M}‖² / ‖θ_t − θ_{t+M}‖² (§4 step 3)."""
    return (theta_n - target).pow(2).sum() / (start - target).pow(2).sum()


def syn_batches(n: int, batch: int, steps: int, generator: torch.Generator) -> list[Tensor]:
    """The ``steps`` index batches of one iteration (§4 step 2).

    Successive ``batch``-sized chunks of a fresh permutation of ``range(n)``, popped from
    the end (so the short remainder chunk comes first); a new permutation is drawn when
    the chunks run out. Leftover chunks are dropped at the end of the iteration (MTT).
    """
    chunks: list[Tensor] = []
    out = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        out.append(chunks.pop())
    return out


class ExpertCycle:
    """Which expert each iteration matches (§4 step 1, §9.1).

    Every pass visits all K experts once, in a fresh order drawn from ``generator``.
    ``single=True`` reproduces bug 5 ([J] HEAD): the first expert drawn is used forever.
    """

    def __init__(self, num_experts: int, generator: torch.Generator,
                 single: bool = False) -> None:
        self.num_experts = num_experts
        self.generator = generator
        self.single = single
        self.order: list[int] = []
        self.position = 0

    def next(self) -> int:
        if self.single and self.order:
            return self.order[0]
        if self.position >= len(self.order):
            self.order = torch.randperm(self.num_experts, generator=self.generator).tolist()
            self.position = 0
        self.position += 1
        return self.order[self.position - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order = list(state["order"])
        self.position = int(state["position"])


def expert_seed(cfg: dict[str, Any], index: int) -> int:
    """Expert ``index``'s seed: from its index and the expert options, never the run seed."""
    return derive_seed("mkdt-expert", config_hash(cfg), index)


def train_expert(cfg: dict[str, Any], index: int, images: Tensor, targets: Tensor,
                 device: torch.device) -> Tensor:
    """Train one KD student (§2); returns its ``(E + 1) x P`` trajectory on the CPU.

    SGD (``expert_lr``, ``expert_momentum``, ``expert_wd``), shuffled batches of
    ``expert_batch``, ``train_epochs`` epochs, no augmentation; row e holds the flat
    parameters after e epochs (row 0: the initialisation).
    """
    seed = expert_seed(cfg, index)
    model = build_student(cfg, images, int(targets.shape[1]), seed).to(device).train()
    require_buffer_free(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["expert_lr"],
                          momentum=cfg["expert_momentum"], weight_decay=cfg["expert_wd"])
    generator = torch.Generator().manual_seed(seed)
    snapshots = [FlatNet.flatten(model).cpu()]
    for epoch in range(cfg["train_epochs"]):
        for idx in torch.randperm(len(images), generator=generator).split(cfg["expert_batch"]):
            loss = F.mse_loss(model(images[idx].to(device)), targets[idx].to(device))
            checked_step(opt, loss, f"expert {index} at epoch {epoch + 1}",
                         f"lower expert_lr (now {cfg['expert_lr']:g})")
        snapshots.append(FlatNet.flatten(model).cpu())
    return torch.stack(snapshots)


def _inputs(ctx: MethodContext) -> dict[str, str]:
    return {"representations": ctx.inputs_key}


def expert_key(cfg: dict[str, Any], index: int, inputs_key: str) -> str:
    """Cache key of expert ``index`` trained on the inputs named ``inputs_key``."""
    return ArtifactCache.key("expert", {**cfg, "index": index}, {"representations": inputs_key})


def ensure_expert(ctx: MethodContext, cfg: dict[str, Any], index: int) -> Path:
    """The trajectory file of expert ``index``, trained first if not cached (§2)."""
    config = {**cfg, "index": index}

    def produce(tmp: Path) -> dict[str, Any]:
        trajectory = train_expert(cfg, index, ctx.images, ctx.targets, ctx.device)
        torch.save(trajectory, tmp / TRAJECTORY_FILE)
        return {"snapshots": len(trajectory), "num_params": int(trajectory.shape[1])}

    path = ctx.cache.get_or_create("expert", expert_key(cfg, index, ctx.inputs_key), produce,
                                   config=config, inputs=_inputs(ctx))
    return path / TRAJECTORY_FILE


def ensure_experts(ctx: MethodContext, cfg: dict[str, Any]) -> list[Path]:
    """The trajectory files of the K experts, training those not cached yet (§2)."""
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
    """Memory-mapped ``(E + 1) x P`` trajectories: only the snapshots used are read."""
    return [torch.load(p, mmap=True, weights_only=True) for p in paths]


@torch.no_grad()
def kd_losses(net: FlatNet, theta: Tensor, images: Tensor, targets: Tensor,
              device: torch.device, batch: int = 512) -> Tensor:
    """Per-image KD loss (1/D)‖g_θ(xᵢ) − yᵢ‖² of every image, on the CPU."""
    theta = theta.to(device)
    out = []
    for i in range(0, len(images), batch):
        pred = net(theta, images[i:i + batch].to(device))
        out.append((pred - targets[i:i + batch].to(device)).pow(2).mean(1).cpu())
    return torch.cat(out)


def high_loss_scores(ctx: MethodContext, cfg: dict[str, Any],
                     trajectories: Sequence[Tensor]) -> Tensor:
    """sᵢ = (1/K) Σₖ (1/D)‖g_{θ₁ᵏ}(xᵢ) − yᵢ‖² for every training image (§3); cached."""
    key = ctx.cache.key("expert-scores", {**cfg, "epoch": SCORE_EPOCH}, _inputs(ctx))

    def produce(tmp: Path) -> dict[str, Any]:
        model = build_student(cfg, ctx.images, int(ctx.targets.shape[1]), 0).to(ctx.device)
        net = FlatNet(model)
        total = torch.zeros(len(ctx.images), dtype=torch.float64)
        for trajectory in trajectories:
            total += kd_losses(net, trajectory[SCORE_EPOCH], ctx.images, ctx.targets,
                               ctx.device).double()
        torch.save((total / len(trajectories)).float(), tmp / "scores.pt")
        return {"epoch": SCORE_EPOCH, "experts": len(trajectories)}

    path = ctx.cache.get_or_create("expert-scores", key, produce,
                                   config={**cfg, "epoch": SCORE_EPOCH}, inputs=_inputs(ctx))
    return torch.load(path / "scores.pt", weights_only=True)


def high_loss_indices(scores: Tensor, budget: int) -> Tensor:
    """The ``budget`` highest-scoring indices, highest first (ties: lower index first)."""
    return torch.sort(scores, descending=True, stable=True).indices[:budget]


def select_high_loss(ctx: MethodContext, cfg: dict[str, Any]) -> Tensor:
    """The §3 high-loss subset of ``ctx.budget`` images (experts trained if missing)."""
    trajectories = load_trajectories(ensure_experts(ctx, cfg))
    return high_loss_indices(high_loss_scores(ctx, cfg, trajectories), ctx.budget)
