"""Artifact cache: stable keys, one computation, atomic writes, corruption handling."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from mkdt_bench.cache import MANIFEST, ArtifactCache, Manifest, config_hash, read_manifest
from mkdt_bench.errors import UserError


def test_key_is_stable_and_sensitive():
    k1 = ArtifactCache.key("s", {"a": 1, "b": [1, 2]}, {"x": "k"})
    assert k1 == ArtifactCache.key("s", {"b": [1, 2], "a": 1}, {"x": "k"})
    assert k1 != ArtifactCache.key("s", {"a": 2, "b": [1, 2]}, {"x": "k"})
    assert k1 != ArtifactCache.key("s", {"a": 1, "b": [1, 2]}, {"x": "other"})
    # the strings stored artifacts are named by: a changed hash would orphan every cache
    assert config_hash({"a": 1, "b": [1, 2.5]}) == "07ac8340cb8a1f1a"
    assert ArtifactCache.key("teacher", {"a": 1}, {"data": "f"}) == "1a46808eac846503"


def test_get_or_create_computes_once(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def produce(d):
        calls.append(d)
        (d / "x.txt").write_text("hello")
        return {"note": 1}

    p1 = cache.get_or_create("stage", "k", produce, config={"c": 1})
    p2 = cache.get_or_create("stage", "k", produce)
    assert p1 == p2 and len(calls) == 1
    assert (p1 / "x.txt").read_text() == "hello"
    manifest = cache.manifest("stage", "k")
    assert manifest.extra == {"note": 1} and set(manifest.files) == {"x.txt"}


def test_failed_producer_leaves_nothing(tmp_path):
    cache = ArtifactCache(tmp_path)

    def produce(d):
        (d / "half.txt").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cache.get_or_create("stage", "k", produce)
    assert not cache.exists("stage", "k")
    assert not [p for p in (tmp_path / "artifacts" / "stage").iterdir() if p.is_dir()]


def test_corrupt_artifact_is_moved_aside_and_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    count = []

    def produce(d):
        count.append(1)
        (d / "data.bin").write_bytes(b"0123456789")

    path = cache.get_or_create("stage", "k", produce)
    (path / "data.bin").write_bytes(b"01234")  # truncated
    assert cache.verify("stage", "k") == ["data.bin: sha256 differs from the manifest's"]
    with pytest.warns(UserWarning, match="corrupt artifact"):
        cache.get_or_create("stage", "k", produce)
    assert len(count) == 2
    assert (path / "data.bin").read_bytes() == b"0123456789"
    assert list((tmp_path / "artifacts" / "stage").glob("k.corrupt-*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_cache_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(UserError, match="not writable"):
        ArtifactCache(ro / "cache")


def test_cache_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        ArtifactCache(f)


def test_temporary_of_a_killed_producer_is_removed_by_the_next(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = cache.key("s", {"a": 1})
    stale = cache.path("s", key).with_name(f".{key}.0123abcd.tmp")
    stale.mkdir(parents=True)
    (stale / "half.pt").write_bytes(b"half")
    other = cache.path("s", key).with_name(".ffffffffffffffff.0123abcd.tmp")
    other.mkdir()
    cache.get_or_create("s", key, lambda tmp: (tmp / "x").write_text("x") and None)
    assert not stale.exists() and other.exists()  # only this key's leftovers


def test_manifest_records_peak_memory_of_the_stage(tmp_path):
    from mkdt_bench.memory import rss_mib

    cache = ArtifactCache(tmp_path)

    def produce(tmp):
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB held for a moment
        time.sleep(0.2)
        torch.save(block[:4].clone(), tmp / "x.pt")

    before = rss_mib()
    cache.get_or_create("s", "k", produce)
    manifest = cache.manifest("s", "k")
    assert manifest.peak_rss_mib is not None and manifest.peak_rss_mib >= before + 60
    assert manifest.peak_mib == manifest.peak_rss_mib  # no GPU used
    assert manifest.seconds is not None and manifest.seconds >= 0.2


def test_failed_atomic_write_removes_its_temporary_file(tmp_path, monkeypatch):
    """A full disk (ENOSPC, simulated) leaves neither a temporary file nor a changed target,
    and the error names the file."""
    import errno

    from mkdt_bench.cache import WriteFailed, atomic_torch_save, atomic_write_bytes

    target = tmp_path / "out" / "table.md"
    atomic_write_bytes(target, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteFailed, match=r"could not write .*table\.md.*No space left"):
        atomic_write_bytes(target, b"new" * 2**20)
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]
    assert target.read_bytes() == b"old"
    monkeypatch.undo()

    def half_then_full(obj, path):
        Path(path).write_bytes(b"PK" * 1000)  # what torch had written when the disk filled
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", half_then_full)
    snapshot = tmp_path / "scratch" / "teacher_state.pt"
    with pytest.raises(WriteFailed, match="teacher_state.pt.*file write failed"):
        atomic_torch_save({"x": torch.ones(3)}, snapshot)
    assert list(snapshot.parent.iterdir()) == []


def test_prune_lists_orphaned_temporaries_anywhere(tmp_path):
    """Temporary files and folders left by a killed or failed write, under the artifacts,
    the scratch snapshots or elsewhere in the cache; not those a producer is writing (its
    lock held) and not a recent one no lock covers."""
    from filelock import FileLock

    cache = ArtifactCache(tmp_path)
    kept = cache.get_or_create("teacher", "k", lambda tmp: (tmp / "t.pt").write_bytes(b"t")
                               and None)
    snapshot = cache.scratch("teacher", "k2") / ".teacher_state.pt.0a1b.tmp"
    snapshot.write_bytes(b"s" * 2_800_000)  # the audit's full disk left 2.8 MB
    artifact_tmp = cache.path("teacher", "k3").with_name(".k3.0a1b.tmp")
    artifact_tmp.mkdir()
    (artifact_tmp / "half.pt").write_bytes(b"h" * 10)
    old = tmp_path / "data" / ".digits.x1.tmp"
    old.parent.mkdir()
    old.write_bytes(b"o")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    recent = tmp_path / "data" / ".digits.x2.tmp"
    recent.write_bytes(b"r")
    busy = cache.scratch("teacher", "k4") / ".teacher_state.pt.0c.tmp"
    busy.write_bytes(b"b")
    with FileLock(str(cache.path("teacher", "k4")) + ".lock"):  # a producer is writing it
        listed = dict(cache.prune({"teacher/k"}))
        assert listed == {snapshot: 2_800_000, artifact_tmp: 10, old: 1}
        assert snapshot.exists() and artifact_tmp.exists() and old.exists()
        cache.prune({"teacher/k"}, apply=True)
    assert not snapshot.exists() and not artifact_tmp.exists() and not old.exists()
    assert recent.exists() and busy.exists() and (kept / "t.pt").exists()


def test_a_manifest_reads_back_as_its_typed_record(tmp_path):
    """What the cache records is typed; a producer's metadata is ``extra`` and cannot
    replace it."""
    def produce(tmp):
        (tmp / "x.bin").write_bytes(b"1")
        return {"steps": 6, "imported_from": "/sets/a", "seconds": -1.0, "stage": "other"}

    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create("encoder", "k", produce, config={"arch": "convnet"},
                               inputs={"distilled": "d"}, built_from={"distilled/d": 2.0})
    manifest = cache.manifest("encoder", "k")
    assert (manifest.stage, manifest.key, manifest.config, manifest.inputs) == \
        ("encoder", "k", {"arch": "convnet"}, {"distilled": "d"})
    assert manifest.built_from == {"distilled/d": 2.0} and set(manifest.files) == {"x.bin"}
    assert manifest.extra == {"steps": 6, "imported_from": "/sets/a"}
    assert manifest.seconds is not None and manifest.seconds >= 0
    assert json.loads((path / MANIFEST).read_text()) == manifest.to_json()
    assert read_manifest(path, "encoder", "k") == manifest
    assert Manifest("s", "k", 1.0, {}, peak_rss_mib=10.0, peak_cuda_mib=3.0).peak_mib == 3.0
    assert Manifest("s", "k", 1.0, {}).to_json() == {"stage": "s", "key": "k", "config": {},
                                                     "inputs": {}, "files": {}, "created": 1.0}


def test_a_malformed_artifact_reference_is_one_line(tmp_path):
    with pytest.raises(UserError, match="artifact reference 'teacher' must look like stage/key"):
        ArtifactCache(tmp_path).stamps(["teacher"])
