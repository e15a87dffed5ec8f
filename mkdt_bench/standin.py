"""A CUDA stand-in: run GPU code paths on a machine without a GPU to check device placement.

Inside :func:`device_standin`, tensors on the stand-in device hold no data: ``"meta"``
tensors, or ``"cuda"`` tensors of PyTorch's ``FakeTensorMode``. Their kernels apply the
cross-device checks of real CUDA kernels, so a CPU tensor meeting a device tensor where a
GPU would refuse it (an index on the wrong device, a generator state moved to the GPU)
raises the GPU's error. Everything else is real:

- operations on CPU tensors only run as usual (generators, caches, snapshots, data);
- reading device data on the host (``.item()``, ``bool(t)``, ``.cpu()``, ``.tolist()``,
  a copy into a CPU tensor) returns ones instead of failing, so that whole stages run to
  their end. Device results are therefore meaningless; only placement, shapes and dtypes
  are checked;
- ``torch.load`` reads the stored data (under ``FakeTensorMode`` PyTorch would otherwise
  load data-less tensors).

Limits: fake CUDA tensors cannot run a backward pass here (PyTorch's autograd engine asks
the CUDA driver about the device), so paths with a backward pass use ``"meta"``; code that
asks ``torch.cuda`` itself (memory, streams, pinned memory) takes its no-GPU branch.

Host reads are counted (``StandIn.host_reads``): on a GPU each one waits for the device,
so a hot loop should have none per step.

Example::

    with device_standin("meta") as standin:
        distilled = create_method("mkdt", ...).distill(replace(ctx, device=standin.device))
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

STANDINS = ("meta", "cuda")

_aten = torch.ops.aten


def _placeholder(like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Real CPU ones shaped like ``like``: what a host read of device data returns."""
    with _disable_current_modes():
        return torch.ones(like.shape, dtype=dtype or like.dtype)


def _scalar(like: torch.Tensor) -> bool | int | float:
    if like.dtype == torch.bool:
        return True
    return 1.0 if like.is_floating_point() else 1


@dataclass
class StandIn:
    """The stand-in device and the number of host reads of its data so far."""

    device: torch.device
    host_reads: int = 0


class _HostPlaceholders(TorchDispatchMode):
    """Host reads of stand-in device tensors give ones; CPU-only work runs for real."""

    def __init__(self, fake: FakeTensorMode | None, standin: StandIn) -> None:
        super().__init__()
        self.fake = fake
        self.standin = standin

    def _on_device(self, value: Any) -> bool:
        """A stand-in device tensor: fake (CUDA) ones, or with the meta stand-in meta ones
        (elsewhere meta tensors are host machinery, e.g. of ``torch.load``)."""
        if not isinstance(value, torch.Tensor):
            return False
        return isinstance(value, FakeTensor) if self.fake else value.device.type == "meta"

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        if any(self._on_device(a) for a in flat):
            if func is _aten._local_scalar_dense.default:
                self.standin.host_reads += 1
                return _scalar(args[0])
            target = kwargs.get("device")
            if func is _aten._to_copy.default and target is not None and \
                    torch.device(target).type == "cpu":
                self.standin.host_reads += 1
                return _placeholder(args[0], kwargs.get("dtype"))
            dst = args[0] if args else None
            if func is _aten.copy_.default and not self._on_device(dst) and \
                    self._on_device(args[1]):
                self.standin.host_reads += 1
                with _disable_current_modes():
                    return dst.fill_(1)
            return func(*args, **kwargs)  # the device kernel (fake or meta) and its checks
        to_fake = self.fake is not None and any(
            isinstance(a, torch.device) and a.type == "cuda" for a in flat)
        if to_fake:
            return func(*args, **kwargs)  # FakeTensorMode makes the CUDA tensor
        with _disable_current_modes():
            return func(*args, **kwargs)  # host work (or meta for the meta stand-in)


def _host_load(load: Any) -> Any:
    """``torch.load`` outside the stand-in's modes: the stored data, as stored."""

    @functools.wraps(load)
    def host_load(*args: Any, **kwargs: Any) -> Any:
        with _disable_current_modes():
            return load(*args, **kwargs)

    return host_load


@contextmanager
def device_standin(kind: str = "meta") -> Iterator[StandIn]:
    """Within the block, ``kind`` ("meta" or "cuda") is a data-less stand-in device with
    real host code around it (see the module doc); yields the :class:`StandIn`, whose
    ``device`` to compute on."""
    if kind not in STANDINS:
        raise ValueError(f"stand-in {kind!r} is not one of {', '.join(STANDINS)}")
    standin = StandIn(torch.device("cuda", 0) if kind == "cuda" else torch.device(kind))
    with ExitStack() as stack:
        fake = None
        if kind == "cuda":
            fake = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(_HostPlaceholders(fake, standin))
        stack.enter_context(mock.patch.object(torch, "load", _host_load(torch.load)))
        yield standin
