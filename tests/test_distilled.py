"""DistilledSet: round trip through a directory, validation of its contents."""

from __future__ import annotations

import pytest
import torch

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError


def make(n=4, lr=0.25):
    return DistilledSet(images=torch.randn(n, 3, 8, 8), targets=torch.randn(n, 16), lr=lr,
                        source="digits", mean=(0.5,), std=(0.2,), method="test",
                        extra={"indices": list(range(n))})


def test_round_trip(tmp_path):
    ds = make()
    ds.save(tmp_path / "set")
    back = DistilledSet.load(tmp_path / "set")
    assert torch.equal(back.images, ds.images) and torch.equal(back.targets, ds.targets)
    assert back.lr == pytest.approx(0.25)
    assert back.method == "test" and back.extra == {"indices": [0, 1, 2, 3]}
    assert back.storage_bytes == 4 * 3 * 8 * 8 * 4 + 4 * 16 * 4 + 4


def test_without_lr(tmp_path):
    make(lr=None).save(tmp_path)
    assert DistilledSet.load(tmp_path).lr is None


def test_missing_tensor_file(tmp_path):
    make().save(tmp_path)
    (tmp_path / "targets.pt").unlink()
    with pytest.raises(UserError, match="has no targets.pt"):
        DistilledSet.load(tmp_path)


def test_invalid_contents():
    with pytest.raises(UserError, match="N x D"):
        DistilledSet(torch.randn(4, 3, 8, 8), torch.randn(3, 16), None, "s", (0,), (1,), "m")
    with pytest.raises(UserError, match="NaN"):
        DistilledSet(torch.full((2, 1, 4, 4), float("nan")), torch.randn(2, 3), None, "s", (0,),
                     (1,), "m")
    with pytest.raises(UserError, match="learning rate"):
        make(lr=-1.0)
