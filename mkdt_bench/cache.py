"""Content-addressed artifact cache.

An artifact is a directory ``<root>/artifacts/<stage>/<key>/`` holding the stage's files
and a ``manifest.json`` (stage, key, resolved config, input keys, sha256 of every file).
The key is a hash of the stage name, its resolved config and the keys of its inputs, so
a changed setting or a changed input produces a new artifact and a rerun reuses the rest.

Writes are atomic: the producer fills a temporary directory beside the final one, the
manifest is written last, and one ``os.rename`` publishes it. A write that fails (a full
disk) removes its temporary file or directory; those of a killed process are orphans that
``cache prune`` lists (:meth:`ArtifactCache.orphans`). A file lock around each
producer stops two processes from computing the same artifact. Resumable producers get a
stable scratch directory (:meth:`ArtifactCache.scratch`) for their snapshots.

Freshness (make's rule, without clocks): a manifest records ``built_from``, the
``created`` stamp of every artifact it was computed from. An artifact whose input has
been recomputed since (another stamp), or one created before a ``fresh_after`` time
(``--recompute``), is stale: the next request computes a replacement, which takes its
place only once complete.

Integrity (issue 29): the manifest lists every file of its artifact by plain name with
its sha256, and an artifact is intact only when that listing and the directory agree (no
file missing, unlisted, changed, linked or a folder). A manifest that is unreadable, not a
JSON object, lacks a field, has a field of the wrong type or names another stage or key
makes the artifact corrupt (:func:`read_manifest`): a run moves it aside and computes it
again, ``run --dry-run`` lists it as to compute, ``cache verify`` reports it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from mkdt_bench.errors import UserError
from mkdt_bench.memory import PeakMemory
from mkdt_bench.rows import ArtifactRef

MANIFEST = "manifest.json"
#: Suffix of a temporary file or directory (its name also starts with a dot).
TMP_SUFFIX = ".tmp"
#: What marks an artifact moved aside as corrupt (``<key>.corrupt-<time>``).
CORRUPT_MARK = ".corrupt-"
#: A temporary file that no lock covers is orphaned once unchanged for this long.
ORPHAN_AFTER_S = 600.0
#: Larger manifests are not read (a manifest holds a config and file digests).
MAX_MANIFEST_BYTES = 16 * 2**20
_HEX = frozenset("0123456789abcdef")


class CorruptManifest(ValueError):
    """A manifest that cannot be trusted: its artifact is corrupt."""


class WriteFailed(OSError):
    """A file could not be written; its temporary file is removed and the target is as
    it was."""

    def __str__(self) -> str:
        return str(self.strerror)


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


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then ``os.replace``; on any
    failure the temporary file is removed (a write error becomes :class:`WriteFailed`)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError) and not isinstance(e, WriteFailed):
            cause = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise WriteFailed(getattr(e, "errno", None) or errno.EIO,
                              f"could not write {str(path)!r} ({cause}); the target is "
                              "unchanged") from e
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file, then rename)."""
    import torch

    _atomic(path, lambda tmp: torch.save(obj, tmp))


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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def bad_file_name(name: Any) -> str | None:
    """Why ``name`` cannot be a file of an artifact (None when it can): a manifest names
    plain files of the artifact's own directory, never a path or the manifest itself."""
    if not isinstance(name, str) or not name:
        return "an empty or non-text name"
    if name in (".", "..", MANIFEST) or any(c in name for c in "/\\\0"):
        return f"{name!r} is not a plain file name"
    return None


