"""Data-set loaders: digits, imagefolder (with its decode cache), tinyimagenet, CIFAR."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import Image

from mkdt_bench.data import DATASETS, load_dataset, torchvision_sets
from mkdt_bench.data import digits as digits_module
from mkdt_bench.data._decode import channel_stats
from mkdt_bench.errors import UserError

RED, BLUE = (200, 30, 30), (30, 30, 200)


def _image(path: Path, color: tuple[int, int, int], size: int = 4, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).convert(mode).save(path)


def _folder(root: Path) -> Path:
    """train: 3 cat (red) + 2 dog (blue), test: 1 + 1; plus files that must be ignored."""
    for i in range(3):
        _image(root / "train" / "cat" / f"{i}.png", RED)
    _image(root / "train" / "dog" / "a.PNG", BLUE)
    _image(root / "train" / "dog" / "b.bmp", BLUE, mode="L")  # grayscale becomes RGB
    _image(root / "test" / "cat" / "x.jpg", RED)
    _image(root / "test" / "dog" / "y.png", BLUE)
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")
    (root / "train" / "cat" / "notes.txt").write_text("ignored")
    (root / "train" / ".cache").mkdir()
    return root


def _load_folder(path: Path, cache_dir: Path):
    return load_dataset(f"imagefolder:{path}", cache_dir=cache_dir)


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message


# --- digits -------------------------------------------------------------------------------

def test_digits_shapes_and_split(tmp_path: Path) -> None:
    ds = load_dataset("digits", cache_dir=tmp_path)
    assert ds.train_images.shape == (1437, 1, 8, 8)
    assert ds.test_images.shape == (360, 1, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert int(ds.train_images.max()) == 255
    assert ds.classes == [str(d) for d in range(10)]
    all_counts = torch.bincount(torch.cat([ds.train_labels, ds.test_labels]), minlength=10)
    test_counts = torch.bincount(ds.test_labels, minlength=10)
    assert (test_counts.double() - 0.2 * all_counts.double()).abs().max() <= 1  # stratified


def test_digits_deterministic_and_stats_constants(tmp_path: Path) -> None:
    a, b = load_dataset("digits", cache_dir=tmp_path), load_dataset("digits", cache_dir=tmp_path)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    assert torch.equal(a.train_images, b.train_images)
    assert torch.equal(a.test_labels, b.test_labels)
    mean, std = channel_stats(a.train_images)
    assert a.mean == digits_module.MEAN and a.std == digits_module.STD
    assert mean == pytest.approx(a.mean, abs=5e-5) and std == pytest.approx(a.std, abs=5e-5)


# --- imagefolder --------------------------------------------------------------------------

def test_imagefolder_loads(tmp_path: Path) -> None:
    ds = _load_folder(_folder(tmp_path / "set"), tmp_path / "cache")
    assert ds.classes == ["cat", "dog"]
    assert ds.train_images.shape == (5, 3, 4, 4) and ds.test_images.shape == (2, 3, 4, 4)
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.test_labels.tolist() == [0, 1]
    assert ds.train_images[0, :, 0, 0].tolist() == list(RED)
    assert ds.train_images[3, :, 0, 0].tolist() == list(BLUE)
    gray = ds.train_images[4, :, 0, 0]
    assert gray[0] == gray[1] == gray[2]
    assert ds.mean == pytest.approx(channel_stats(ds.train_images)[0])
    assert ds.name == f"imagefolder:{tmp_path / 'set'}" and ds.fingerprint


def test_imagefolder_second_load_reads_cache(tmp_path: Path, monkeypatch) -> None:
    root, cache = _folder(tmp_path / "set"), tmp_path / "cache"
    first = _load_folder(root, cache)
    assert len(list((cache / "datasets").glob("*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    second = _load_folder(root, cache)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert (second.classes, second.mean, second.std) == (first.classes, first.mean, first.std)
    assert second.fingerprint == first.fingerprint


def test_imagefolder_changed_file_invalidates_cache(tmp_path: Path) -> None:
    root, cache = _folder(tmp_path / "set"), tmp_path / "cache"
    _load_folder(root, cache)
    _image(root / "train" / "cat" / "0.png", BLUE)
    stat = os.stat(root / "train" / "cat" / "0.png")
    os.utime(root / "train" / "cat" / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ds = _load_folder(root, cache)
    assert ds.train_images[0, :, 0, 0].tolist() == list(BLUE)
    assert len(list((cache / "datasets").glob("*.pt"))) == 2


def _missing_path(root: Path) -> Path:
    return root / "nowhere"


def _no_test(root: Path) -> Path:
    _image(root / "train" / "cat" / "0.png", RED)
    return root


def _no_train(root: Path) -> Path:
    _image(root / "test" / "cat" / "0.png", RED)
    return root


def _no_classes(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    (root / "train" / "readme.txt").write_text("no folders")
    _image(root / "test" / "cat" / "0.png", RED)
    return root / "train"


def _empty_class(root: Path) -> Path:
    _folder(root)
    (root / "test" / "dog" / "y.png").unlink()
    (root / "test" / "dog" / "y.txt").write_text("not an image")
    return root / "test" / "dog"


def _undecodable(root: Path) -> Path:
    _folder(root)
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG")
    return bad


def _different_sizes(root: Path) -> Path:
    _folder(root)
    big = root / "train" / "dog" / "big.png"
    _image(big, BLUE, size=8)
    return big


def _other_test_classes(root: Path) -> Path:
    _folder(root)
    _image(root / "test" / "bird" / "0.png", RED)
    return root / "test"


@pytest.mark.parametrize("make", [_missing_path, _no_test, _no_train, _no_classes, _empty_class,
                                  _undecodable, _different_sizes, _other_test_classes])
def test_imagefolder_errors_name_the_path(tmp_path: Path, make) -> None:
    root = tmp_path / "set"
    named = make(root)
    with pytest.raises(UserError) as error:
        _load_folder(root if make is not _missing_path else named, tmp_path / "cache")
    _assert_one_line_naming(error, named)


def test_imagefolder_error_messages(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _different_sizes(root)
    with pytest.raises(UserError, match="8x8.*4x4"):
        _load_folder(root, tmp_path / "cache")
    with pytest.raises(UserError, match="needs a path"):
        DATASETS.get("imagefolder:")


# --- tinyimagenet -------------------------------------------------------------------------

def _tiny(parent: Path) -> Path:
    """A 2-class ``tiny-imagenet-200`` tree: n01 red, n02 blue; 2 train + 3 val images."""
    base = parent / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("n02\nn01\n")
    for wnid, color in (("n01", RED), ("n02", BLUE)):
        for i in range(2):
            _image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", color, size=64)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    rows = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02")]
    for name, wnid in rows:
        _image(base / "val" / "images" / name, RED if wnid == "n01" else BLUE, size=64)
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t0\t0\t63\t63\n" for name, wnid in rows))
    return base


@pytest.mark.parametrize("give_parent", [True, False])
def test_tinyimagenet_loads(tmp_path: Path, give_parent: bool) -> None:
    base = _tiny(tmp_path / "data")
    ds = load_dataset("tinyimagenet", root=base.parent if give_parent else base,
                      cache_dir=tmp_path / "cache")
    assert ds.classes == ["n01", "n02"]
    assert ds.train_images.shape == (4, 3, 64, 64) and ds.test_images.shape == (3, 3, 64, 64)
    assert ds.train_labels.tolist() == [0, 0, 1, 1]
    assert ds.test_labels.tolist() == [1, 0, 1]
    reddish = ds.test_images[:, 0].float().mean((1, 2)) > ds.test_images[:, 2].float().mean((1, 2))
    assert reddish.tolist() == [False, True, False]
    assert len(list((tmp_path / "cache" / "datasets").glob("*.pt"))) == 1


def test_tinyimagenet_default_root_and_missing(tmp_path: Path) -> None:
    _tiny(tmp_path / "cache" / "data")
    assert load_dataset("tinyimagenet", cache_dir=tmp_path / "cache").num_classes == 2
    with pytest.raises(UserError) as error:
        load_dataset("tinyimagenet", root=tmp_path / "empty", cache_dir=tmp_path / "cache")
    _assert_one_line_naming(error, tmp_path / "empty" / "tiny-imagenet-200")
    assert "val_annotations.txt" in str(error.value)


def test_tinyimagenet_bad_annotation(tmp_path: Path) -> None:
    base = _tiny(tmp_path)
    with open(base / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="line 4"):
        load_dataset("tinyimagenet", root=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("damage, expected", [
    (lambda b: (b / "wnids.txt").write_text("n01\n"), "lists 1 class"),
    (lambda b: (b / "wnids.txt").write_text(""), "lists 0 class"),
    (lambda b: (b / "wnids.txt").write_bytes(b"n01\n\xff\xfe\n"), "wnids.txt cannot be read"),
    (lambda b: ((b / "wnids.txt").unlink(), (b / "wnids.txt").mkdir()), "wnids.txt cannot"),
    (lambda b: (b / "val" / "val_annotations.txt").write_bytes(b"\xff\t\n"),
     "val_annotations.txt cannot be read"),
    (lambda b: ((b / "wnids.txt").unlink(), os.mkfifo(b / "wnids.txt")),
     "wnids.txt cannot be read as UTF-8 text \\(not a regular file"),
])
def test_tinyimagenet_bad_lists(tmp_path: Path, damage, expected) -> None:
    """Lists of one class (every probe would score 100 %), or not UTF-8 text: one line."""
    damage(_tiny(tmp_path))
    with pytest.raises(UserError, match=expected) as error:
        load_dataset("tinyimagenet", root=tmp_path, cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)


# --- CIFAR through torchvision ------------------------------------------------------------

@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python")])
def test_cifar_offline_error_names_directory(tmp_path: Path, monkeypatch, name, folder) -> None:
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision_sets, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as error:
        load_dataset(name, root=tmp_path / "empty", cache_dir=tmp_path / "cache")
    _assert_one_line_naming(error, tmp_path / "empty" / folder)
    assert "--data-root" in str(error.value)
    with pytest.raises(UserError) as error:
        load_dataset(name, cache_dir=tmp_path / "cache")
    _assert_one_line_naming(error, tmp_path / "cache" / "data" / folder)


def test_cifar10_from_torchvision_files(tmp_path: Path, monkeypatch) -> None:
    """Tiny stand-in batch files (checksums skipped): layout and channel order survive."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[file] = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 2).tolist()}
        (folder / file).write_bytes(pickle.dumps(batches[file]))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    monkeypatch.setattr(torchvision_sets, "matches_published", lambda data, md5: True)

    ds = load_dataset("cifar10", root=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.train_images.shape == (10, 3, 32, 32) and ds.test_images.shape == (2, 3, 32, 32)
    assert ds.train_images.is_contiguous() and ds.classes == names
    first = torch.from_numpy(batches["data_batch_1"]["data"][0].reshape(3, 32, 32))
    assert torch.equal(ds.train_images[0], first)
    assert ds.test_labels.tolist() == batches["test_batch"]["labels"]
    assert ds.mean == (0.4914, 0.4822, 0.4465)


# --- the real CIFAR-10 JPEG copy ----------------------------------------------------------

@pytest.mark.data
def test_cifar10_jpeg_imagefolder(cifar10_jpeg_dir: Path, tmp_path: Path) -> None:
    first = load_dataset(f"imagefolder:{cifar10_jpeg_dir}", cache_dir=tmp_path)
    cached = load_dataset(f"imagefolder:{cifar10_jpeg_dir}", cache_dir=tmp_path)
    for ds in (first, cached):
        assert ds.train_images.shape == (50_000, 3, 32, 32)
        assert ds.test_images.shape == (10_000, 3, 32, 32)
        assert ds.num_classes == 10 and ds.classes[0] == "airplane"
        assert torch.bincount(ds.train_labels).tolist() == [5000] * 10
        assert torch.bincount(ds.test_labels).tolist() == [1000] * 10
        assert ds.mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=2e-3)
    assert cached.fingerprint == first.fingerprint
    assert torch.equal(cached.train_images, first.train_images)


def test_a_folder_too_large_to_decode_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """More images than memory holds: one line with the size needed, not a MemoryError."""
    from types import SimpleNamespace

    from mkdt_bench.data import _decode

    for i in range(2):
        Image.new("RGB", (8, 6)).save(tmp_path / f"{i}.png")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(_decode, "np", SimpleNamespace(  # numpy itself stays untouched
        empty=no_memory, asarray=np.asarray, uint8=np.uint8))
    with pytest.raises(UserError, match=r"2 images of 8x6 .* need 0.0 GiB decoded"):
        _decode.decode_images([str(tmp_path / "0.png"), str(tmp_path / "1.png")])
