"""Running the official repositories' code from a local checkout, on the CPU, without their
data, wandb account or GPU (used by ``make_fixtures.py`` and ``benchmarks/distill_speed.py
--reference``).

Nothing of the reference code is copied: its modules are imported from the given directory.
What is replaced, and only for the duration of a call, is listed here:

- :func:`stub_wandb`: a ``wandb`` module whose ``init`` keeps ``config`` (``distill.py``
  rebuilds its ``args`` from ``wandb.config._items``) and whose other calls do nothing;
- :func:`no_cuda`: ``Tensor.cuda`` returns the tensor (``distill.py`` L120 moves the saved
  images to the GPU unconditionally) and ``Tensor.cpu`` returns a copy, as it does for a
  GPU tensor (``buffer.py`` L50/L60 snapshot ``p.detach().cpu()``: on the CPU without a
  copy every snapshot would be a view of the live parameters);
- :func:`remapped_paths`: the hard-coded ``/home/...`` paths of ``sort_dset.py`` and
  ``get_target_rep.py`` are redirected into a temporary directory (``torch.load``,
  ``torch.save``, ``open``, ``os.makedirs``, ``os.path.exists``);
- :func:`pinned_clock`: ``utils.get_network`` reseeds torch from ``time.time()``; the clock
  it reads is pinned so that a run is repeatable;
- the data sets their ``get_dataset`` returns (:class:`TensorImages`), and the shuffled
  loaders where a batch order must be known.

Observers that change nothing (:class:`Recorder`) note gradients, random draws and
progress-bar values the reference code computes but does not return.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def git_commit(directory: Path) -> str:
    """The checked-out commit of ``directory`` ("unknown" outside a git work tree)."""
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


@contextlib.contextmanager
def reference_modules(directory: Path) -> Iterator[Callable[[str], types.ModuleType]]:
    """Import modules from the reference checkout ``directory`` (first on ``sys.path``);
    yields ``importlib.import_module``. The imported modules are dropped afterwards, so
    the other repository's ``utils`` does not collide."""
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(directory))
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            if str(directory) in str(getattr(module, "__file__", "") or ""):
                del sys.modules[name]


def stub_wandb() -> types.ModuleType:
    """Install (and return) a ``wandb`` stand-in: ``init(config=...)`` keeps the config."""
    wandb = types.ModuleType("wandb")

    def init(*_args: Any, config: Any = None, **_kwargs: Any) -> None:
        items = dict(vars(config)) if config is not None else {}
        wandb.config = types.SimpleNamespace(_items=items, **items)

    wandb.init = init
    wandb.config = types.SimpleNamespace(_items={})
    wandb.log = wandb.finish = lambda *a, **k: None
    wandb.Image = lambda *a, **k: None
    sys.modules["wandb"] = wandb
    return wandb


@contextlib.contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    """``setattr(target, name, value)`` for the duration of the block."""
    old = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, old)


@contextlib.contextmanager
def no_cuda() -> Iterator[None]:
    """CPU runs of code written for a GPU: ``Tensor.cuda`` returns the tensor itself,
    ``Tensor.cpu`` a copy (what moving a GPU tensor to the CPU gives)."""
    to_cpu = torch.Tensor.cpu

    def copying_cpu(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = to_cpu(self, *args, **kwargs)
        return out.clone() if out.data_ptr() == self.data_ptr() else out

    with patched(torch.Tensor, "cuda", lambda self, *a, **k: self), \
            patched(torch.Tensor, "cpu", copying_cpu):
        yield


@contextlib.contextmanager
def remapped_paths(prefix: str, target: Path) -> Iterator[None]:
    """Paths starting with ``prefix`` are read and written under ``target`` instead."""

    def remap(path: Any) -> Any:
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if text is not None and text.startswith(prefix):
            return str(target / text[len(prefix):].lstrip("/"))
        return path

    load, save, open_, makedirs, exists = (torch.load, torch.save, builtins.open, os.makedirs,
                                           os.path.exists)
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(torch, "load", lambda f, *a, **k: load(remap(f), *a, **k)))
        stack.enter_context(patched(torch, "save", lambda o, f, *a, **k: save(o, remap(f), *a,
                                                                               **k)))
        stack.enter_context(patched(builtins, "open", lambda f, *a, **k: open_(remap(f), *a,
                                                                               **k)))
        stack.enter_context(patched(os, "makedirs", lambda p, *a, **k: makedirs(remap(p), *a,
                                                                                **k)))
        stack.enter_context(patched(os.path, "exists", lambda p: exists(remap(p))))
        yield


