"""``mkdt-bench convert``: the reference repositories' files as DistilledSets."""

from __future__ import annotations

import pytest
import torch

from mkdt_bench.convert import from_krrst, from_mkdt
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.stats import MKDT_STATS
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError


def _reference_mkdt(d, step: int = 5000):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(12, 1, 8, 8, generator=g), torch.randn(12, 5, generator=g)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(images, d / f"images_{step}.pt")
    torch.save(labels, d / f"labels_{step}.pt")
    torch.save(torch.tensor(0.36), d / f"synlr_{step}.pt")
    return images, labels


def test_mkdt_files_round_trip(tmp_path, digits):
    images, labels = _reference_mkdt(tmp_path / "ref")
    out = from_mkdt(tmp_path / "ref", 5000, digits, stats="dataset")
    assert torch.equal(out.images, images) and torch.equal(out.targets, labels)
    assert out.lr == pytest.approx(0.36) and out.mean == digits.mean
    assert out.extra["updates"] == 4999  # file K holds the state after K - 1 updates
    out.save(tmp_path / "set")
    again = DistilledSet.load(tmp_path / "set")
    assert torch.equal(again.images, images) and again.lr == out.lr


def test_krrst_raw_pixels_are_normalised(tmp_path, digits):
    raw = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    (tmp_path / "ref").mkdir()
    torch.save(raw, tmp_path / "ref" / "x_syn_final.pt")  # the other repository's name
    torch.save(torch.randn(6, 512), tmp_path / "ref" / "y_syn.pt")
    out = from_krrst(tmp_path / "ref", digits)
    mean, std = digits.mean[0], digits.std[0]
    torch.testing.assert_close(out.images, (raw - mean) / std)
    assert out.lr is None and out.extra["input_space"] == "raw"
    kept = from_krrst(tmp_path / "ref", digits, space="normalized")
    assert torch.equal(kept.images, raw)
    with pytest.raises(UserError, match="'rgb' is not one of raw, normalized"):
        from_krrst(tmp_path / "ref", digits, space="rgb")


def test_missing_file_is_named(tmp_path, digits):
    _reference_mkdt(tmp_path / "ref", step=1000)
    with pytest.raises(UserError, match="images_5000.pt"):
        from_mkdt(tmp_path / "ref", 5000, digits, stats="dataset")


def test_cli_converts_then_eval_reads_it(tmp_path, cli_here):
    _reference_mkdt(tmp_path / "ref")
    convert = ("convert", "mkdt", str(tmp_path / "ref"), "--dataset", "digits", "--stats",
               "dataset", "--out", str(tmp_path / "set"), "--cache-dir", str(tmp_path / "cache"))
    status, out, err = cli_here(*convert)
    assert status == 0, err
    assert "12 images 1x8x8" in out and DistilledSet.load(tmp_path / "set").lr > 0
    status, _, err = cli_here(*convert)
    assert status == 2 and "already exists" in err
    status, out, err = cli_here("eval", "--distilled", str(tmp_path / "set"), "--seeds", "0",
                                "--fractions", "0.05", "--set", "pretrain.epochs=1",
                                "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert status == 0, err
    assert any(ln.startswith("| import:set ") for ln in out.splitlines())


def _cifar_like(name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> ImageDataset:
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.zeros(4, dtype=torch.long)
    return ImageDataset(name, images, labels, images, labels, ["a"], mean, std)


def test_mkdt_images_are_renormalised_into_the_declared_statistics(tmp_path):
    """MKDT normalised CIFAR-10 with its constants (std 0.2023 ...); an ``imagefolder:`` copy
    declares statistics computed from its files (std ~0.245): the converted images must be
    the same pixels in the declared statistics, not the reference values relabelled."""
    raw = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    mean_c10, std_c10 = (torch.tensor(v).view(1, 3, 1, 1) for v in MKDT_STATS["cifar10"])
    d = tmp_path / "ref"
    d.mkdir()
    torch.save((raw - mean_c10) / std_c10, d / "images_5000.pt")
    torch.save(torch.randn(5, 8), d / "labels_5000.pt")
    torch.save(torch.tensor(0.3), d / "synlr_5000.pt")
    folder = _cifar_like("imagefolder:/data/cifar10-jpeg", (0.4913, 0.4821, 0.4465),
                         (0.2452, 0.2428, 0.2606))
    out = from_mkdt(d, 5000, folder, stats="cifar10")
    assert out.mean == folder.mean and out.std == folder.std
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (folder.mean, folder.std))
    torch.testing.assert_close(out.images * std + mean, raw)  # the same pixels
    assert out.extra["reference_stats"]["std"] == list(MKDT_STATS["cifar10"][1])
    with pytest.raises(UserError, match="say which with --stats"):
        from_mkdt(d, 5000, folder)  # an image folder does not say which constants
    named = from_mkdt(d, 5000, _cifar_like("cifar10", *MKDT_STATS["cifar10"]))
    torch.testing.assert_close(named.images, (raw - mean_c10) / std_c10)  # nothing to change
    with pytest.raises(UserError, match="--stats 'svhn'"):
        from_mkdt(d, 5000, folder, stats="svhn")


def test_cli_convert_refuses_an_empty_set_and_writes_nothing(tmp_path, cli_here):
    d = tmp_path / "ref"
    d.mkdir()
    torch.save(torch.empty(0, 1, 8, 8), d / "images_5000.pt")
    torch.save(torch.empty(0, 5), d / "labels_5000.pt")
    torch.save(torch.tensor(0.3), d / "synlr_5000.pt")
    status, _, err = cli_here("convert", "mkdt", str(d), "--dataset", "digits", "--stats",
                              "dataset", "--out", str(tmp_path / "set"), "--cache-dir",
                              str(tmp_path / "cache"))
    assert status == 2, err
    assert err.startswith("error:") and "holds no images" in err
    assert "Traceback" not in err and not (tmp_path / "set").exists()
