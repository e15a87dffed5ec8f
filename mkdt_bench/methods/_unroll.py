"""The trajectory-matching engine behind MKDT (spec ``mkdt.md`` §4).

- :class:`FlatNet`, :func:`unroll` and :func:`matching_loss` are the differentiable inner
  loop of §4: N plain-SGD steps on the synthetic set from an expert snapshot, compared
  with a later snapshot of the same expert. :func:`meta_step` gives the loss and its
  gradient either through the full unrolled graph or by the exact checkpointed reverse
  pass (memory of one inner step); :func:`choose_unroll` picks one for a memory budget.
- :class:`ExpertCycle` and :func:`syn_batches` are the per-iteration random choices of §4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from mkdt_bench.device import to_device
from mkdt_bench.errors import UserError


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
                  memory_bytes: int | None) -> str:
    """``mode``, or for ``"auto"``: ``"full"`` if :func:`full_unroll_bytes` fits in
    ``memory_bytes``, else ``"checkpoint"`` (also when the memory is unknown, None)."""
    if mode not in UNROLL_MODES:
        raise UserError(f"unroll={mode!r} is not one of {', '.join(map(repr, UNROLL_MODES))}")
    if mode != "auto":
        return mode
    if memory_bytes is None:
        return "checkpoint"
    return "full" if full_unroll_bytes(module, image, batch, steps) <= memory_bytes \
        else "checkpoint"


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

    ``batches`` should be on the images' device (:func:`syn_batches` with ``device``);
    batches elsewhere are moved there first.
    """
    batches = [idx.to(images.device) for idx in batches]
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


def syn_batches(n: int, batch: int, steps: int, generator: torch.Generator,
                device: torch.device | None = None) -> list[Tensor]:
    """The ``steps`` index batches of one iteration (§4 step 2).

    Successive ``batch``-sized chunks of a fresh permutation of ``range(n)``, popped from
    the end (so the short remainder chunk comes first); a new permutation is drawn when
    the chunks run out. Leftover chunks are dropped at the end of the iteration (MTT).
    The permutations come from the CPU ``generator`` (the same batches on every device);
    with ``device`` the batches are moved there in one copy.
    """
    chunks: list[Tensor] = []
    out = []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(n, generator=generator).split(batch))
        out.append(chunks.pop())
    if device is None or device.type == "cpu":
        return out
    return list(to_device(torch.cat(out), device).split([len(idx) for idx in out]))


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
