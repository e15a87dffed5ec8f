"""``mkdt-bench plot`` and ``show``: figures are written, non-empty, and bad input is refused."""

from __future__ import annotations

import subprocess
import sys

import torch
from PIL import Image

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.results import ResultRow, ResultStore


def _store(path):
    store = ResultStore(path)
    rows = []
    for method in ("teacher", "random", "mkdt"):
        for budget in ((10,) if method == "teacher" else (10, 50)):
            for fraction in (0.01, 0.05):
                for seed in (0, 1):
                    rows.append(ResultRow(
                        cell_key=f"{method}-{budget}-{fraction}-{seed}", dataset="digits",
                        method=method, budget=budget, arch="convnet", evaluator="linear",
                        task="digits", fraction=fraction, seed=seed,
                        accuracy=50 + 100 * fraction + seed + budget / 10))
    store.add(rows)
    return store


def cli(*args):
    return subprocess.run([sys.executable, "-m", "mkdt_bench.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_plot_writes_fraction_and_budget_figures(tmp_path):
    _store(tmp_path / "r.sqlite")
    out = cli("plot", "--results-db", str(tmp_path / "r.sqlite"), "--cache-dir",
              str(tmp_path / "c"), "--out", str(tmp_path / "plots"))
    assert out.returncode == 0, out.stderr
    paths = out.stdout.split()
    names = sorted(p.rsplit("-", 2)[-2] + "-" + p.rsplit("-", 1)[-1] for p in paths)
    assert len(paths) == 3 and any(p.endswith("-fractions.png") for p in paths)
    assert sum("-budget-" in p for p in paths) == 2, names
    for p in paths:
        with Image.open(p) as image:
            assert image.size[0] > 300 and image.getextrema() != ((255, 255),) * 4


def test_plot_without_results_is_one_line(tmp_path):
    out = cli("plot", "--cache-dir", str(tmp_path), "--out", str(tmp_path / "plots"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_show_writes_a_denormalised_grid(tmp_path):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    raw = torch.rand(9, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    DistilledSet(images=images, targets=torch.zeros(9, 2), lr=None, source="x", mean=mean,
                 std=std, method="m").save(tmp_path / "set")
    out = cli("show", str(tmp_path / "set"), "--out", str(tmp_path / "set.png"))
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / "set.png") as image:
        assert image.size == (3 * 9 + 1, 3 * 9 + 1)  # 3 x 3 images of 8 px, padding 1
        pixel = image.convert("RGB").getpixel((1, 1))  # top-left pixel of the first image
    expected = tuple(int(v * 255 + 0.5) for v in raw[0, :, 0, 0].tolist())
    assert all(abs(a - b) <= 1 for a, b in zip(pixel, expected))
    bad = cli("show", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "nowhere" in bad.stderr
