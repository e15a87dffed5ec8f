"""Nothing a file holds can run code (issue 29 §1).

A code-running pickle (an object whose unpickling creates a marker file) is planted in every
kind of file the harness loads: resume snapshots, cache artifacts, distilled and imported sets,
converted reference files, teacher checkpoints and decoded-image caches. Each test runs with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which makes a bare ``torch.load`` unpickle anything;
the marker must stay absent and the harness must say what it refused.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CPU, FAST_FLAGS, tiny_teacher
from conftest import method_context as tiny_method_context

import mkdt_bench.methods._teacher_views as tv
from mkdt_bench import safeload
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.convert import from_krrst
from mkdt_bench.data import load_dataset
from mkdt_bench.data import torchvision_sets as tv_sets
from mkdt_bench.data._decode import no_writes
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import MissingDataError, UserError
from mkdt_bench.methods import MethodContext, create_method
from mkdt_bench.methods._experts import expert_config, load_trajectories
from mkdt_bench.methods._highloss import SCORE_EPOCH, high_loss_scores
from mkdt_bench.methods.imported import imported_set
from mkdt_bench.seeding import rng_state, seed_everything, set_rng_state
from mkdt_bench.stages.distill import MethodInputs, method_context
from mkdt_bench.stages.env import Env
from mkdt_bench.stages.teacher import load_teacher
from mkdt_bench.teachers import TEACHER_DEFAULTS
from mkdt_bench.teachers.checkpoint import load_teacher_checkpoint
from mkdt_bench.teachers.encoder import build_teacher
from mkdt_bench.teachers.ssl import train_teacher
from mkdt_bench.teachers.supervised import train_supervised_teacher

PACKAGE = Path(__file__).resolve().parents[1] / "mkdt_bench"
TEACHER = dict(TEACHER_DEFAULTS, arch="convnet", epochs=2, batch_size=64, proj_dim=32,
               train_images=128)


class Payload:
    """Creates ``marker`` when a full unpickler loads it (``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A torch file at ``path`` whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Payload(marker), "epoch": 1}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(autouse=True)
def full_unpickling_forced(monkeypatch):
    """The environment asks PyTorch for full unpickling; the harness must not comply."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a planted file ran code"


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(weights(a), weights(b)))


# ---------------------------------------------------------------- the one reader


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_load_refuses_a_code_running_file(tmp_path, marker, legacy, mmap):
    path = plant(tmp_path / "x.pt", marker, legacy)
    with pytest.raises(safeload.UnreadableFileError) as info:
        safeload.load(path, mmap=mmap)
    assert str(path) in str(info.value) and info.value.path == str(path)
    if not (legacy and mmap):  # a legacy file cannot be memory-mapped at all
        assert info.value.reason.startswith("refused") and "open" in info.value.reason
    assert "weights_only=False" not in str(info.value)  # no advice to unpickle it anyway


def test_load_names_unreadable_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(3)}, good)
    assert torch.equal(safeload.load(good)["a"], torch.ones(3))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    text = tmp_path / "text.pt"
    text.write_text("not a torch file")
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)  # reading it would block forever
    for path, reason in [(truncated, "not a readable torch file"),
                         (text, "not a readable torch file"), (tmp_path / "absent.pt", "no such"),
                         (tmp_path, "not a regular file"), (fifo, "not a regular file")]:
        with pytest.raises(safeload.UnreadableFileError, match=reason) as info:
            safeload.load(path)
        assert info.value.path == str(path)


def test_load_refuses_a_broadcast_tensor_bomb(tmp_path):
    """A 2 kB file holding a stride-0 view of gigabytes: a copy of it would exhaust memory.
    Refused by every reader (sets, artifacts, snapshots); ordinary views and slices load."""
    bomb = tmp_path / "bomb.pt"
    torch.save({"images": torch.zeros(1, 1, 1, 1).expand(10**7, 1, 8, 8)}, bomb)
    assert bomb.stat().st_size < 4096
    with pytest.raises(safeload.UnreadableFileError, match=r"shape \(10000000, 1, 8, 8\)"):
        safeload.load(bomb)
    fine = tmp_path / "fine.pt"
    torch.save({"small": torch.zeros(1).expand(1000), "slice": torch.arange(100)[::7]}, fine)
    assert safeload.load(fine)["small"].shape == (1000,)
    digits = load_dataset("digits")
    torch.save(torch.zeros(1, 1, 1, 1).expand(10**7, 1, 8, 8), tmp_path / "images.pt")
    torch.save(torch.zeros(1, 4).expand(10**7, 4), tmp_path / "targets.pt")
    (tmp_path / "distilled.json").write_text(json.dumps(
        {"source": "digits", "mean": list(digits.mean), "std": list(digits.std),
         "method": "external"}))
    with pytest.raises(UserError, match="images.pt.*refused"):
        DistilledSet.load(tmp_path)


def test_both_force_variables_are_one_user_error(tmp_path, monkeypatch):
    path = tmp_path / "good.pt"
    torch.save(torch.ones(1), path)
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UserError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") as info:
        safeload.load(path)
    assert not isinstance(info.value, safeload.UnreadableFileError)  # not the file's fault


def _calls(tree: ast.AST, module: str, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == name
            and isinstance(node.func.value, ast.Name) and node.func.value.id == module]


def test_only_the_safe_reader_calls_torch_load():
    """Every ``torch.load`` of the package is the one in :mod:`mkdt_bench.safeload`, with
    ``weights_only=True``; no module calls ``pickle.load(s)`` or imports a ``load`` (CIFAR's
    files go through a restricted unpickler, tested below)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        name = str(path.relative_to(PACKAGE))
        for call in _calls(tree, "torch", "load"):
            flags = {k.arg: getattr(k.value, "value", None) for k in call.keywords}
            found[f"{name}:{call.lineno}"] = flags.get("weights_only")
        for call in _calls(tree, "pickle", "load") + _calls(tree, "pickle", "loads"):
            found[f"{name}:{call.lineno} pickle"] = "unpickles"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle"):
                assert all(a.name not in ("load", "loads") for a in node.names), name
    assert len(found) == 1, found
    ((where, weights_only),) = found.items()
    assert where.startswith("safeload.py:") and weights_only is True


