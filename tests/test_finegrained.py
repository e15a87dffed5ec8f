"""Fine-grained transfer tasks (evaluation.md A.5) read from their published layouts,
written here as tiny archives of real JPEG files of mixed sizes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mkdt_bench.data import load_dataset
from mkdt_bench.data._decode import channel_stats
from mkdt_bench.errors import MissingDataError


def _jpeg(path, seed, size=(23, 17)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _lanczos(path, side):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def make_cub(root):
    base = root / "CUB_200_2011"
    names = ["001.Albatross", "002.Auklet", "003.Tern"]
    lines, labels, split = [], [], []
    for i in range(1, 10):
        cls = (i - 1) % 3
        rel = f"{names[cls]}/img_{i}.jpg"
        _jpeg(base / "images" / rel, i, size=(20 + i, 15 + 2 * i))
        lines.append(f"{i} {rel}")
        labels.append(f"{i} {cls + 1}")
        split.append(f"{i} {int(i <= 6)}")
    (base / "images.txt").write_text("\n".join(lines) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{k + 1} {n}" for k, n in enumerate(names)))
    return base


def make_dogs(root):
    from scipy.io import savemat

    base = root / "stanford-dogs"
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    lists = {"train": [], "test": []}
    for i in range(8):
        rel = f"{breeds[i % 2]}/{breeds[i % 2][:9]}_{i}.jpg"
        _jpeg(base / "Images" / rel, 100 + i, size=(30 + i, 22))
        lists["train" if i < 5 else "test"].append((rel, i % 2 + 1))
    for split, entries in lists.items():
        files = np.empty((len(entries), 1), dtype=object)
        for k, (rel, _) in enumerate(entries):
            files[k, 0] = np.array([rel])
        savemat(base / f"{split}_list.mat", {
            "file_list": files, "labels": np.array([[y] for _, y in entries], dtype=np.uint8)})
    return base


def make_aircraft(root):
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (data / "variants.txt").parent.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, ids in (("trainval", range(6)), ("test", range(6, 9))):
        lines = []
        for i in ids:
            _jpeg(data / "images" / f"{1000 + i}.jpg", i, size=(40, 25 + i))
            lines.append(f"{1000 + i} {variants[i % 3]}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return root / "fgvc-aircraft-2013b"


def make_flowers(root, monkeypatch):
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    base = root / "flowers-102"
    for i in range(1, 9):
        _jpeg(base / "jpg" / f"image_{i:05d}.jpg", i, size=(33, 21 + i))
    savemat(base / "imagelabels.mat", {"labels": np.array([[1, 2, 1, 2, 1, 2, 1, 2]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4]]),
                                 "tstid": np.array([[5, 6, 7, 8]])})
    # torchvision checks the .mat files' md5 sums of the real release; these are stand-ins.
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)
    return base


def _check(data, files_train, side):
    assert data.train_images.shape[1:] == (3, side, side)
    assert data.test_images.shape[1:] == (3, side, side)
    assert data.train_images.dtype == torch.uint8
    assert torch.equal(data.train_images[0], _lanczos(files_train[0], side))
    assert data.mean == pytest.approx(channel_stats(data.train_images)[0])
    assert data.std == pytest.approx(channel_stats(data.train_images)[1])


def test_cub2011_layout(tmp_path):
    base = make_cub(tmp_path)
    data = load_dataset("cub2011", root=tmp_path, cache_dir=tmp_path / "cache")
    assert data.classes == ["001.Albatross", "002.Auklet", "003.Tern"]
    assert data.train_labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.test_labels.tolist() == [0, 1, 2]
    _check(data, [base / "images" / "001.Albatross" / "img_1.jpg"], 32)


def test_dogs_layout_and_image_size(tmp_path):
    base = make_dogs(tmp_path)
    data = load_dataset("dogs", root=base, cache_dir=tmp_path / "cache", image_size=16)
    assert data.num_classes == 2 and len(data.train_labels) == 5 and len(data.test_labels) == 3
    assert data.train_labels.tolist() == [0, 1, 0, 1, 0]
    _check(data, [base / "Images" / "n02085620-Chihuahua" / "n02085620_0.jpg"], 16)


def test_aircraft_through_torchvision(tmp_path):
    base = make_aircraft(tmp_path)
    data = load_dataset("aircraft", root=tmp_path, cache_dir=tmp_path / "cache")
    assert data.classes == ["707-320", "A300B4", "Cessna 172"]
    assert data.train_labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(data.test_labels) == 3
    _check(data, [base / "data" / "images" / "1000.jpg"], 32)


def test_flowers_through_torchvision(tmp_path, monkeypatch):
    base = make_flowers(tmp_path, monkeypatch)
    data = load_dataset("flowers", root=tmp_path, cache_dir=tmp_path / "cache", image_size=8)
    assert data.num_classes == 102
    assert data.train_labels.tolist() == [0, 1, 0] and data.test_labels.tolist() == [0, 1, 0, 1]
    _check(data, [base / "jpg" / "image_00001.jpg"], 8)


def test_decoded_copy_is_cached_per_size(tmp_path):
    make_cub(tmp_path)
    cache = tmp_path / "cache"
    load_dataset("cub2011", root=tmp_path, cache_dir=cache, image_size=8)
    load_dataset("cub2011", root=tmp_path, cache_dir=cache, image_size=12)
    assert len(list((cache / "datasets").glob("*.pt"))) == 2
    again = load_dataset("cub2011", root=tmp_path, cache_dir=cache, image_size=8)
    assert again.train_images.shape[-1] == 8
    assert len(list((cache / "datasets").glob("*.pt"))) == 2


@pytest.mark.parametrize("name, missing", [("cub2011", "CUB_200_2011/images.txt"),
                                           ("dogs", "stanford-dogs/Images")])
def test_absent_files_name_the_missing_path(tmp_path, name, missing):
    with pytest.raises(MissingDataError) as err:
        load_dataset(name, root=tmp_path, cache_dir=tmp_path / "cache")
    assert err.value.path == str(tmp_path / missing)
    assert str(tmp_path / missing) in str(err.value)


def _replace_line(path, old, new):
    path.write_bytes(path.read_bytes().replace(old, new, 1))


@pytest.mark.parametrize("damage, expected", [
    # a 0 in the 1-based labels would silently be the last class
    (lambda b: _replace_line(b / "image_class_labels.txt", b"1 1\n", b"1 0\n"), "label 0"),
    (lambda b: _replace_line(b / "image_class_labels.txt", b"1 1\n", b"1 9\n"), "label 9"),
    (lambda b: _replace_line(b / "image_class_labels.txt", b"1 1\n", b"1 one\n"), "line 1"),
    (lambda b: _replace_line(b / "images.txt", b"1 ", b"x1 "), "line 1"),
    (lambda b: _replace_line(b / "classes.txt", b"1 ", b"first "), "line 1"),
    (lambda b: _replace_line(b / "images.txt", b"1 ", b"\xff "), "cannot be read"),
    (lambda b: ((b / "classes.txt").unlink(), os.mkfifo(b / "classes.txt")),
     "not a regular file"),
    (lambda b: (b / "train_test_split.txt").write_text(
        "".join(f"{i} 1\n" for i in range(1, 10))), "test split"),
])
def test_cub2011_bad_lists_are_one_line(tmp_path, damage, expected):
    from mkdt_bench.errors import UserError

    damage(make_cub(tmp_path))
    with pytest.raises(UserError, match=expected) as error:
        load_dataset("cub2011", root=tmp_path, cache_dir=tmp_path / "cache")
    assert "\n" not in str(error.value)


def test_dogs_bad_lists_are_one_line(tmp_path):
    from scipy.io import savemat

    from mkdt_bench.errors import UserError

    base = make_dogs(tmp_path)
    savemat(base / "train_list.mat", {"labels": np.array([[1]])})  # no file_list
    with pytest.raises(UserError, match="train_list.mat is not a list"):
        load_dataset("dogs", root=base, cache_dir=tmp_path / "cache")
    (base / "train_list.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="train_list.mat is not a list"):
        load_dataset("dogs", root=base, cache_dir=tmp_path / "cache")
