"""The command line, through a real subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_FLAGS, cli


def artifacts(cache: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (cache / "artifacts").rglob("manifest.json")}


@pytest.mark.slow
def test_run_table_and_cache_hit(teacher_cache):
    """A run (its teacher is stored), the same run again from the cache, the table of the
    database, ``cache verify`` finding truncated files, and a run replacing them."""
    cache = teacher_cache
    args = ("run", "--methods", "random,none", "--seeds", "0,1", *FAST_FLAGS)
    first = cli(*args, cache=cache)
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stdout.splitlines() if ln.startswith("|")]
    assert lines[0].split("|")[2].strip() == "digits @ 1%"
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["teacher", "random", "none (0)"]
    assert first.stdout.startswith("Table: Top-1 accuracy (%) on the test split of digits")
    assert "±" in first.stdout
    before = artifacts(cache)
    # teacher, representations, 1 random set (the quick preset distils once for all seeds)
    # + 1 unseeded none set, 2 x 2 encoders
    assert len(before) == 1 + 1 + 2 + 4
    second = cli(*args, cache=cache)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert artifacts(cache) == before  # nothing recomputed
    table = cli("table", "--format", "csv", cache=cache)
    assert table.returncode == 0 and "teacher" in table.stdout and "random" in table.stdout
    verify = cli("cache", "verify", cache=cache)
    assert verify.returncode == 0 and f"{len(before)} artifacts checked, 0 corrupt" in verify.stdout
    encoder = next((cache / "artifacts" / "encoder").glob("*/encoder.pt"))
    encoder.write_bytes(encoder.read_bytes()[:-10])  # truncated
    verify = cli("cache", "verify", cache=cache)
    assert verify.returncode == 1 and f"corrupt: {encoder.parent}" in verify.stdout
    distilled = next((cache / "artifacts" / "distilled").glob("*/images.pt"))
    distilled.write_bytes(distilled.read_bytes()[:-10])  # truncated
    for db in cache.glob("results.sqlite*"):  # every cell is computed again
        db.unlink()
    third = cli(*args, cache=cache)
    assert third.returncode == 0 and third.stdout == first.stdout, third.stderr
    assert "corrupt artifact" in third.stderr
    assert list(distilled.parent.parent.glob(f"{distilled.parent.name}.corrupt-*"))
    paired = cli("table", "--paired", "random", cache=cache)
    assert paired.returncode == 0 and "Difference from random" in paired.stdout
    assert "(p=" in paired.stdout and ", n=2)" in paired.stdout


def test_list():
    out = cli("list")
    assert out.returncode == 0
    assert "methods:" in out.stdout and "random" in out.stdout and "quick" in out.stdout


def test_table_layouts_intervals_metric_and_budget(tmp_path):
    from test_tables import row

    from mkdt_bench.results import ResultStore

    rows = []
    for method, base in (("random", 50.0), ("mkdt", 55.0)):
        for arch, shift in (("convnet", 0.0), ("resnet18", 3.0)):
            for seed in range(3):
                acc = base + shift + seed
                rows.append(row(method, seed, acc, arch=arch, timings={
                    "storage_bytes": 2048.0, "pretrain_steps": 80.0, "pretrain_s": 1.5}))
                rows[-1].metrics = {"mean_per_class_accuracy": acc - 1}
                rows.append(row(method, seed, None, arch=arch, task="cub2011", status="missing",
                                error="missing: /data/CUB_200_2011/images.txt"))
    db = tmp_path / "r.sqlite"
    ResultStore(db).add(rows)
    out = cli("table", "--results-db", str(db), "--layout", "paper", "--ci",
              "--metric", "mean_per_class_accuracy", "--budget-table", "--paired", "random")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "encoder convnet; evaluator linear" in text and "encoder resnet18;" in text
    assert "Mean per-class accuracy (%)" in text
    assert "| mkdt (143)" in text and "n/a (missing: /data/CUB_200_2011/images.txt)" in text
    assert "58.00 ± 0.82 [" in text  # mkdt on resnet18, per-class accuracy 57, 58, 59
    assert "storage (KiB)" in text and "pre-training steps for every set of one size" in text
    assert "+5.00 (p=n/a, n=3)" in text  # mkdt - random per seed is exactly 5
    default = cli("table", "--results-db", str(db))
    assert "encoders convnet, resnet18 (column groups)" in default.stdout
    bad = cli("table", "--results-db", str(db), "--layout", "wide")
    assert bad.returncode == 2 and "invalid choice: 'wide'" in bad.stderr
