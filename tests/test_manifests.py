"""Manifest integrity (issue 29, section 2): a manifest lists every file of its artifact,
the listing and the folder must agree, and a manifest that cannot be trusted makes its
artifact corrupt the same way for ``run``, ``run --dry-run`` and ``cache verify``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import FAST_FLAGS, cli
from hypothesis import given, settings
from hypothesis import strategies as st

from mkdt_bench.cache import ArtifactCache, CorruptManifest, bad_file_name, read_manifest

FAST = ["--methods", "random", "--seeds", "0", *FAST_FLAGS]


def produce(tmp: Path) -> None:
    (tmp / "a.bin").write_bytes(b"first file")
    (tmp / "b.bin").write_bytes(b"second file")


def stored(tmp_path: Path) -> tuple[ArtifactCache, Path]:
    cache = ArtifactCache(tmp_path)
    return cache, cache.get_or_create("stage", "k", produce, config={"c": 1})


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def unlist_and_zero(path: Path) -> None:
    edit_manifest(path, lambda m: m["files"].pop("b.bin"))
    (path / "b.bin").write_bytes(b"\0" * 11)


def extra_file(path: Path) -> None:
    (path / "extra.pt").write_bytes(b"not produced by the stage")


def missing_file(path: Path) -> None:
    (path / "b.bin").unlink()


def changed_file(path: Path) -> None:
    (path / "b.bin").write_bytes(b"second fil3")


def symlinked_file(path: Path) -> None:
    """Same bytes, but through a link that could point anywhere."""
    outside = path.parent.parent / "outside.bin"
    outside.write_bytes((path / "b.bin").read_bytes())
    (path / "b.bin").unlink()
    (path / "b.bin").symlink_to(outside)


def sub_folder(path: Path) -> None:
    (path / "sub").mkdir()
    (path / "sub" / "x.pt").write_bytes(b"x")


def fifo(path: Path) -> None:
    """Never opened: reading a pipe would hang ``verify``."""
    os.mkfifo(path / "pipe")


@pytest.mark.parametrize("tamper, problem", [
    (unlist_and_zero, "b.bin: not in the manifest"),
    (extra_file, "extra.pt: not in the manifest"),
    (missing_file, "b.bin: missing"),
    (changed_file, "b.bin: sha256 differs"),
    (symlinked_file, "b.bin: a symbolic link"),
    (sub_folder, "sub: not a plain file"),
    (fifo, "pipe: not a plain file"),
])
def test_listing_and_folder_must_agree(tmp_path, tamper, problem):
    cache, path = stored(tmp_path)
    assert cache.verify("stage", "k") == []
    tamper(path)
    bad = cache.verify("stage", "k")
    assert len(bad) == 1 and bad[0].startswith(problem), bad
    with pytest.warns(UserWarning, match="corrupt artifact"):
        again = cache.get_or_create("stage", "k", produce)
    assert cache.verify("stage", "k") == [] and sorted(p.name for p in again.iterdir()) == \
        ["a.bin", "b.bin", "manifest.json"]
    assert len(list(path.parent.glob("k.corrupt-*"))) == 1


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", ["../../outside.bin", "../outside.bin", "/tmp/outside.bin",
                                  "sub/a.bin", "a\\b", "", ".", "..", "manifest.json"])
def test_listed_names_are_plain_file_names(tmp_path, name):
    """A name that is a path is refused before anything is read: ``verify`` never opens a
    file outside the artifact, even one whose sha256 the manifest gives correctly."""
    cache, path = stored(tmp_path)
    (tmp_path / "outside.bin").write_bytes(b"outside")
    edit_manifest(path, lambda m: m["files"].update({name: digest(b"outside")}))
    bad = cache.verify("stage", "k")
    assert len(bad) == 1 and bad[0].startswith("manifest.json: lists "), bad


GOOD = {"stage": "stage", "key": "k", "created": 1.0, "files": {}}


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not valid JSON"),
    ("\udcff".encode("utf-8", "surrogatepass"), "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ("[]", "not a JSON object"),
    ("null", "not a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "created"}, "'created' is missing"),
    ({k: v for k, v in GOOD.items() if k != "files"}, "'files' is missing"),
    ({k: v for k, v in GOOD.items() if k != "stage"}, "'stage' is missing"),
    ({k: v for k, v in GOOD.items() if k != "key"}, "'key' is missing"),
    ({**GOOD, "created": "yesterday"}, "'created' is missing or not a finite number"),
    ({**GOOD, "created": True}, "'created' is missing or not a finite number"),
    ('{"stage": "stage", "key": "k", "files": {}, "created": NaN}', "'created'"),
    ({**GOOD, "files": ["a.bin"]}, "'files' is missing or not a dict"),
    ({**GOOD, "files": {"a.bin": "xyz"}}, "the sha256 of 'a.bin'"),
    ({**GOOD, "files": {"a.bin": 7}}, "the sha256 of 'a.bin'"),
    ({**GOOD, "stage": "teacher"}, "'stage' is 'teacher', not its folder's 'stage'"),
    ({**GOOD, "key": "other"}, "'key' is 'other'"),
    ({**GOOD, "config": [1]}, "'config' is not an object"),
    ({**GOOD, "built_from": {"teacher/k": "new"}}, "'built_from' holds a stamp"),
    ({**GOOD, "seconds": "fast"}, "'seconds' is not a finite number"),
])
def test_a_manifest_that_cannot_be_trusted_makes_the_artifact_corrupt(tmp_path, text, reason):
    cache, path = stored(tmp_path)
    data = text if isinstance(text, str | bytes) else json.dumps(text)
    (path / "manifest.json").write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(CorruptManifest, match=reason.replace("(", r"\(")):
        read_manifest(path, "stage", "k")
    bad = cache.verify("stage", "k")
    assert len(bad) == 1 and bad[0].startswith(f"manifest.json: {reason}"), bad
    # every reader treats it as corrupt instead of crashing: no stamp, not current
    assert cache.stamps(["stage/k"]) == {} and not cache.current("stage", "k")
    with pytest.warns(UserWarning, match="corrupt artifact"):
        cache.get_or_create("stage", "k", produce)
    assert cache.verify("stage", "k") == [] and cache.stamps(["stage/k"])


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
#: The listing of :func:`produce`'s artifact.
FILES = {"a.bin": digest(b"first file"), "b.bin": digest(b"second file")}
FIELDS = ["stage", "key", "created", "files", "config", "inputs", "built_from", "seconds",
          "peak_rss_mib"]
NAMES = st.sampled_from(["a.bin", "b.bin", "c.bin", "../a.bin", "/a.bin", "", "manifest.json"])
VALUES = {"files": st.dictionaries(NAMES, st.sampled_from([digest(b"first file"), "0" * 64])
                                   | JSON, max_size=3),
          "built_from": st.dictionaries(st.text(max_size=8), st.floats() | JSON, max_size=2)}


@st.composite
def manifests(draw) -> bytes:
    """The stored manifest with some fields replaced or removed, or any JSON, or bytes."""
    kind = draw(st.sampled_from(["edited", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    manifest = {"stage": "stage", "key": "k", "created": 1.0, "config": {}, "inputs": {},
                "built_from": {}, "seconds": 0.1, "peak_rss_mib": 1.0, "files": FILES}
    for field in draw(st.sets(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            manifest.pop(field)
        else:
            manifest[field] = draw(VALUES.get(field, JSON))
    return json.dumps(manifest).encode()


@settings(max_examples=200, deadline=None)
@given(content=manifests())
def test_any_manifest_reads_as_valid_or_corrupt(content):
    """Whatever the manifest holds, the reader accepts it only with the fields every reader
    relies on, and ``verify`` answers (never raises)."""
    with tempfile.TemporaryDirectory() as root:
        cache = ArtifactCache(root)
        path = cache.get_or_create("stage", "k", produce)
        (path / "manifest.json").write_bytes(content)
        try:
            manifest = read_manifest(path, "stage", "k")
        except CorruptManifest:
            assert cache.verify("stage", "k")[0].startswith("manifest.json: ")
            assert cache.stamps(["stage/k"]) == {} and not cache.current("stage", "k")
            return
        assert (manifest.stage, manifest.key) == ("stage", "k")
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in
                   [manifest.created, *(manifest.built_from or {}).values()])
        assert all(bad_file_name(name) is None for name in manifest.files)
        assert (cache.verify("stage", "k") == []) == (manifest.files == FILES)
        assert cache.stamps(["stage/k"]) == {"stage/k": float(manifest.created)}


@pytest.mark.parametrize("kind, reason", [("symlink", "a symbolic link"),
                                          ("folder", "not a plain file"),
                                          ("fifo", "not a plain file"), ("absent", "missing"),
                                          ("huge", "larger than 16 MiB")])
def test_a_manifest_that_is_no_file_makes_the_artifact_corrupt(tmp_path, kind, reason):
    cache, path = stored(tmp_path)
    manifest = (path / "manifest.json").read_text()
    (path / "manifest.json").unlink()
    if kind == "symlink":
        (tmp_path / "elsewhere.json").write_text(manifest)
        (path / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    elif kind == "folder":
        (path / "manifest.json").mkdir()
    elif kind == "fifo":
        os.mkfifo(path / "manifest.json")
    elif kind == "huge":
        (path / "manifest.json").write_text(manifest + " " * 17 * 2**20)
    assert cache.verify("stage", "k") == [f"manifest.json: {reason}"]
    assert ("stage", "k") in cache.folders()
    with pytest.warns(UserWarning, match="corrupt artifact"):
        cache.get_or_create("stage", "k", produce)
    assert cache.verify("stage", "k") == []


def test_an_artifact_folder_that_is_a_link_is_corrupt(tmp_path):
    cache, path = stored(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)  # the same files, reached through a link
    assert cache.verify("stage", "k") == ["k: a symbolic link, not the artifact's folder"]
    with pytest.warns(UserWarning, match="corrupt artifact"):
        cache.get_or_create("stage", "k", produce)
    assert not path.is_symlink() and cache.verify("stage", "k") == []


def test_a_producer_that_writes_a_sub_folder_is_refused(tmp_path):
    """An artifact holds plain files only, so that its manifest lists all of it."""
    cache = ArtifactCache(tmp_path)

    def nested(tmp: Path) -> None:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.pt").write_bytes(b"x")

    with pytest.raises(ValueError, match="'sub', which is not a plain file"):
        cache.get_or_create("stage", "k", nested)
    assert list((tmp_path / "artifacts" / "stage").iterdir()) == \
        [tmp_path / "artifacts" / "stage" / "k.lock"]


def test_show_leaves_out_a_corrupt_stored_set(tmp_path):
    from mkdt_bench.catalog import find_stored_set
    from mkdt_bench.distilled import DistilledSet

    cache = ArtifactCache(tmp_path)
    keys = []
    for seed in (0, 1):
        config = {"method": "random", "options": {}, "budget": 2, "seed": seed}

        def write(tmp: Path) -> dict:
            DistilledSet(images=torch.zeros(2, 1, 8, 8), targets=torch.ones(2, 4), lr=None,
                         source="digits", mean=(0.5,), std=(0.25,), method="random").save(tmp)
            return {"method": "random"}

        keys.append(ArtifactCache.key("distilled", config))
        cache.get_or_create("distilled", keys[-1], write, config=config)
    (cache.path("distilled", keys[0]) / "manifest.json").write_text("{")
    zeroed = cache.path("distilled", keys[1])
    edit_manifest(zeroed, lambda m: m["files"].pop("targets.pt"))
    with pytest.warns(UserWarning, match="corrupt stored set"):
        with pytest.raises(Exception, match="no set of 'random' is stored"):
            find_stored_set(tmp_path, "random", 1, 2)


# ----------------------------------------------------------------- through the command line


@pytest.fixture
def command(cli_here):
    """``mkdt-bench ARGS`` in this process (:func:`conftest.cli_here`); a run keeps this
    process's torch thread count."""
    def run(*args: str, cache: Path) -> tuple[int, str, str]:
        if args[0] == "run":
            args = (*args, "--threads", str(torch.get_num_threads()))
        return cli_here(*args, cache=cache)

    return run


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and modification time."""
    out = {}
    for p in [root, *root.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory, fast_teacher_template) -> tuple[Path, str]:
    """A cache and database of one small grid, and the table its run printed."""
    cache = tmp_path_factory.mktemp("grid") / "cache"
    shutil.copytree(fast_teacher_template, cache)
    first = cli("run", *FAST, cache=cache, OMP_NUM_THREADS="1")
    assert first.returncode == 0, first.stderr
    return cache, first.stdout


def table(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("|", "Table"))]


@pytest.mark.slow
def test_an_unlisted_zeroed_file_is_reported_and_recomputed(grid, tmp_path, command):
    """The audit's case: ``targets.pt`` of a stored set zeroed and left out of its
    manifest passed ``cache verify`` and the next run scored the zeroed set."""
    cache = tmp_path / "cache"
    shutil.copytree(grid[0], cache)
    (stored_set,) = (p for p in (cache / "artifacts" / "distilled").iterdir() if p.is_dir())
    targets = torch.load(stored_set / "targets.pt", weights_only=True)
    torch.save(torch.zeros_like(targets), stored_set / "targets.pt")
    edit_manifest(stored_set, lambda m: m["files"].pop("targets.pt"))

    status, out, _ = command("cache", "verify", cache=cache)
    assert status == 1 and f"corrupt: {stored_set} (targets.pt: not in the manifest)" in out
    before = tree(cache)
    status, out, err = command("run", *FAST, "--dry-run", cache=cache)
    assert status == 0, err
    assert f"corrupt: distilled/{stored_set.name} (targets.pt: not in the manifest)" in out
    assert tree(cache) == before  # moved nothing
    again = cli("run", *FAST, cache=cache, OMP_NUM_THREADS="1")
    assert again.returncode == 0, again.stderr
    assert "corrupt artifact" in again.stderr and table(again.stdout) == table(grid[1])
    assert len(list(cache.glob(f"artifacts/distilled/{stored_set.name}.corrupt-*"))) == 1
    assert command("cache", "verify", cache=cache)[0] == 0


@pytest.mark.slow
def test_a_manifest_without_created_is_corrupt_for_every_command(grid, tmp_path, command):
    """It crashed ``run`` and ``run --dry-run`` while planning."""
    cache = tmp_path / "cache"
    shutil.copytree(grid[0], cache)
    (encoder,) = (p for p in (cache / "artifacts" / "encoder").iterdir() if p.is_dir())
    edit_manifest(encoder, lambda m: m.pop("created"))
    status, out, _ = command("cache", "verify", cache=cache)
    assert status == 1 and "manifest.json: 'created' is missing" in out
    status, out, err = command("run", *FAST, "--dry-run", cache=cache)
    assert status == 0 and f"corrupt: encoder/{encoder.name}" in out, err
    again = cli("run", *FAST, cache=cache, OMP_NUM_THREADS="1")
    assert again.returncode == 0, again.stderr
    assert "corrupt artifact" in again.stderr and table(again.stdout) == table(grid[1])


@pytest.mark.slow
def test_read_only_commands_work_on_a_read_only_cache_and_write_nothing(grid, tmp_path,
                                                                        command, monkeypatch):
    """``cache verify``, ``cache prune`` (listing) and ``run --dry-run`` on a cache that
    cannot be written to (simulated: tests run as root, so ``os.access`` says no)."""
    cache = tmp_path / "cache"
    shutil.copytree(grid[0], cache)
    before = tree(cache)
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *args, **kwargs:
                        False if mode & os.W_OK else access(path, mode, *args, **kwargs))
    status, out, err = command("cache", "verify", cache=cache)
    assert status == 0 and "0 corrupt" in out, err
    status, out, err = command("cache", "prune", cache=cache)
    assert status == 0 and "0 unused" in out, err
    status, out, err = command("run", *FAST, "--dry-run", cache=cache)
    assert status == 0 and "total: 0 steps to compute" in out, err
    assert "# note: a run would stop here: cache directory" in out
    assert tree(cache) == before
    # what would write still says so in one line
    status, _, err = command("cache", "prune", "--apply", cache=cache)
    assert status == 2 and "not writable" in err
    assert tree(cache) == before
