"""Content-addressed artifact cache.

An artifact is a directory ``<root>/artifacts/<stage>/<key>/`` holding the stage's files
and a ``manifest.json`` (stage, key, resolved config, input keys, sha256 of every file).
The key is a hash of the stage name, its resolved config and the keys of its inputs, so
a changed setting or a changed input produces a new artifact and a rerun reuses the rest.

Writes are atomic: the producer fills a temporary directory beside the final one, the
manifest is written last, and one ``os.rename`` publishes it. A file lock around each
producer stops two processes from computing the same artifact. Resumable producers get a
stable scratch directory (:meth:`ArtifactCache.scratch`) for their snapshots.

Freshness (make's rule, without clocks): a manifest records ``built_from``, the
``created`` stamp of every artifact it was computed from. An artifact whose input has
been recomputed since (another stamp), or one created before a ``fresh_after`` time
(``--recompute``), is stale: the next request computes a replacement, which takes its
place only once complete.
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


def is_stale(manifest: Mapping[str, Any], built_from: Mapping[str, float],
             fresh_after: float = 0.0) -> bool:
    """Whether an artifact (its manifest) predates ``fresh_after`` or one of its inputs
    ``built_from``: recorded with another ``created`` stamp, or, for an artifact from before
    stamps were recorded, created after it."""
    created = float(manifest.get("created", 0.0))
    if created < fresh_after:
        return True
    recorded = manifest.get("built_from")
    for artifact, stamp in built_from.items():
        if recorded is not None and artifact in recorded:
            if float(recorded[artifact]) != stamp:
                return True
        elif stamp > created:
            return True
    return False


class ArtifactCache:
    """Artifacts keyed by ``(stage, key)`` under ``root``.

    Example::

        cache = ArtifactCache("~/.cache/mkdt-bench")
        key = cache.key("teacher", config, inputs={"data": fingerprint})
        path = cache.get_or_create("teacher", key, produce=lambda d: train_into(d),
                                   config=config)
    """

    def __init__(self, root: str | Path, built_from: Mapping[str, float] | None = None,
                 fresh_after: float = 0.0, create: bool = True) -> None:
        """``built_from`` and ``fresh_after``: the defaults of :meth:`get_or_create` (a
        method's context gets those of its distillation, so that the artifacts the method
        caches itself follow its inputs). ``create=False``: a read-only view (``exists``,
        ``manifest``, ``artifacts``) that creates nothing, for planning
        (``mkdt-bench run --dry-run``)."""
        self.root = Path(root).expanduser()
        self.built_from = dict(built_from or {})
        self.fresh_after = fresh_after
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

    def stamps(self, artifacts: list[str]) -> dict[str, float]:
        """``{"stage/key": created}`` of the published artifacts among ``artifacts``: what a
        product of them records as ``built_from``."""
        out = {}
        for artifact in artifacts:
            stage, key = artifact.split("/", 1)
            if self.exists(stage, key):
                out[artifact] = float(self.manifest(stage, key)["created"])
        return out

    def current(self, stage: str, key: str, built_from: Mapping[str, float] | None = None,
                fresh_after: float = 0.0) -> bool:
        """Published, created after ``fresh_after``, and computed from the present versions
        of its inputs ``built_from`` (``{"stage/key": created}`` as they are now)."""
        if not self.exists(stage, key):
            return False
        return not is_stale(self.manifest(stage, key), built_from or {}, fresh_after)

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
        built_from: Mapping[str, float] | None = None,
        fresh_after: float | None = None,
    ) -> Path:
        """The artifact's directory, producing it first when it is missing, corrupt or stale.

        ``produce(tmp_dir)`` writes the artifact's files into ``tmp_dir`` and may return
        extra metadata for the manifest (timings, metrics). The manifest records the wall
        time and peak memory (:class:`~mkdt_bench.memory.PeakMemory`) of the ``produce``
        call that completed it (a resumed stage: of its last attempt).

        ``built_from`` (``{"stage/key": created}`` of the inputs as they are now; default:
        the cache's own, less this stage's) is recorded; a stored artifact recorded with
        other stamps, or created before ``fresh_after`` (default: the cache's), is stale
        and replaced by a new one, atomically once complete; its snapshots in the scratch
        directory are discarded first.
        """
        if built_from is None:
            built_from = {a: t for a, t in self.built_from.items()
                          if a.split("/", 1)[0] != stage}
        fresh_after = self.fresh_after if fresh_after is None else fresh_after
        final = self.path(stage, key)
        if self._intact(stage, key) and self.current(stage, key, built_from, fresh_after):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if self._intact(stage, key):
                if self.current(stage, key, built_from, fresh_after):
                    return final  # another process finished it meanwhile
                # stale: snapshots of its computation are stale too
                shutil.rmtree(self.root / "scratch" / stage / key, ignore_errors=True)
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
                    "inputs": dict(inputs or {}), "built_from": dict(built_from),
                    "files": files, "seconds": seconds, **memory.result(),
                    "created": time.time(), **extra,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
                if final.exists():  # a stale one: out of the way, then the new one in
                    old = final.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
                    os.rename(final, old)
                    os.rename(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
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
