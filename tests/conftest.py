"""Shared fixtures and builders: the digits data set, a tiny teacher, a method's context,
the fast teacher settings, the command line in a subprocess, and one trained fast teacher
per test session that tests copy into their own cache."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mkdt_bench.threads import configure_openmp, usable_cores

configure_openmp()  # before anything imports torch: the suite behaves on a shared machine
# Under pytest-xdist (`-n N`, the README's command) each worker gets its share of the cores
# as torch threads, and the mkdt-bench subprocesses it starts inherit it: N workers with a
# thread per core each would put N threads on every core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // _workers))

import pytest  # noqa: E402
import torch  # noqa: E402

from mkdt_bench.cache import ArtifactCache, default_cache_dir  # noqa: E402
from mkdt_bench.data import ImageDataset, load_dataset  # noqa: E402
from mkdt_bench.models import create_model  # noqa: E402

if TYPE_CHECKING:
    from mkdt_bench.methods import MethodContext

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CPU = torch.device("cpu")

# A teacher that trains in seconds on digits, and two pre-training epochs: the settings of
# every end-to-end run of the suite, so that they share one trained teacher
# (``teacher_cache``). As ``--set`` values; FAST_FLAGS spells them for the command line.
FAST_OVERRIDES = ("teacher.arch=convnet", "teacher.epochs=1", "teacher.proj_dim=64",
                  "teacher.batch_size=128", "pretrain.epochs=2")
FAST_FLAGS = ("--no-progress", *(a for o in FAST_OVERRIDES for a in ("--set", o)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most ``slow`` tests first, each file's own order kept: pytest-xdist
    hands whole files to its workers in this order (``--dist loadfile
    --no-loadscope-reorder`` in pyproject.toml), so the long files start at once, the short
    ones fill in around them, and the workers finish together."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


def cli(*args: str, cache: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """``mkdt-bench ARGS`` in a subprocess with ``MKDT_BENCH_CACHE=cache`` and ``env`` set."""
    environ = dict(os.environ, **env)
    if cache is not None:
        environ["MKDT_BENCH_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=600)


@pytest.fixture
def cli_here(monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """``mkdt-bench ARGS`` in this process, without the seconds of imports a subprocess
    starts with: ``(exit status, stdout, stderr)``. ``cache`` sets ``MKDT_BENCH_CACHE`` and
    ``env`` more variables until the test ends; argparse's exit is a status like any other;
    this process's torch threads and warning format are restored after each call."""
    from mkdt_bench.cli import main

    def run(*args: str, cache: Path | None = None, **env: str) -> tuple[int, str, str]:
        if cache is not None:
            monkeypatch.setenv("MKDT_BENCH_CACHE", str(cache))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
        threads = torch.get_num_threads()
        capsys.readouterr()
        try:
            status = main(list(args))
        except SystemExit as stop:
            status = stop.code
        finally:
            torch.set_num_threads(threads)
        out, err = capsys.readouterr()
        return status, out, err

    return run


def tiny_teacher(channels: int = 3, device: torch.device = CPU) -> torch.nn.Module:
    """A frozen 2-wide, 2-deep ConvNet on 8x8 images (8-d features), the same every call."""
    torch.manual_seed(7)
    return create_model("convnet", in_channels=channels, image_size=8, out_dim=1, width=2,
                        depth=2).eval().to(device)


def method_context(images: torch.Tensor, targets: torch.Tensor, root: Path, *,
                   scratch: Path | None = None, budget: int = 6, seed: int = 0,
                   device: torch.device = CPU, labels: torch.Tensor | None = None,
                   mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                   load_teacher: Callable[[], torch.nn.Module] | None = None,
                   source: str = "tiny", inputs_key: str = "tiny-inputs") -> MethodContext:
    """A method's context over ``images`` and ``targets`` with its cache at ``root`` and its
    snapshots in ``scratch`` (default ``root/scratch``); images are taken as normalised with
    mean 0 and std 1 per channel unless ``mean`` and ``std`` say otherwise."""
    # imported here: a broken plug-in fails the tests that build contexts, not every file
    from mkdt_bench.methods import MethodContext

    channels = images.shape[1]
    return MethodContext(source=source, images=images, targets=targets,
                         mean=mean or (0.0,) * channels, std=std or (1.0,) * channels,
                         budget=budget, seed=seed, device=device, cache=ArtifactCache(root),
                         inputs_key=inputs_key,
                         scratch=scratch if scratch is not None else root / "scratch",
                         load_teacher=load_teacher, labels=labels)


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    """The embedded digits data set (1,437 training and 360 test images, 1x8x8)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fast_teacher_template(tmp_path_factory) -> Path:
    """A cache holding only the FAST_OVERRIDES teacher of digits and its representations.

    Trained once per test session by a real ``mkdt-bench run``, shared by the pytest-xdist
    workers of the session (the first one trains it under a file lock); never written to
    after that: tests take copies (``teacher_cache``)."""
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # the session's folder, above each worker's own
    template = base / "fast-teacher"
    with open(base / "fast-teacher.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / "artifacts" / "representations").is_dir():
            build = base / "fast-teacher.build"
            shutil.rmtree(build, ignore_errors=True)
            run = cli("run", "--methods", "none", "--seeds", "0", "--fractions", "0.01",
                      "--evaluators", "knn", "--executor", "inprocess", *FAST_FLAGS,
                      cache=build, OMP_NUM_THREADS="1")
            assert run.returncode == 0, run.stderr
            template.mkdir()
            for stage in ("teacher", "representations"):
                shutil.copytree(build / "artifacts" / stage, template / "artifacts" / stage)
            shutil.rmtree(build)
    return template


@pytest.fixture
def teacher_cache(fast_teacher_template, tmp_path) -> Path:
    """``tmp_path/cache``: a cache that holds a copy of the session's FAST_OVERRIDES teacher
    and its representations of digits, and nothing else."""
    cache = tmp_path / "cache"
    shutil.copytree(fast_teacher_template, cache)
    return cache


@pytest.fixture(scope="session")
def cifar10_jpeg_dir() -> Path:
    """The CIFAR-10 JPEG copy (``train/`` and ``test/``) unpacked outside the repository.

    Unpacked once from ``../shared/data/cifar10-jpeg.tar.gz`` into
    ``<default cache>/data/cifar10-jpeg`` and reused; skips where the archive is absent.
    """
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {archive}")
    target = default_cache_dir() / "data" / "cifar10-jpeg"
    if not (target / "train").is_dir() or not (target / "test").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".cifar10-jpeg."))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            tmp.rename(target)
        except OSError:
            if not (target / "train").is_dir():  # not a concurrent unpack that won the race
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# The suite checks CPU numbers bit for bit, also through ``mkdt-bench run`` subprocesses whose
# ``--device`` defaults to ``auto``: it runs on the CPU unless CUDA_VISIBLE_DEVICES is set.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
