"""The teacher: its kinds (SSL, supervised, checkpoint), training, resumption,
representations, checkpoint loading, and the keys of stored teachers."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mkdt_bench.config import build_config, default_config
from mkdt_bench.data import load_dataset
from mkdt_bench.errors import UserError
from mkdt_bench.progress import Progress
from mkdt_bench.stages.teacher import teacher_key
from mkdt_bench.teachers import (
    TEACHER_DEFAULTS,
    TEACHERS,
    describe_teacher,
    kind_name,
    teacher_kind,
)
from mkdt_bench.teachers.checkpoint import load_teacher_checkpoint
from mkdt_bench.teachers.encoder import build_teacher, encode
from mkdt_bench.teachers.ssl import train_teacher
from mkdt_bench.teachers.supervised import train_supervised_teacher

CPU = torch.device("cpu")
SMALL = dict(TEACHER_DEFAULTS, arch="convnet", epochs=2, batch_size=128, proj_dim=64,
             train_images=384)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_dataset("digits", cache_dir=tmp_path_factory.mktemp("cache"))


def weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


@pytest.mark.parametrize("ssl", ["barlow_twins", "simclr"])
def test_teacher_trains_and_encodes_deterministically(digits, tmp_path, ssl):
    cfg = dict(SMALL, ssl=ssl)
    a = train_teacher(digits, cfg, tmp_path / "a", CPU)
    b = train_teacher(digits, cfg, tmp_path / "b", CPU)
    images = digits.normalized("train")
    reps = encode(a, images, CPU)
    assert reps.shape == (len(images), a.feature_dim)
    assert torch.isfinite(reps).all()
    assert torch.equal(reps, encode(b, images, CPU))
    assert torch.equal(reps, encode(a, images, CPU))  # eval mode: no augmentation, no noise


def test_teacher_resumes_to_identical_weights(digits, tmp_path, monkeypatch):
    """Interrupted after its first epoch's snapshot, a rerun ends with the same weights."""
    import mkdt_bench.teachers.training as teacher_mod

    full = train_teacher(digits, SMALL, tmp_path / "full", CPU)

    class Interrupt(Exception):
        pass

    original = teacher_mod.atomic_torch_save

    def save_then_interrupt(obj, path):
        original(obj, path)
        raise Interrupt

    monkeypatch.setattr(teacher_mod, "atomic_torch_save", save_then_interrupt)
    with pytest.raises(Interrupt):
        train_teacher(digits, SMALL, tmp_path / "cut", CPU)
    monkeypatch.setattr(teacher_mod, "atomic_torch_save", original)
    assert torch.load(tmp_path / "cut" / "teacher_state.pt", weights_only=True)["epoch"] == 1
    resumed = train_teacher(digits, SMALL, tmp_path / "cut", CPU)
    assert all(torch.equal(p, q) for p, q in zip(weights(resumed), weights(full)))


def test_batch_larger_than_data(digits, tmp_path):
    with pytest.raises(UserError, match="teacher.batch_size"):
        train_teacher(digits, dict(SMALL, batch_size=1000), tmp_path, CPU)


def _krrst_style_resnet18(in_channels: int = 3) -> nn.Module:
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 2, bias=False)
    net.maxpool = nn.Identity()
    return net


def test_load_krrst_checkpoint_layout(tmp_path, digits):
    net = _krrst_style_resnet18(in_channels=1)
    path = tmp_path / "bt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_teacher_checkpoint(path, "resnet18-teacher", digits)
    x = digits.normalized("train")[:4]
    net.fc = nn.Identity()
    net.eval()
    with torch.no_grad():
        assert torch.allclose(model.features(x), net(x), atol=1e-5)


def test_checkpoint_of_non_tensors_or_nan_weights_is_one_line(tmp_path, digits):
    state = _krrst_style_resnet18(in_channels=1).state_dict()
    for name, broken, expected in [
        ("list", {**state, "conv1.weight": [1.0, 2.0]}, "'conv1.weight' maps a str to a list"),
        ("intkey", {**state, 7: torch.ones(1)}, "'7' maps a int to a Tensor"),
        ("nan", {**state, "conv1.weight": torch.full_like(state["conv1.weight"], float("nan"))},
         "'conv1.weight' holds NaN"),
    ]:
        torch.save(broken, tmp_path / f"{name}.pt")
        with pytest.raises(UserError, match=expected):
            load_teacher_checkpoint(tmp_path / f"{name}.pt", "resnet18-teacher", digits)