# ---------------------------------------------------------------- resume snapshots


def _refused(record: list[warnings.WarningMessage], path: Path) -> bool:
    return any(str(path) in str(w.message) and "refused" in str(w.message) for w in record)


def test_ssl_teacher_snapshot_is_refused_and_recomputed(digits, tmp_path, marker):
    snap = plant(tmp_path / "cut" / "teacher_state.pt", marker)
    with pytest.warns(UserWarning) as record:
        model = train_teacher(digits, TEACHER, tmp_path / "cut", CPU)
    assert _refused(record, snap)
    assert snap.with_name("teacher_state.pt.refused").is_file()
    assert same(model, train_teacher(digits, TEACHER, tmp_path / "fresh", CPU))


def test_supervised_teacher_snapshot_is_refused_and_recomputed(digits, tmp_path, marker):
    cfg = dict(TEACHER, kind="supervised")

    def train(scratch: Path) -> torch.nn.Module:
        torch.manual_seed(0)
        return train_supervised_teacher(digits, cfg, build_teacher("convnet", digits), scratch,
                                        CPU)

    snap = plant(tmp_path / "cut" / "teacher_state.pt", marker)
    with pytest.warns(UserWarning) as record:
        model = train(tmp_path / "cut")
    assert _refused(record, snap)
    assert same(model, train(tmp_path / "fresh"))
    # its own snapshot (plain data) resumes without a warning, to the same weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(train(tmp_path / "fresh"), model)


def _context(root: Path, scratch: Path, channels: int = 1) -> MethodContext:
    g = torch.Generator().manual_seed(123)
    images = torch.randn(40, channels, 8, 8, generator=g)
    targets = torch.randn(40, 6, generator=g)

    def teacher() -> torch.nn.Module:
        return tiny_teacher(channels)

    if channels == 3:
        with torch.no_grad():
            targets = teacher().features(images)
    return tiny_method_context(images, targets, root, scratch=scratch,
                               mean=(0.5,) * channels, std=(0.25,) * channels,
                               load_teacher=teacher, inputs_key="tiny")


