"""Artifact cache: stable keys, one computation, atomic writes, corruption handling."""

from __future__ import annotations

import os
import time

import pytest
import torch

from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.errors import UserError


def test_key_is_stable_and_sensitive():
    k1 = ArtifactCache.key("s", {"a": 1, "b": [1, 2]}, {"x": "k"})
    assert k1 == ArtifactCache.key("s", {"b": [1, 2], "a": 1}, {"x": "k"})
    assert k1 != ArtifactCache.key("s", {"a": 2, "b": [1, 2]}, {"x": "k"})
    assert k1 != ArtifactCache.key("s", {"a": 1, "b": [1, 2]}, {"x": "other"})
    assert config_hash({"a": 1}) == config_hash({"a": 1})


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
    assert manifest["note"] == 1 and set(manifest["files"]) == {"x.txt"}


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
    assert cache.verify("stage", "k") == ["data.bin"]
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
    assert manifest["peak_rss_mib"] >= before + 60
    assert manifest["seconds"] >= 0.2
