"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from mkdt_bench.threads import configure_openmp, usable_cores

configure_openmp()  # before anything imports torch: the suite behaves on a shared machine
# Under pytest-xdist (`-n N`, the README's command) each worker gets its share of the cores
# as torch threads, and the mkdt-bench subprocesses it starts inherit it: N workers with a
# thread per core each would put N threads on every core.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cores() // _workers))

import pytest  # noqa: E402

from mkdt_bench.cache import default_cache_dir  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