@dataclass(frozen=True)
class Manifest:
    """An artifact's manifest (``manifest.json``), as :func:`read_manifest` validated it:
    what the cache records for every artifact (its stage and key, when it was published,
    every file with its sha256, the config and input keys that name it, the ``created``
    stamps of the artifacts it was computed from, the wall time and peak memory of the
    computation), and ``extra``, the metadata its producer returned (e.g. ``steps``,
    ``num_images``, ``imported_from``). ``built_from`` is None for an artifact from before
    stamps were recorded."""

    stage: str
    key: str
    created: float
    files: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    built_from: dict[str, float] | None = None
    seconds: float | None = None
    peak_rss_mib: float | None = None
    peak_cuda_mib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mib(self) -> float | None:
        """The peak memory of the computation: the GPU's where it used one, else the
        process's resident set."""
        return self.peak_cuda_mib if self.peak_cuda_mib is not None else self.peak_rss_mib

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (the producer's metadata cannot replace
        what the cache records; absent fields are left out)."""
        recorded = {"stage": self.stage, "key": self.key, "config": self.config,
                    "inputs": self.inputs, "built_from": self.built_from, "files": self.files,
                    "seconds": self.seconds, "peak_rss_mib": self.peak_rss_mib,
                    "peak_cuda_mib": self.peak_cuda_mib, "created": self.created}
        return {**self.extra, **{k: v for k, v in recorded.items() if v is not None}}


#: The fields of a manifest that :class:`Manifest` holds by name (the rest is ``extra``).
_RECORDED = frozenset(("stage", "key", "created", "files", "config", "inputs", "built_from",
                       "seconds", "peak_rss_mib", "peak_cuda_mib"))


def read_manifest(directory: Path, stage: str | None = None,
                  key: str | None = None) -> Manifest:
    """The manifest of the artifact in ``directory``, validated: a JSON object with
    ``stage`` and ``key`` (those of its folder when given), a finite ``created``, and
    ``files``, plain names with their sha256; ``config``, ``inputs`` and ``built_from``
    (finite stamps) objects, ``seconds`` and peaks finite, where present. Anything else is
    a :class:`CorruptManifest` naming what is wrong (issue 29, section 2)."""
    path = Path(directory) / MANIFEST
    if path.is_symlink():
        raise CorruptManifest("a symbolic link")
    if not path.is_file():
        raise CorruptManifest("not a plain file" if path.exists() else "missing")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CorruptManifest(f"larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
        text = path.read_bytes()
    except OSError as e:
        raise CorruptManifest(f"unreadable: {e.strerror or e}") from None
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError):
        raise CorruptManifest("not valid JSON") from None
    if not isinstance(manifest, dict):
        raise CorruptManifest("not a JSON object")
    for name, kind in (("stage", str), ("key", str), ("files", dict)):
        if not isinstance(manifest.get(name), kind):
            raise CorruptManifest(f"{name!r} is missing or not a {kind.__name__}")
    if not _number(manifest.get("created")):
        raise CorruptManifest("'created' is missing or not a finite number")
    for name, expected in (("stage", stage), ("key", key)):
        if expected is not None and manifest[name] != expected:
            raise CorruptManifest(f"{name!r} is {manifest[name]!r}, not its folder's "
                                  f"{expected!r}")
    for name, digest in manifest["files"].items():
        why = bad_file_name(name)
        if why:
            raise CorruptManifest(f"lists {why}")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise CorruptManifest(f"the sha256 of {name!r} is not 64 hex digits")
    for name in ("config", "inputs", "built_from"):
        if not isinstance(manifest.get(name, {}), dict):
            raise CorruptManifest(f"{name!r} is not an object")
    if not all(_number(v) for v in manifest.get("built_from", {}).values()):
        raise CorruptManifest("'built_from' holds a stamp that is not a finite number")
    for name in ("seconds", "peak_rss_mib", "peak_cuda_mib"):
        if name in manifest and not _number(manifest[name]):
            raise CorruptManifest(f"{name!r} is not a finite number")
    return Manifest(**{k: v for k, v in manifest.items() if k in _RECORDED},
                    extra={k: v for k, v in manifest.items() if k not in _RECORDED})


def _lock_held(lock: Path) -> bool:
    """Whether a process holds ``lock`` (a :class:`FileLock` file); probed with a shared,
    non-blocking ``flock`` that writes nothing. True where that cannot be told."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    """Bytes under ``path`` (0 for what vanished meanwhile)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
        return sum(f.lstat().st_size for f in path.rglob("*")
                   if not f.is_dir() or f.is_symlink())
    except FileNotFoundError:
        return 0


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
        ``manifest``, ``verify``, ``artifacts``, a listing ``prune``) that creates nothing,
        for planning (``mkdt-bench run --dry-run``) and ``cache verify`` on read-only media."""
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

    def manifest(self, stage: str, key: str) -> Manifest:
        """The artifact's validated manifest; a :class:`CorruptManifest` when it has none
        that can be trusted (see :func:`read_manifest`)."""
        return read_manifest(self.path(stage, key), stage, key)

    def stamps(self, artifacts: list[str]) -> dict[str, float]:
        """``{"stage/key": created}`` of the published artifacts among ``artifacts``: what a
        product of them records as ``built_from``. One whose manifest is corrupt has none."""
        out = {}
        for artifact in artifacts:
            ref = ArtifactRef.parse(artifact)
            try:
                out[artifact] = float(self.manifest(ref.stage, ref.key).created)
            except CorruptManifest:
                continue
        return out

    def current(self, stage: str, key: str, built_from: Mapping[str, float] | None = None,
                fresh_after: float = 0.0) -> bool:
        """Published, created after ``fresh_after``, and computed from the present versions
        of its inputs ``built_from`` (``{"stage/key": created}`` as they are now)."""
        try:
            manifest = self.manifest(stage, key)
        except CorruptManifest:
            return False
        return not is_stale(manifest.to_json(), built_from or {}, fresh_after)

    def verify(self, stage: str, key: str) -> list[str]:
        """What is wrong with the stored artifact, ``"NAME: problem"`` each (empty when
        intact): the listing of its manifest (see :func:`read_manifest`) and its folder
        disagree (a file missing, not listed, changed, a link or not a plain file) or the
        manifest cannot be trusted. A folder that is not there reads as a missing manifest."""
        path = self.path(stage, key)
        if path.is_symlink():
            return [f"{path.name}: a symbolic link, not the artifact's folder"]
        try:
            listed = read_manifest(path, stage, key).files
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except CorruptManifest as e:
            return [f"{MANIFEST}: {e}"]
        except OSError as e:
            return [f"{path.name}: unreadable ({e.strerror or e})"]
        bad, present = [], set()
        for entry in entries:
            name = entry.name
            if name == MANIFEST:
                continue
            present.add(name)
            if entry.is_symlink():
                bad.append(f"{name}: a symbolic link")
            elif not entry.is_file(follow_symlinks=False):
                bad.append(f"{name}: not a plain file")
            elif name not in listed:
                bad.append(f"{name}: not in the manifest")
            else:
                try:
                    if file_sha256(path / name) != listed[name]:
                        bad.append(f"{name}: sha256 differs from the manifest's")
                except OSError as e:
                    bad.append(f"{name}: unreadable ({e.strerror or e})")
        bad += [f"{name}: missing" for name in listed if name not in present]
        return bad

    def folders(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every artifact folder, published or not (one whose manifest
        is missing), leaving out temporary folders and moved-aside corrupt copies."""
        root = self.root / "artifacts"
        if not root.is_dir():
            return []
        return sorted((stage.name, p.name) for stage in root.iterdir() if stage.is_dir()
                      for p in stage.iterdir()
                      if (p.is_dir() or p.is_symlink()) and not p.name.startswith(".")
                      and CORRUPT_MARK not in p.name)

    def artifacts(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every published artifact."""
        return [(stage, key) for stage, key in self.folders() if self.exists(stage, key)]

    def orphans(self) -> list[Path]:
        """Temporary files and folders (``.NAME.tmp``) anywhere under the cache that no
        producer is writing: none holds the lock of the artifact they belong to, or, outside
        the artifacts and their scratch folders, unchanged for :data:`ORPHAN_AFTER_S`."""
        out = []
        now = time.time()
        for top, dirs, files in os.walk(self.root):
            here = Path(top)
            for name in sorted(dirs + files):
                path = here / name
                if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
                    continue
                lock = self._owning_lock(path)
                try:
                    if lock is not None:
                        if not _lock_held(lock):
                            out.append(path)
                    elif now - path.lstat().st_mtime > ORPHAN_AFTER_S:
                        out.append(path)
                except FileNotFoundError:  # its writer finished meanwhile
                    continue
            dirs[:] = [d for d in dirs if CORRUPT_MARK not in d
                       and not (d.startswith(".") and d.endswith(TMP_SUFFIX))]
        return out

    def _owning_lock(self, path: Path) -> Path | None:
        """The lock of the producer that writes ``path``: a temporary artifact folder
        ``artifacts/STAGE/.KEY.HEX.tmp`` or a snapshot under ``scratch/STAGE/KEY/``."""
        parts = path.relative_to(self.root).parts
        if len(parts) == 3 and parts[0] == "artifacts":
            key = parts[2][1:].rsplit(".", 2)[0]
            return self.root / "artifacts" / parts[1] / f"{key}.lock"
        if len(parts) >= 4 and parts[0] == "scratch":
            return self.root / "artifacts" / parts[1] / f"{parts[2]}.lock"
        return None

    def prune(self, keep: set[str], apply: bool = False) -> list[tuple[Path, int]]:
        """Artifacts whose ``stage/key`` is not in ``keep``, moved-aside corrupt copies and
        orphaned temporary files and folders (:meth:`orphans`), with their sizes in bytes;
        ``apply`` deletes them (and the pruned artifacts' scratch directories). Nothing is
        deleted without ``apply``."""
        doomed = [self.path(stage, key) for stage, key in self.folders()
                  if f"{stage}/{key}" not in keep]
        if (self.root / "artifacts").is_dir():
            doomed += [p for stage_dir in sorted((self.root / "artifacts").iterdir())
                       if stage_dir.is_dir() for p in sorted(stage_dir.iterdir())
                       if p.is_dir() and CORRUPT_MARK in p.name]
        doomed += self.orphans()
        out = [(p, _size(p)) for p in doomed]
        if apply:
            for path, _ in out:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                if path.parent.parent == self.root / "artifacts" and \
                        not path.name.startswith("."):
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
                          if ArtifactRef.parse(a).stage != stage}
        fresh_after = self.fresh_after if fresh_after is None else fresh_after
        final = self.path(stage, key)
        if self.current(stage, key, built_from, fresh_after) and not self.verify(stage, key):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if self._intact(stage, key):
                if self.current(stage, key, built_from, fresh_after):
                    return final  # another process finished it meanwhile
                # stale: snapshots of its computation are stale too
                shutil.rmtree(self.root / "scratch" / stage / key, ignore_errors=True)
            for stale in final.parent.glob(f".{key}.*{TMP_SUFFIX}"):  # of a killed producer
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.with_name(f".{key}.{uuid.uuid4().hex}{TMP_SUFFIX}")
            tmp.mkdir()
            try:
                start = time.perf_counter()
                with PeakMemory() as memory:
                    extra = produce(tmp) or {}
                seconds = time.perf_counter() - start
                files = _listing(tmp, stage)
                manifest = Manifest(stage, key, time.time(), files, dict(config or {}),
                                    dict(inputs or {}), dict(built_from), seconds,
                                    **memory.result(), extra=dict(extra))
                (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=1,
                                                       default=str))
                if final.exists():  # a stale one: out of the way, then the new one in
                    old = final.with_name(f".{key}.{uuid.uuid4().hex}{TMP_SUFFIX}")
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
        path = self.path(stage, key)
        if not path.exists() and not path.is_symlink():
            return False
        bad = self.verify(stage, key)
        if not bad:
            return True
        aside = path.with_name(f"{key}{CORRUPT_MARK}{int(time.time())}-{uuid.uuid4().hex[:8]}")
        os.rename(path, aside)
        import warnings

        warnings.warn(f"corrupt artifact {path} ({', '.join(bad)}): moved to {aside}, recomputing",
                      stacklevel=2)
        return False


def _listing(directory: Path, stage: str) -> dict[str, str]:
    """``{name: sha256}`` of every file a producer wrote: plain files only, so that the
    manifest covers the whole artifact."""
    files = {}
    for p in sorted(directory.iterdir()):
        if p.is_symlink() or not p.is_file() or bad_file_name(p.name):
            raise ValueError(f"stage {stage!r} wrote {p.name!r}, which is not a plain file: "
                             "an artifact holds plain files only, listed in its manifest")
        files[p.name] = file_sha256(p)
    return files
