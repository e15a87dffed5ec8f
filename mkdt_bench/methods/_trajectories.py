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
  with a later snapshot of the same expert. :func:`meta_step` gives the loss and its
  gradient either through the full unrolled graph or by the exact checkpointed reverse
  pass (memory of one inner step); :func:`choose_unroll` picks one for a memory budget.
- :class:`ExpertCycle` and :func:`syn_batches` are the per-iteration random choices of §4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.errors import UserError
from mkdt_bench.methods._alloc import retained_heap
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
        self.dtype = named[0][1].dtype
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


UNROLL_MODES = ("auto", "full", "checkpoint")

#: Peak bytes of the full unrolled graph per activation float of one inner step's forward
#: (the forward, the create_graph backward and what double backward needs). Measured on
#: the CPU, ConvNet-D3 width 128 at 32 px (``benchmarks/README.md``): 6.6-6.8 for the
#: reference-style unroll, 6.9 (1000 x 10 x 256) to 8.1 (100 x 10 x 100, fixed costs
#: included) for unroll=full in the retained heap.
GRAPH_BYTES_PER_ACTIVATION = 8.0


def activation_floats(module: nn.Module, image: Tensor) -> int:
    """Floats output by the leaf modules in a forward of one image (no graph kept)."""
    count = 0

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal count
        count += output.numel()

    leaves = [m for m in module.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            module(image[:1])
    finally:
        for handle in handles:
            handle.remove()
    return count


def full_unroll_bytes(module: nn.Module, image: Tensor, batch: int, steps: int) -> int:
    """Estimated size of the full unrolled graph of ``steps`` steps of ``batch`` images
    shaped like ``image`` (1 x C x H x W)."""
    return int(GRAPH_BYTES_PER_ACTIVATION * activation_floats(module, image) * batch * steps)


def choose_unroll(mode: str, module: nn.Module, image: Tensor, batch: int, steps: int,
                  memory_gb: float) -> str:
    """``mode``, or for ``"auto"``: ``"full"`` if :func:`full_unroll_bytes` fits in
    ``memory_gb`` GiB, else ``"checkpoint"``."""
    if mode not in UNROLL_MODES:
        raise UserError(f"unroll={mode!r} is not one of {', '.join(map(repr, UNROLL_MODES))}")
    if mode != "auto":
        return mode
    fits = full_unroll_bytes(module, image, batch, steps) <= memory_gb * 2**30
    return "full" if fits else "checkpoint"


def meta_step(net: FlatNet, start: Tensor, target: Tensor, images: Tensor, targets: Tensor,
              lr: Tensor, batches: Sequence[Tensor],
              mode: str = "full") -> tuple[Tensor, Callable[[], None]]:
    """The matching loss of one iteration (§4 steps 2-3) and a callable that accumulates
    its gradient into ``.grad`` of ``images``, ``targets`` and ``lr`` (step 4).

    ``mode="full"`` keeps the whole unrolled graph (:func:`unroll`) and calls
    ``loss.backward()``. ``mode="checkpoint"`` runs the N steps without a graph, keeping
    only θ̂₀..θ̂_N, and walks back: step n's graph is rebuilt at θ̂ₙ and the adjoint
    aₙ = ∂L/∂θ̂ₙ is pulled through it. The gradients are the full unroll's (the same
    formulas, float rounding aside) with memory for one step's graph plus N + 1 parameter
    vectors, whatever N; the price is one more first-order step per inner step.
    """
    if mode == "full":
        loss = matching_loss(unroll(net, start, images, targets, lr, batches), start, target)
        return loss.detach(), loss.backward
    if mode != "checkpoint":
        raise UserError(f"unroll={mode!r} is not one of 'full', 'checkpoint'")
    with torch.no_grad():  # θ̂₀..θ̂_N in one block: no heap fragments between the steps
        thetas = start.new_empty(len(batches) + 1, len(start))
        thetas[0] = start
        for n, idx in enumerate(batches):
            torch.sub(thetas[n], lr * net.grad(thetas[n], images[idx], targets[idx]),
                      out=thetas[n + 1])
        scale = (start - target).pow(2).sum()
        loss = (thetas[-1] - target).pow(2).sum() / scale

    def backward() -> None:
        adjoint = 2 * (thetas[-1] - target) / scale
        grad_x = torch.zeros_like(images)
        grad_y = torch.zeros_like(targets)
        grad_lr = torch.zeros_like(lr)
        step_lr = lr.detach()
        for n in range(len(batches) - 1, -1, -1):
            idx = batches[n]
            theta = thetas[n].detach().requires_grad_(n > 0)
            x = images[idx].detach().requires_grad_(True)
            y = targets[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                g = net.grad(theta, x, y)
                inputs = (theta, x, y) if n > 0 else (x, y)
                vjp = torch.autograd.grad(g, inputs, grad_outputs=-step_lr * adjoint)
            grad_lr -= torch.dot(g.detach(), adjoint)
            grad_x.index_add_(0, idx, vjp[-2])
            grad_y.index_add_(0, idx, vjp[-1])
            if n > 0:
                adjoint.add_(vjp[0])
        for leaf, grad_ in ((images, grad_x), (targets, grad_y), (lr, grad_lr)):
            leaf.grad = grad_ if leaf.grad is None else leaf.grad + grad_

    return loss, backward


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
    snapshots = [theta.cpu()]
    buf: Tensor | None = None
    lr, momentum, wd = cfg["expert_lr"], cfg["expert_momentum"], cfg["expert_wd"]
    for epoch in range(cfg["train_epochs"]):
        orders = [torch.randperm(len(images), generator=g).split(cfg["expert_batch"])
                  for g in generators]
        for idx in map(torch.stack, zip(*orders)):
            grad_, loss = step(theta, images[idx].to(device), targets[idx].to(device))
            bad = [i for i, value in zip(indices, loss.tolist()) if not math.isfinite(value)]
            if bad:
                raise UserError(f"expert {bad[0]} at epoch {epoch + 1} diverged (loss "
                                f"{loss[indices.index(bad[0])].item()}); lower expert_lr "
                                f"(now {lr:g})")
            # torch.optim.SGD (no dampening or Nesterov), on the stacked parameters
            if wd:
                grad_ = grad_.add(theta, alpha=wd)
            if momentum:
                buf = grad_.clone() if buf is None else buf.mul_(momentum).add_(grad_)
                grad_ = buf
            theta = theta.add(grad_, alpha=-lr)
        snapshots.append(theta.cpu())
    return [t.clone() for t in torch.stack(snapshots, dim=1).unbind(0)]  # own storage each


def _inputs(ctx: MethodContext) -> dict[str, str]:
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
                                   config=config, inputs=_inputs(ctx))
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
    """Memory-mapped ``(E + 1) x P`` trajectories: only the snapshots used are read."""
    return [torch.load(p, mmap=True, weights_only=True) for p in paths]


@torch.no_grad()
def kd_losses(net: FlatNet, theta: Tensor, images: Tensor, targets: Tensor,
              device: torch.device, batch: int = 512) -> Tensor:
    """Per-image KD loss (1/D)‖g_θ(xᵢ) − yᵢ‖² of every image, on the CPU."""
    theta = theta.to(device, net.dtype)
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