METHODS = {
    "mkdt": (dict(width=8, num_experts=2, train_epochs=2, expert_batch=8, iterations=4,
                  syn_steps=2, batch_syn=4, eval_it=2, max_start_epoch=1, expert_epochs=1), 1,
             "mkdt_state.pt"),
    "krrst": (dict(width=8, pool_size=2, online_iterations=3, outer_steps=4, real_batch=16,
                   snapshot_every=2), 3, "krrst_state.pt"),
    "dm-ssl": (dict(width=8, clusters=2, iterations=4, real_batch=8, snapshot_every=2), 3,
               "dm_state.pt"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_snapshot_is_refused_and_recomputed(tmp_path, marker, name):
    options, channels, file = METHODS[name]
    method = create_method(name, **options)
    fresh = method.distill(_context(tmp_path, tmp_path / "fresh", channels))
    snap = plant(tmp_path / "cut" / file, marker)
    with pytest.warns(UserWarning) as record:
        out = method.distill(_context(tmp_path, tmp_path / "cut", channels))
    assert _refused(record, snap)
    assert torch.equal(out.images, fresh.images) and torch.equal(out.targets, fresh.targets)
    # the snapshot the run wrote holds tensors and plain data only, and resumes silently
    assert plain(safeload.load(tmp_path / "cut" / file))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = method.distill(_context(tmp_path, tmp_path / "cut", channels))
    assert torch.equal(again.images, fresh.images)


def plain(value) -> bool:
    """Tensors and plain data only (what a snapshot may hold)."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, str, int, float, bool))


@pytest.fixture(scope="module")
def finished(digits, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """The scratch folder of a finished 2-epoch teacher (its snapshot says epoch 2)."""
    scratch = tmp_path_factory.mktemp("finished")
    return scratch, train_teacher(digits, TEACHER, scratch, CPU)


def _spoil(part: str):
    def numpy_keys(s):
        s["rng"]["numpy"][1] = -s["rng"]["numpy"][1] - 1

    def momentum(s):
        s["opt"]["state"][0]["momentum_buffer"] = torch.zeros(3)

    def generator(s):
        s["generator"] = s["generator"][:10]

    def model_keys(s):
        s["model"].pop(next(iter(s["model"])))

    def model_shape(s):
        key = next(iter(s["model"]))
        s["model"][key] = torch.zeros(1)

    def epoch(s):
        s["epoch"] = 99

    def missing(s):
        del s["rng"]

    def sched(s):
        s["sched"]["last_epoch"] = "two"

    return {f.__name__: f for f in (numpy_keys, momentum, generator, model_keys, model_shape,
                                    epoch, missing, sched)}[part]


@pytest.mark.parametrize("part", ["numpy_keys", "momentum", "generator", "model_keys",
                                  "model_shape", "epoch", "missing", "sched"])
def test_snapshot_that_does_not_fit_is_discarded(digits, tmp_path, finished, part):
    """Plain data of the wrong shape: discarded with a warning, the teacher trained afresh
    (a snapshot of the finished run would skip all training)."""
    scratch, full = finished
    state = safeload.load(scratch / "teacher_state.pt")
    assert plain(state) and state["epoch"] == 2
    _spoil(part)(state)
    snap = tmp_path / "teacher_state.pt"
    torch.save(state, snap)
    seed_everything(123)  # a discarded snapshot leaves no trace in the global generators
    with pytest.warns(UserWarning, match="ignored snapshot") as record:
        model = train_teacher(digits, TEACHER, tmp_path, CPU)
    assert any(str(snap) in str(w.message) for w in record)
    assert same(model, full)


def test_a_fitting_snapshot_resumes_without_a_word(digits, tmp_path, finished):
    scratch, full = finished
    torch.save(safeload.load(scratch / "teacher_state.pt"), tmp_path / "teacher_state.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(train_teacher(digits, TEACHER, tmp_path, CPU), full)


def test_rng_state_is_plain_data_and_round_trips(tmp_path):
    seed_everything(5)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = [torch.rand(3), torch.rand(2)]
    state = safeload.load(tmp_path / "rng.pt")
    assert plain(state)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])


# ---------------------------------------------------------------- cache artifacts


def publish(cache: ArtifactCache, stage: str, key: str, name: str, marker: Path) -> Path:
    """An artifact with a planted file and a manifest that vouches for it (whoever can
    write the cache can rewrite manifests too)."""

    def produce(tmp: Path) -> None:
        plant(tmp / name, marker)

    return cache.get_or_create(stage, key, produce)


def _moved_aside(cache: ArtifactCache, stage: str, key: str) -> bool:
    parent = cache.path(stage, key).parent
    return not cache.path(stage, key).exists() and any(
        p.name.startswith(f"{key}.corrupt-") for p in parent.iterdir())


def test_teacher_artifact_is_refused(digits, tmp_path, marker):
    cache = ArtifactCache(tmp_path)
    publish(cache, "teacher", "k", "teacher.pt", marker)
    with pytest.raises(UserError, match="teacher.pt.*refused.*moved to.*rerun"):
        load_teacher(Env(str(tmp_path)), "k", "convnet", digits)
    assert _moved_aside(cache, "teacher", "k")


def test_representations_artifact_is_refused(tmp_path, marker):
    cache = ArtifactCache(tmp_path)
    publish(cache, "representations", "r", "representations.pt", marker)
    with pytest.raises(UserError, match="representations.pt.*refused"):
        method_context(Env(str(tmp_path)), MethodInputs("digits", "r", "t", "convnet"), 10, 0,
                       tmp_path / "scratch")
    assert _moved_aside(cache, "representations", "r")


def test_artifacts_of_plain_data_that_does_not_fit_are_corrupt(digits, tmp_path):
    """A manifest-vouched file of tensors that is not what its stage stores is not used."""
    cache = ArtifactCache(tmp_path)
    wrong = {"teacher": {"conv.weight": torch.zeros(2)}, "representations": torch.zeros(5, 4)}
    for stage, value in wrong.items():
        cache.get_or_create(stage, "k",
                            lambda tmp, v=value, s=stage: torch.save(v, tmp / f"{s}.pt"))
    with pytest.raises(UserError, match="teacher.pt.*cannot be used: not the weights"):
        load_teacher(Env(str(tmp_path)), "k", "convnet", digits)
    with pytest.raises(UserError, match="representations.pt.*cannot be used: not one"):
        method_context(Env(str(tmp_path)), MethodInputs("digits", "k", "t", "convnet"), 10, 0,
                       tmp_path / "scratch")
    assert _moved_aside(cache, "teacher", "k") and _moved_aside(cache, "representations", "k")
    path = cache.get_or_create("expert", "k", lambda tmp: torch.save(torch.zeros(5),
                                                                     tmp / "trajectory.pt"))
    with pytest.raises(UserError, match="trajectory.pt.*cannot be used: not a trajectory"):
        load_trajectories([path / "trajectory.pt"])


def test_views_and_scores_of_other_shapes_are_corrupt(tmp_path):
    ctx = _context(tmp_path, tmp_path / "s", channels=3)
    config, inputs = tv.views_config(2, 4, False), {"representations": ctx.inputs_key}
    short = {"offsets": torch.zeros(2, 39, 2, dtype=torch.uint8),
             "flips": torch.zeros(2, 39, dtype=torch.bool), "targets": torch.zeros(2, 39, 8)}
    ctx.cache.get_or_create(tv.STAGE, ArtifactCache.key(tv.STAGE, config, inputs),
                            lambda tmp: torch.save(short, tmp / tv.VIEWS_FILE),
                            config=config, inputs=inputs)
    with pytest.raises(UserError, match="views.pt.*not 2 views of each of the 40 images"):
        tv.ensure_views(ctx, 2, 4, False, ctx.load_teacher)
    cfg = expert_config(create_method("mkdt").config)
    scores = {**cfg, "epoch": SCORE_EPOCH}
    ctx.cache.get_or_create("expert-scores", ctx.cache.key("expert-scores", scores, inputs),
                            lambda tmp: torch.save(torch.zeros(3), tmp / "scores.pt"),
                            config=scores, inputs=inputs)
    with pytest.raises(UserError, match="scores.pt.*not one score for each of the 40"):
        high_loss_scores(ctx, cfg, [])


def test_expert_artifact_is_refused(tmp_path, marker):
    cache = ArtifactCache(tmp_path)
    path = publish(cache, "expert", "e", "trajectory.pt", marker)
    with pytest.raises(UserError, match="trajectory.pt.*refused"):
        load_trajectories([path / "trajectory.pt"])
    assert _moved_aside(cache, "expert", "e")


@pytest.mark.parametrize("stage,name", [("encoder", "encoder.pt"), ("expert-scores", "scores.pt"),
                                        ("teacher-views", "views.pt")])
def test_other_artifacts_are_refused(tmp_path, marker, stage, name):
    cache = ArtifactCache(tmp_path)
    path = publish(cache, stage, "a", name, marker)
    with pytest.raises(UserError, match=f"{name}.*refused"):
        safeload.load_artifact(path / name, mmap=True)
    assert _moved_aside(cache, stage, "a")


# ---------------------------------------------------------------- files users hand over


def test_distilled_and_imported_sets_are_refused(tmp_path, marker):
    d = DistilledSet(images=torch.zeros(4, 1, 8, 8), targets=torch.zeros(4, 3), lr=None,
                     source="digits", mean=(0.5,), std=(0.2,), method="random").save(tmp_path / "s")
    for name in ("images.pt", "targets.pt"):
        original = (d / name).read_bytes()
        plant(d / name, marker)
        with pytest.raises(UserError, match=f"{name}.*refused"):
            DistilledSet.load(d)
        with pytest.raises(UserError, match=f"{name}.*refused"):
            imported_set(str(d))
        (d / name).write_bytes(original)


def test_converted_reference_files_are_refused(digits, tmp_path, marker):
    plant(tmp_path / "x_syn.pt", marker)
    torch.save(torch.zeros(4, 8), tmp_path / "y_syn.pt")
    with pytest.raises(UserError, match="x_syn.pt.*refused"):
        from_krrst(tmp_path, digits)


def test_teacher_checkpoint_is_refused(digits, tmp_path, marker):
    path = plant(tmp_path / "barlow_twins_resnet18.pt", marker)
    with pytest.raises(UserError, match="teacher checkpoint.*barlow_twins_resnet18.pt.*refused"):
        load_teacher_checkpoint(path, "resnet18-teacher", digits)


def test_decoded_image_cache_is_refused_and_decoded_again(tmp_path, marker):
    from PIL import Image

    from mkdt_bench.data.imagefolder import load_imagefolder

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "tree" / split / label).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 100 if label == "a" else 0, 7)).save(
                    tmp_path / "tree" / split / label / f"{i}.png")
    fresh = load_imagefolder(tmp_path / "tree", tmp_path / "cache")
    (stored,) = (tmp_path / "cache" / "datasets").glob("*.pt")
    plant(stored, marker)
    with pytest.warns(UserWarning, match="decoded-image cache.*refused"):
        again = load_imagefolder(tmp_path / "tree", tmp_path / "cache")
    assert torch.equal(again.train_images, fresh.train_images)
    assert safeload.load(stored)["classes"] == ["a", "b"]  # replaced by a good one
    # plain data with other labels than the folders say is decoded again too
    payload = safeload.load(stored)
    payload["train_labels"] = 1 - payload["train_labels"]
    torch.save(payload, stored)
    with pytest.warns(UserWarning, match="decoded-image cache.*train split"):
        again = load_imagefolder(tmp_path / "tree", tmp_path / "cache")
    assert torch.equal(again.train_labels, fresh.train_labels)
    # NaN statistics, or test images of another size, are never used either
    for change, reason in [({"mean": (float("nan"),) * 3}, "mean/std"),
                           ({"std": (1.0, 1.0, 1.0)}, "mean/std"),
                           ({"test_images": fresh.test_images[:, :, :4, :4]}, "size")]:
        torch.save({**safeload.load(stored), **change}, stored)
        with pytest.warns(UserWarning, match=f"decoded-image cache.*{reason}"):
            again = load_imagefolder(tmp_path / "tree", tmp_path / "cache")
        assert again.mean == fresh.mean and again.std == fresh.std
        assert torch.equal(again.test_images, fresh.test_images)


def _cifar_like(folder: Path, marker: Path | None = None) -> SimpleNamespace:
    """A CIFAR-10-shaped folder of two tiny batches (the second a code-running pickle with
    ``marker``) and a torchvision-like class listing their md5 sums."""
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    batches = {"data_batch_1": {"data": g.integers(0, 256, (4, 3072), dtype=np.uint8),
                                "labels": [0, 1, 2, 1]},
               "test_batch": {"data": g.integers(0, 256, (2, 3072), dtype=np.uint8),
                              "labels": [2, 0]},
               "batches.meta": {"label_names": ["a", "b", "c"]}}
    if marker is not None:
        batches["test_batch"]["labels"] = Payload(marker)
    md5 = {}
    for name, content in batches.items():
        data = pickle.dumps(content, protocol=4)
        (folder / name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return SimpleNamespace(train_list=[["data_batch_1", md5["data_batch_1"]]],
                           test_list=[["test_batch", md5["test_batch"]]],
                           meta={"filename": "batches.meta", "key": "label_names",
                                 "md5": md5["batches.meta"]})


def test_cifar_batches_unpickle_arrays_only(tmp_path, marker):
    listing = _cifar_like(tmp_path / "good")
    images, labels, classes = tv_sets._read(listing, tmp_path / "good", train=True)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 1] and classes == ["a", "b", "c"]
    listing = _cifar_like(tmp_path / "bad", marker)
    with pytest.raises(ValueError, match="global .*open is not allowed"):
        tv_sets._read(listing, tmp_path / "bad", train=False)


def test_cifar_files_that_are_not_the_published_ones_are_not_unpickled(tmp_path, marker):
    """torchvision checks the md5 sums and then unpickles the files anew, with a full
    unpickler: a file swapped in between ran code. Now the checked bytes are the ones read."""
    _cifar_like(tmp_path / "cifar-10-batches-py", marker)
    with no_writes(), pytest.raises(MissingDataError, match="cifar10 is not in"):
        load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="md5 differs"):
        tv_sets.read_batch(tmp_path / "cifar-10-batches-py" / "test_batch", "0" * 32)


def test_cifar_batches_that_would_never_end_are_not_read(tmp_path, monkeypatch):
    """A FIFO (the read would block forever) or /dev/zero (never ends) as a batch file."""
    os.mkfifo(tmp_path / "data_batch_1")
    with pytest.raises(OSError, match="not a regular file"):
        tv_sets.read_batch(tmp_path / "data_batch_1", "0" * 32)
    os.symlink("/dev/zero", tmp_path / "data_batch_2")
    with pytest.raises(OSError, match="not a regular file"):
        tv_sets.read_batch(tmp_path / "data_batch_2", "0" * 32)
    monkeypatch.setattr(tv_sets, "_MAX_BATCH_BYTES", 10)
    (tmp_path / "data_batch_3").write_bytes(b"x" * 11)
    with pytest.raises(ValueError, match="md5 differs"):
        tv_sets.read_batch(tmp_path / "data_batch_3", hashlib.md5(b"x" * 11).hexdigest())


# ---------------------------------------------------------------- the audit's case, end to end

FAST = ["--methods", "random", "--seeds", "0", *FAST_FLAGS]


@pytest.mark.slow
def test_planted_teacher_snapshot_in_a_shared_cache_runs_nothing(tmp_path, teacher_cache):
    """The audit's case: a run stopped during teacher training leaves its snapshot in the
    (shared) cache; someone replaces it with a code-running pickle. The next run refuses it,
    says so, trains the teacher again and prints the same table."""
    cache = teacher_cache
    env = dict(os.environ, MKDT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="1",
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    cmd = [sys.executable, "-m", "mkdt_bench.cli", "run", *FAST]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    (teacher,) = (cache / "artifacts" / "teacher").glob("*/manifest.json")
    key = teacher.parent.name
    shutil.rmtree(cache / "artifacts")
    (cache / "results.sqlite").unlink()
    marker = tmp_path / "code-ran"
    snap = plant(cache / "scratch" / "teacher" / key / "teacher_state.pt", marker)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert not marker.exists()
    assert second.returncode == 0, second.stderr
    assert str(snap) in second.stderr and "refused" in second.stderr
    table = [line for line in first.stdout.splitlines() if line.startswith("|")]
    assert table and table == [line for line in second.stdout.splitlines()
                               if line.startswith("|")]