class _PinnedTime(types.ModuleType):
    """The ``time`` module with a fixed ``time()``, or one that advances by ``step``
    seconds at every call."""

    def __init__(self, now: float, step: float = 0.0) -> None:
        super().__init__("time")
        self._now, self._step = now, step

    def time(self) -> float:
        now, self._now = self._now, self._now + self._step
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def pinned_clock(module: types.ModuleType, seed: int, advance: bool = False) -> Iterator[None]:
    """``module.time.time()`` returns a value from which MKDT's ``get_network`` derives the
    seed ``seed`` (``int(time.time() * 1000) % 100000``, ``utils.py`` L261); with
    ``advance`` the clock moves on by 1 ms at every call (seeds ``seed``, ``seed + 1``, ...,
    as successive calls of a real clock would give different ones)."""
    if not 0 <= seed < 100_000:
        raise ValueError(f"a clock seed is below 100000, got {seed}")
    with patched(module, "time", _PinnedTime((seed + 0.5) / 1000, 1e-3 if advance else 0.0)):
        yield


class TensorImages(torch.utils.data.Dataset):
    """What the reference ``get_dataset`` returns for our images: ``(image, label)`` pairs of
    the given (already normalised) tensors."""

    def __init__(self, images: Tensor, labels: Tensor | None = None) -> None:
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(len(images),
                                                                    dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


def fake_get_dataset(images: Tensor, labels: Tensor | None = None) -> Callable[..., tuple]:
    """A stand-in for MKDT's ``utils.get_dataset`` (``channel, im_size, num_classes,
    dst_train, dst_test``) serving ``images``."""
    dataset = TensorImages(images, labels)

    def get_dataset(*_args: Any, **_kwargs: Any) -> tuple:
        return images.shape[1], tuple(images.shape[-2:]), 10, dataset, dataset

    return get_dataset


class Recorder:
    """Observers of values the reference code computes but does not return."""

    def __init__(self) -> None:
        self.randperms: list[Tensor] = []
        self.steps: list[dict[str, list[Tensor]]] = []
        self.postfix: list[dict[str, Any]] = []
        self.ticks: list[float] = []

    @contextlib.contextmanager
    def randperm(self) -> Iterator[None]:
        """Record every ``torch.randperm`` result."""
        original = torch.randperm

        def recording(*args: Any, **kwargs: Any) -> Tensor:
            out = original(*args, **kwargs)
            self.randperms.append(out.clone())
            return out

        with patched(torch, "randperm", recording):
            yield

    @contextlib.contextmanager
    def sgd_steps(self) -> Iterator[None]:
        """Record, for every ``torch.optim.SGD.step``, the gradients before and the parameters
        after (in the order the optimizers step)."""
        recorder = self

        class RecordingSGD(torch.optim.SGD):
            def step(self, closure: Any = None) -> Any:
                params = [p for group in self.param_groups for p in group["params"]]
                grads = [p.grad.detach().clone() for p in params]
                out = super().step(closure)
                recorder.steps.append({"grads": grads,
                                       "params": [p.detach().clone() for p in params]})
                return out

        with patched(torch.optim, "SGD", RecordingSGD):
            yield

    def tqdm(self, iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A ``tqdm`` stand-in that iterates, notes ``set_postfix`` values and the time at
        which each item is handed out."""
        recorder = self

        class Bar:
            def __iter__(self) -> Iterator[Any]:
                for item in iterable:
                    recorder.ticks.append(time.perf_counter())
                    yield item
                recorder.ticks.append(time.perf_counter())

            def set_postfix(self, values: dict[str, Any], *a: Any, **k: Any) -> None:
                recorder.postfix.append(dict(values))

            def set_description(self, *a: Any, **k: Any) -> None:
                pass

            def update(self, *a: Any, **k: Any) -> None:
                pass

            def close(self) -> None:
                pass

        return Bar()
