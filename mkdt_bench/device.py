"""Where computation runs and how: the device a run names, copies between host and device
without waiting for the GPU, the memory a device offers, and a process's float32 precision
and determinism settings (recorded in every result row).

``--device auto`` (the default) is the first CUDA device when one is present, else the CPU.
Precision (``run.precision``; CUDA only, the CPU always computes in IEEE float32):

- ``default``: PyTorch's defaults, what the reference code ran with: convolutions in TF32
  (cuDNN), matrix products in float32;
- ``fp32``: float32 everywhere (no TF32);
- ``tf32``: TF32 for convolutions and matrix products;
- ``bf16``: ``tf32``, plus bfloat16 autocast where a method allows it (MKDT's inner unroll;
  :func:`autocast`). Its effect on the meta-gradient is measured by
  ``benchmarks/precision_check.py``.

Determinism (``run.deterministic``): the CPU always runs PyTorch's deterministic algorithms;
on CUDA they, deterministic cuDNN and a fixed cuBLAS workspace are switched on only when
asked for (slower; an operation without a deterministic CUDA kernel warns).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.errors import UserError

DEVICES = "cpu, cuda, cuda:N or auto"
PRECISIONS = ("default", "fp32", "tf32", "bf16")

#: Shares of a device's memory: what the full MKDT unroll may take (of the GPU's free
#: memory; of the host's physical memory on the CPU, a machine constant so that the choice
#: and thus the numbers do not depend on the moment), and what a training set kept
#: resident on the GPU may take.
GPU_UNROLL_SHARE = 0.9
HOST_UNROLL_SHARE = 0.5
RESIDENT_DATA_SHARE = 0.25

#: cuBLAS workspace that makes its kernels deterministic (CUDA docs, "Results reproducibility").
CUBLAS_WORKSPACE = ":4096:8"


def check_device_name(name: str) -> None:
    """One-line UserError for a device name that is none of :data:`DEVICES`."""
    if name not in ("cpu", "cuda", "auto") and not (
            name.startswith("cuda:") and name[5:].isdigit()):
        raise UserError(f"run.device={name!r} must be {DEVICES}")


def resolve_device(name: str) -> torch.device:
    """The device ``name`` means here, with its index (``cuda:0``, not ``cuda``).

    ``auto`` is the current CUDA device when CUDA is available, else the CPU. Any other
    name is passed to torch (``meta`` included, for :mod:`mkdt_bench.standin`).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} was asked for but CUDA is not available; use "
                            "--device cpu (or auto)")
        device = torch.device(name)
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= count:
            raise UserError(f"device {name!r} was asked for but this machine has {count} "
                            f"CUDA device(s): cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    return torch.device(name)


def _real_cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``. From the host to a GPU the copy goes through pinned memory
    and does not wait for the GPU (a copy from pageable memory would synchronise)."""
    if tensor.device.type == "cpu" and _real_cuda(device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_host(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) copied to the CPU, so
    that a snapshot loads on any device."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {key: to_host(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(value) for value in obj)
    return obj


def physical_memory_bytes() -> int:
    """The host's physical memory."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def unroll_budget_bytes(device: torch.device) -> int | None:
    """Memory the full MKDT unroll may take on ``device``: :data:`GPU_UNROLL_SHARE` of the
    GPU's free memory, :data:`HOST_UNROLL_SHARE` of the host's physical memory on the CPU;
    None where it is unknown (a stand-in device)."""
    if _real_cuda(device):
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_UNROLL_SHARE)
    if device.type == "cpu":
        return int(physical_memory_bytes() * HOST_UNROLL_SHARE)
    return None


def resident(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` moved to ``device`` when it takes at most :data:`RESIDENT_DATA_SHARE` of
    the GPU's free memory (then batches are gathered there, no copy per step), else
    ``tensor`` as it is (batches are gathered on the host and copied)."""
    if _real_cuda(device):
        free, _total = torch.cuda.mem_get_info(device)
        if tensor.nbytes > free * RESIDENT_DATA_SHARE:
            return tensor
    return to_device(tensor, device)


def configure(device: torch.device, precision: str = "default",
              deterministic: bool = False) -> None:
    """Apply ``precision`` and ``deterministic`` (see the module doc) to this process."""
    if precision not in PRECISIONS:
        raise UserError(f"run.precision={precision!r} is not one of "
                        f"{', '.join(map(repr, PRECISIONS))}")
    matmul, conv = {"default": ("ieee", "tf32"), "fp32": ("ieee", "ieee")}.get(
        precision, ("tf32", "tf32"))
    torch.backends.cuda.matmul.fp32_precision = matmul
    torch.backends.cudnn.conv.fp32_precision = conv
    strict = deterministic or device.type == "cpu"
    if strict and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(strict, warn_only=True)
    torch.backends.cudnn.deterministic = strict
    torch.backends.cudnn.benchmark = False
    if _real_cuda(device):
        torch.cuda.set_device(device)  # the default of calls without a device (memory stats)


def settings(device: torch.device, precision: str, deterministic: bool) -> dict[str, str]:
    """What a row's numbers depend on besides the packages: the device's name, the
    precision and determinism settings in force and the CPU threads (as strings)."""
    name = torch.cuda.get_device_name(device) if _real_cuda(device) else device.type
    return {"device_name": name, "precision": precision,
            "deterministic": str(deterministic or device.type == "cpu"),
            "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
            "cudnn_conv_fp32_precision": torch.backends.cudnn.conv.fp32_precision,
            "cudnn_deterministic": str(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": str(torch.backends.cudnn.benchmark),
            "deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
            "cpu_threads": str(torch.get_num_threads())}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast for ``precision="bf16"`` (around the parts of a method that allow
    it), else nothing."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

