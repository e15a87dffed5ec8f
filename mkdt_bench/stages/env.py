"""Where a unit runs and what every stage shares: the :class:`Env` (cache, device, precision,
threads), the per-process torch settings, and the data sets a unit reads (loaded once per
process)."""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from mkdt_bench.data import ImageDataset, load_dataset
from mkdt_bench.data._decode import NotDownloaded
from mkdt_bench.device import configure, resolve_device, settings
from mkdt_bench.errors import MissingDataError, UserError
from mkdt_bench.progress import Progress
from mkdt_bench.threads import default_threads


@dataclass(frozen=True)
class Env:
    """Where a unit finds its inputs; everything a worker process needs besides the unit.

    ``device`` is what the run names (``auto``, ``cpu``, ``cuda``, ``cuda:N``);
    ``precision`` and ``deterministic`` are ``run.precision`` / ``run.deterministic``
    (:mod:`mkdt_bench.device`).
    """

    cache_dir: str
    data_root: str = ""
    device: str = "cpu"
    progress: bool = True
    threads: int = 0  # torch CPU threads per unit; 0 = torch's default
    precision: str = "default"
    deterministic: bool = False

    @property
    def torch_device(self) -> torch.device:
        """The device a unit computes on here, resolved (``cuda:0``, not ``auto``)."""
        return resolve_device(self.device)

    def settings(self) -> dict[str, str]:
        """The device's name and the precision settings in force (for result rows)."""
        return settings(self.torch_device, self.precision, self.deterministic)


def prepare_threads(env: Env) -> None:
    """The torch CPU thread count of ``env``, or where it is 0 the default of the process
    it runs in (:func:`~mkdt_bench.threads.default_threads`: a Ray worker's
    ``OMP_NUM_THREADS``, else one per usable core)."""
    torch.set_num_threads(env.threads or default_threads())


def prepare_process(env: Env) -> torch.device:
    """Torch settings every unit applies first (workers are separate processes): threads,
    precision, determinism and the current CUDA device; returns the unit's device."""
    prepare_threads(env)
    device = env.torch_device
    configure(device, env.precision, env.deterministic)
    return device


def error_text(error: BaseException) -> str:
    """``Type: message`` on one line, for a failed row."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def package_versions() -> dict[str, str]:
    """Python, the packages a row's numbers depend on, and the git revision."""
    versions = {"python": platform.python_version()}
    for name in ("mkdt-bench", "torch", "torchvision", "timm", "lightly"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["git"] = _git_revision()
    return versions


@functools.lru_cache(maxsize=1)
def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, data_root: str, cache_dir: str,
            image_size: int | None = None) -> ImageDataset:
    """A data set, loaded once per process."""
    return load_dataset(name, root=data_root or None, cache_dir=cache_dir, image_size=image_size)


@functools.lru_cache(maxsize=2)
def normalized_train(name: str, data_root: str, cache_dir: str) -> torch.Tensor:
    """A data set's normalised training images, built once per process."""
    return cached_dataset(name, data_root, cache_dir).normalized("train")


def load_tasks(names: list[str], env: Env, source: ImageDataset) -> dict[str, str]:
    """Load every downstream task at the source resolution (resizing loaders only, spec
    ``evaluation.md`` A.5); returns ``{task: missing path}`` for those whose files are absent.

    A task with another channel count than the source is a UserError, and so is a grid
    whose every task is absent: it would train the teacher and score nothing (issue 29 §4).
    """
    absent: dict[str, MissingDataError] = {}
    for name in names:
        try:
            task = cached_dataset(name, env.data_root, env.cache_dir, source.image_size)
        except NotDownloaded:
            raise  # a dry run: a run would download the task, it is not missing
        except MissingDataError as e:
            absent[name] = e
            continue
        if task.channels != source.channels:
            raise UserError(f"task {name!r} has {task.channels}-channel images but the source "
                            f"{source.name!r} has {source.channels}; pick tasks with the same "
                            "number of channels")
    if names and len(absent) == len(set(names)):
        first = absent[names[0]]
        others = f" (nor have the other {len(absent) - 1})" if len(absent) > 1 else ""
        raise MissingDataError(f"downstream task {names[0]!r}: {first}{others}; no task is "
                               "left to evaluate, so nothing was run", first.path)
    for name, e in absent.items():
        Progress(env.progress).write(f"task {name!r} will be n/a: {e}")
    return {name: e.path for name, e in absent.items()}
