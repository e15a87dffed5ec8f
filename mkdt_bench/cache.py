"""Content-addressed artifact cache.

An artifact is a directory ``<root>/artifacts/<stage>/<key>/`` holding the stage's files
and a ``manifest.json`` (stage, key, resolved config, input keys, sha256 of every file).
The key is a hash of the stage name, its resolved config and the keys of its inputs, so
a changed setting or a changed input produces a new artifact and a rerun reuses the rest.

Writes are atomic: the producer fills a temporary directory beside the final one, the
manifest is written last, and one ``os.rename`` publishes it. A file lock around each
producer stops two processes from computing the same artifact. Resumable producers get a
stable scratch directory (:meth:`ArtifactCache.scratch`) for their snapshots.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from mkdt_bench.errors import UserError
from mkdt_bench.memory import PeakMemory

MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """``$MKDT_BENCH_CACHE`` if set, else ``~/.cache/mkdt-bench``."""
    env = os.environ.get("MKDT_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mkdt-bench"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-serialisable object (key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file, then rename)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def check_writable(root: str | Path) -> None:
    """A UserError when ``root`` cannot become a cache directory; creates nothing (the
    nearest existing folder on its path must be a writable folder)."""
    path = Path(root).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cache directory {str(path)!r} is not writable "
                        f"({str(existing)!r} is not a writable folder); "
                        "choose another with --cache-dir")


class ArtifactCache:
    """Artifacts keyed by ``(stage, key)`` under ``root``.

    Example::

        cache = ArtifactCache("~/.cache/mkdt-bench")
        key = cache.key("teacher", config, inputs={"data": fingerprint})
        path = cache.get_or_create("teacher", key, produce=lambda d: train_into(d),
                                   config=config)
    """

    def __init__(self, root: str | Path, create: bool = True) -> None:
        """``create=False``: a read-only view (``exists``, ``manifest``, ``artifacts``) that
        creates nothing, for planning (``mkdt-bench run --dry-run``)."""
        self.root = Path(root).expanduser()
        if not create:
            return
        try:
            (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cache directory {str(self.root)!r} is not writable ({e.strerror}); "
                            "choose another with --cache-dir") from None
        if not os.access(self.root / "artifacts", os.W_OK):
            raise UserError(f"cache directory {str(self.root)!r} is not writable; "
                            "choose another with --cache-dir")

    @staticmethod
    def key(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> str:
        return config_hash({"stage": stage, "config": config, "inputs": dict(inputs or {})})

    def path(self, stage: str, key: str) -> Path:
        return self.root / "artifacts" / stage / key

    def scratch(self, stage: str, key: str) -> Path:
        """A stable directory for a producer's resumable snapshots; removed once published."""
        p = self.root / "scratch" / stage / key
        p.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    def manifest(self, stage: str, key: str) -> dict[str, Any]:
        return json.loads((self.path(stage, key) / MANIFEST).read_text())

    def verify(self, stage: str, key: str) -> list[str]:
        """Names of files whose checksum no longer matches the manifest (empty when intact)."""
        path = self.path(stage, key)
        bad = []
        for name, digest in self.manifest(stage, key)["files"].items():
            f = path / name
            if not f.is_file() or file_sha256(f) != digest:
                bad.append(name)
        return bad

    def artifacts(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every published artifact."""
        return sorted((m.parent.parent.name, m.parent.name)
                      for m in (self.root / "artifacts").glob(f"*/*/{MANIFEST}"))

    def prune(self, keep: set[str], apply: bool = False) -> list[tuple[Path, int]]:
        """Artifacts whose ``stage/key`` is not in ``keep``, moved-aside corrupt copies and
        abandoned temporary directories, with their sizes in bytes; ``apply`` deletes them
        (and their scratch directories). Nothing is deleted without ``apply``."""
        doomed = [self.path(stage, key) for stage, key in self.artifacts()
                  if f"{stage}/{key}" not in keep]
        for stage_dir in (self.root / "artifacts").iterdir():
            if stage_dir.is_dir():
                doomed += [p for p in stage_dir.iterdir() if p.is_dir() and (
                    ".corrupt-" in p.name or (p.name.startswith(".") and p.name.endswith(".tmp")))]
        out = [(p, sum(f.stat().st_size for f in p.rglob("*") if f.is_file())) for p in doomed]
        if apply:
            for path, _ in out:
                shutil.rmtree(path, ignore_errors=True)
                shutil.rmtree(self.root / "scratch" / path.parent.name / path.name,
                              ignore_errors=True)
        return out

    def get_or_create(
        self,
        stage: str,
        key: str,
        produce: Callable[[Path], Mapping[str, Any] | None],
        config: Mapping[str, Any] | None = None,
        inputs: Mapping[str, str] | None = None,
    ) -> Path:
        """The artifact's directory, producing it first when it is missing or corrupt.

        ``produce(tmp_dir)`` writes the artifact's files into ``tmp_dir`` and may return
        extra metadata for the manifest (timings, metrics). The manifest records the wall
        time and peak memory (:class:`~mkdt_bench.memory.PeakMemory`) of the ``produce``
        call that completed it (a resumed stage: of its last attempt).
        """
        final = self.path(stage, key)
        if self._intact(stage, key):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if self._intact(stage, key):  # another process finished it meanwhile
                return final
            for stale in final.parent.glob(f".{key}.*.tmp"):  # left by a killed producer
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
            tmp.mkdir()
            try:
                start = time.perf_counter()
                with PeakMemory() as memory:
                    extra = produce(tmp) or {}
                seconds = time.perf_counter() - start
                files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
                manifest = {
                    "stage": stage, "key": key, "config": dict(config or {}),
                    "inputs": dict(inputs or {}), "files": files, "seconds": seconds,
                    **memory.result(), "created": time.time(), **extra,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(self.root / "scratch" / stage / key, ignore_errors=True)
        return final

    def _intact(self, stage: str, key: str) -> bool:
        """True for a complete artifact; a corrupt one is moved aside (and reported) instead."""
        if not self.exists(stage, key):
            return False
        try:
            bad = self.verify(stage, key)
        except (OSError, ValueError, KeyError):
            bad = [MANIFEST]
        if not bad:
            return True
        path = self.path(stage, key)
        aside = path.with_name(f"{key}.corrupt-{int(time.time())}")
        os.rename(path, aside)
        import warnings

        warnings.warn(f"corrupt artifact {path} ({', '.join(bad)}): moved to {aside}, recomputing",
                      stacklevel=2)
        return False