def test_checkpoint_of_another_architecture(tmp_path, digits):
    path = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    with pytest.raises(UserError, match="does not fit"):
        load_teacher_checkpoint(path, "resnet18-teacher", digits)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch file"):
        load_teacher_checkpoint(tmp_path / "junk.pt", "resnet18-teacher", digits)
    with pytest.raises(UserError, match="does not exist"):
        load_teacher_checkpoint(tmp_path / "missing.pt", "resnet18-teacher", digits)


def test_teacher_keys_of_stored_teachers_stay_valid(digits, tmp_path):
    """The keys the code before the TEACHERS registry gave (pinned): an SSL config without
    ``kind``, a supervised one with it, a checkpoint by its checksum whatever the kind."""
    cfg = default_config()
    assert teacher_key(cfg, digits) == "98eca3fbba0e264a"
    cfg["teacher"].update(ssl="simclr", arch="convnet", epochs=3)
    assert teacher_key(cfg, digits) == "61e39cf162e85b4e"
    cfg = default_config()
    cfg["teacher"]["kind"] = "supervised"
    assert teacher_key(cfg, digits) == "f5f9a7764d67528f"
    path = tmp_path / "released.pt"
    path.write_bytes(b"a released teacher")
    cfg["teacher"].update(checkpoint=str(path), arch="resnet18-teacher")
    assert teacher_key(cfg, digits) == "0552dba0e450dc12"
    cfg["teacher"]["checkpoint"] = str(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="missing.pt' does not exist"):
        teacher_key(cfg, digits)


def test_each_teacher_kind_describes_and_costs_itself():
    ssl = dict(TEACHER_DEFAULTS, ssl="simclr", arch="resnet10", epochs=20, train_images=1437)
    supervised = dict(ssl, kind="supervised", train_images=0)
    checkpoint = dict(ssl, checkpoint="/models/bt.pt")
    assert TEACHERS.names() == ["checkpoint", "ssl", "supervised"]
    assert [kind_name(c) for c in (ssl, supervised, checkpoint)] == \
        ["ssl", "supervised", "checkpoint"]
    assert [describe_teacher(c) for c in (ssl, supervised, checkpoint, {})] == [
        "SimCLR resnet10, 20 epochs on 1,437 images",
        "supervised (labelled proxy) resnet10, 20 epochs", "checkpoint bt.pt (resnet10)",
        "no teacher"]
    assert [teacher_kind(c).passes_per_image(c) for c in (ssl, supervised, checkpoint)] == \
        [2, 1, 0]
    assert [teacher_kind(c).step_label(c) for c in (ssl, dict(supervised, epochs=1),
                                                    checkpoint)] == \
        ["simclr, 20 epochs", "supervised, 1 epoch", "checkpoint"]


def test_teacher_kind_offers_the_kinds_that_train(tmp_path):
    """``checkpoint`` is a kind of the registry but chosen by ``teacher.checkpoint``."""
    with pytest.raises(UserError, match="kind='checkpoint' is not allowed; choose one of "
                                        "'ssl', 'supervised'"):
        build_config("quick", overrides=["teacher.kind=checkpoint"])
    with pytest.raises(UserError, match="unknown teacher kind 'distilled'"):
        describe_teacher({"kind": "distilled"})


def test_the_supervised_kind_trains_through_the_registry(digits, tmp_path):
    cfg = dict(SMALL, kind="supervised", epochs=1)
    kind = teacher_kind(cfg)
    torch.manual_seed(0)  # the encoder is built from the global generator, then trained
    a = kind.make(digits, cfg, tmp_path / "a", CPU, Progress(False))
    torch.manual_seed(0)
    b = train_supervised_teacher(digits, cfg, build_teacher("convnet", digits), tmp_path / "b",
                                 CPU)
    assert all(torch.equal(p, q) for p, q in zip(weights(a), weights(b)))
    assert not a.training
