"""Golden fixtures from the official code of MKDT and KRR-ST, for ``tests/test_conformance.py``.

    python tests/reference/make_fixtures.py --mkdt /path/to/MKDT --krrst /path/to/selfsup_dd

``--mkdt``: a checkout of ``jiayini1119/MKDT`` at ``eaf200e``; ``--krrst``: of
``db-Lee/selfsup_dd`` at ``4beb4b1`` (another commit is refused unless ``--any-commit``).
Their code runs on the CPU, on small fixed inputs, in float64 where both codes allow it;
the inputs and outputs land in ``tests/reference/fixtures/`` (a few MB, committed) with
``fixtures.json`` (commits, versions, settings, what each file holds). CI runs the
conformance tests on those files, without the repositories.

Nothing of the reference code is copied here. Its modules are imported from the given
directories and only data loading, wandb, CUDA calls, hard-coded paths and the wall-clock
seed are replaced (``reference_env.py`` lists each). The reference functions driven, per
fixture file:

=================  ======================================================================
file               official code run
=================  ======================================================================
teacher.pt         MKDT ``get_target_rep.main`` (L9-58: torchvision ResNet-18, padding-2
                   stem, KRR-ST checkpoint without ``fc``, eval mode, batch 1), float64
experts.pt         MKDT ``buffer.main`` (L7-71) with ``utils.build_trainset`` (L176-211)
                   and ``utils.epoch`` (L366-394), 2 experts x 2 epochs, float32 (the
                   reference casts to float32)
highloss.pt        MKDT ``sort_dset.main`` (L12-74) on those 2 experts, float32 network
distill64.pt,      MKDT ``distill.main`` (L16-219), 2 outer iterations, float64 and float32
distill32.pt
pretrain.pt        MKDT ``pretrain_methods.pretrain_mse`` (L7-36) on the float64 distilled
                   set, 2 epochs, lr = the learned lr tensor (as ``eval.py`` L90-91 passes it)
probe.pt           MKDT ``evaluation/linear_evaluation.py``: ``train_clf`` + ``test_clf``
                   (L10-70) on given features; ``le_run`` (L90-133) encoding a BatchNorm
                   ConvNet
krrst.pt           KRR-ST ``model_pool.ModelPool`` (L9-62), ``algorithms/distill.run``
                   (L7-67), 2 outer steps, with ``train.py`` L67-74's AdamW and LinearLR,
                   float64
krrst_pool.pt      KRR-ST ``ModelPool.update``'s counter over 14 updates (T = 3)
krrst_lr.pt        ``train.py`` L73-74's ``LinearLR`` over 160,000 steps (sampled)
=================  ======================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    FIXTURES,
    KRRST_MEAN,
    KRRST_STD,
    MKDT_MEAN,
    MKDT_STD,
    SETTINGS_FILE,
    generated_state,
    linear_teacher_weight,
    normalize,
    resnet18_krrst_template,
    smooth_images,
    state_sha256,
)
from reference_env import (  # noqa: E402
    Recorder,
    fake_get_dataset,
    git_commit,
    no_cuda,
    patched,
    pinned_clock,
    reference_modules,
    remapped_paths,
    stub_wandb,
)

COMMITS = {"mkdt": "eaf200e", "krrst": "4beb4b1"}
REPOSITORIES = {"mkdt": "jiayini1119/MKDT", "krrst": "db-Lee/selfsup_dd"}

#: Every size and seed of the fixtures (written to fixtures.json).
SETTINGS: dict[str, Any] = {
    "images": {"count": 100, "seed": 0, "size": 32},
    "test_images": {"count": 10, "seed": 1},
    "mkdt": {
        "normalisation": {"mean": MKDT_MEAN, "std": MKDT_STD},
        "target_dim": 32, "targets_seed": 2,
        "student": "ConvNetW32 (DC ConvNet, width 32, depth 3, instance norm)",
        "teacher": {"images": 8, "checkpoint_seed": 3},
        "experts": {"clock_seeds": [1234, 5678], "train_epochs": 2, "batch_train": 32,
                    "lr_teacher": 0.1, "mom": 0.9, "l2": 5e-3},
        "distill": {"clock_seed": 2468, "images": 6, "iters": 2, "syn_steps": 5, "batch_syn": 4,
                    "expert_epochs": 2, "max_start_epoch": 1, "lr_img": 100.0,
                    "lr_labels": 1.0, "lr_lr": 1e-3, "lr_teacher": 0.1},
        "pretrain": {"clock_seed": 4321, "epochs": 2, "batch": 4, "wd": 1e-4},
        "probe": {"features": 64, "classes": 5, "train": 60, "test": 40, "seed": 0,
                  "feature_seed": 5, "reg_weight": 1e-3, "le_iters": 20,
                  "encoder": "ConvNetBN (width 128, depth 3, BatchNorm)", "encoder_seed": 6,
                  "task_labels_seed": 7, "subset_frac": 0.1, "test_batch_size": 256},
    },
    "krrst": {
        "normalisation": {"mean": KRRST_MEAN, "std": KRRST_STD},
        "pool_model": "convnet_4_8_16_bn", "target_dim": 16, "teacher_seed": 8,
        "num_models": 1, "online_iteration": 10, "online_lr": 0.1, "online_wd": 1e-3,
        "torch_seed": 9, "numpy_seed": 10, "syn_indices": [3, 17, 29, 41, 58, 77],
        "real_indices": list(range(80, 92)), "outer_lr": 1e-2, "outer_iteration": 4,
        "outer_steps_run": 2,
        "counter": {"online_iteration": 3, "num_models": 2, "numpy_seed": 11,
                    "updates": [0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1]},
        "schedule": {"outer_lr": 1e-4, "total": 160_000},
    },
}


def save(name: str, out: Path, tensors: dict[str, Any]) -> None:
    torch.save(tensors, out / name)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class EpochPermutations(torch.utils.data.Sampler):
    """One ``torch.randperm(n, generator)`` per epoch (``RandomSampler`` draws a second,
    empty-remainder permutation after each epoch, so its epochs 2, 3, ... would skip)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        yield from torch.randperm(self.n, generator=self.generator).tolist()


def shuffled_loader(dataset: torch.utils.data.Dataset, batch_size: int,
                    seed: int) -> torch.utils.data.DataLoader:
    """A shuffling ``DataLoader`` (``num_workers=0``) whose epochs are successive
    ``torch.randperm(n, generator)`` draws of a generator seeded ``seed``: the harness's
    batch order for that seed."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       sampler=EpochPermutations(len(dataset), seed),
                                       num_workers=0)


def flat(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


# ----------------------------------------------------------------------------------- MKDT


def mkdt_inputs() -> dict[str, Tensor]:
    cfg = SETTINGS["mkdt"]
    images = smooth_images(SETTINGS["images"]["count"], SETTINGS["images"]["seed"])
    rng = np.random.default_rng(cfg["targets_seed"])
    targets = torch.from_numpy(rng.normal(0, 1, (len(images), cfg["target_dim"]))
                               .astype(np.float32))
    test = smooth_images(SETTINGS["test_images"]["count"], SETTINGS["test_images"]["seed"])
    labels = torch.from_numpy(np.random.default_rng(cfg["probe"]["task_labels_seed"])
                              .integers(0, cfg["probe"]["classes"], len(images) + len(test)))
    return {"images_u8": images, "targets": targets, "test_images_u8": test,
            "task_labels": labels[:len(images)], "test_labels": labels[len(images):]}


def mkdt_teacher(load, tmp: Path, inputs: dict[str, Tensor], out: Path) -> dict[str, Any]:
    """``get_target_rep.main`` on 8 images with a generated KRR-ST-layout checkpoint."""
    cfg = SETTINGS["mkdt"]["teacher"]
    checkpoint = generated_state(resnet18_krrst_template(), cfg["checkpoint_seed"])
    home = tmp / "home"
    (home / "krrst_teacher_ckpt").mkdir(parents=True)
    torch.save(checkpoint, home / "krrst_teacher_ckpt" / "barlow_twins_resnet18_cifar10.pt")
    module = load("get_target_rep")
    images = normalize(inputs["images_u8"][:cfg["images"]], MKDT_MEAN, MKDT_STD, torch.float64)
    args = SimpleNamespace(dataset="CIFAR10", data_path="", result_dir=str(tmp / "reps"),
                           device=0, ssl_algorithm="barlow_twins")
    with default_dtype(torch.float64), patched(module, "get_dataset", fake_get_dataset(images)), \
            remapped_paths("/home/jennyni", home):
        module.main(args)
    reps_file = tmp / "reps" / "barlow_twins" / "CIFAR10_target_rep_train.pt"
    reps = torch.load(reps_file, weights_only=True)
    save("teacher.pt", out, {"representations": reps})
    return {"checkpoint_sha256": state_sha256(checkpoint), "dtype": str(reps.dtype)}


def mkdt_experts(load, tmp: Path, inputs: dict[str, Tensor], out: Path) -> list[Tensor]:
    """``buffer.main`` once per expert: clock pinned to the expert's seed, the shuffled
    loader rebuilt with a generator of that seed (``num_workers=0``)."""
    cfg = SETTINGS["mkdt"]["experts"]
    utils, buffer = load("utils"), load("buffer")
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float32)
    torch.save(inputs["targets"], tmp / "targets32.pt")
    trajectories = []
    for index, seed in enumerate(cfg["clock_seeds"]):

        def seeded_trainset(seed: int = seed, **kwargs: Any) -> tuple:
            loader, labels = utils.build_trainset(**kwargs)
            return shuffled_loader(loader.dataset, loader.batch_size, seed), labels

        args = SimpleNamespace(dataset="CIFAR10", model="ConvNetW32", num_experts=1,
                               lr_teacher=cfg["lr_teacher"], batch_train=cfg["batch_train"],
                               data_path="", buffer_path=str(tmp / f"buffers{index}"),
                               train_epochs=cfg["train_epochs"], mom=cfg["mom"], l2=cfg["l2"],
                               train_labels_path=str(tmp / "targets32.pt"), criterion="mse",
                               device=0)
        with patched(buffer, "get_dataset", fake_get_dataset(images)), \
                patched(buffer, "build_trainset", seeded_trainset), pinned_clock(utils, seed), \
                no_cuda():
            buffer.main(args)
        buffer_file = tmp / f"buffers{index}" / "CIFAR10" / "ConvNetW32" / "replay_buffer_0.pt"
        saved = torch.load(buffer_file, weights_only=True)
        trajectories.append(torch.stack([flat(snapshot) for snapshot in saved[0]]))
    save("experts.pt", out, {"trajectories": torch.stack(trajectories)})
    return trajectories


def mkdt_highloss(load, tmp: Path, inputs: dict[str, Tensor], trajectories: list[Tensor],
                  out: Path) -> Tensor:
    """``sort_dset.main`` over the two experts; the scores are observed at its argsort."""
    sort_dset = load("sort_dset")
    home = tmp / "mkdt_home"
    (home / "target_rep" / "barlow_twins").mkdir(parents=True)
    torch.save(inputs["targets"], home / "target_rep" / "barlow_twins" /
               "CIFAR10_target_rep_train.pt")
    folder = home / "buffers_barlow_twins" / "CIFAR10" / "ConvNetW32"
    folder.mkdir(parents=True)
    net_params = load("utils").get_network("ConvNetW32", 3, 32, (32, 32), fix_net=True)
    shapes = [p.shape for p in net_params.parameters()]
    for n, trajectory in enumerate(trajectories):
        snapshots = [[t.view(s).clone() for t, s in
                      zip(row.split([s.numel() for s in shapes]), shapes)] for row in trajectory]
        torch.save([snapshots], folder / f"replay_buffer_{n}.pt")

    class ObservedNumpy:
        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

        def argsort(self, a: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
            self.scores = a.copy()
            return np.argsort(a, *args, **kwargs)

    observed = ObservedNumpy()
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float32)
    args = SimpleNamespace(dataset="CIFAR10", model="ConvNetW32", num_buffers=len(trajectories),
                           ssl_algo="barlow_twins", batch_train=256, data_path="", device="cpu")
    with patched(sort_dset, "get_dataset", fake_get_dataset(images)), \
            patched(sort_dset, "np", observed), remapped_paths("/home/jennyni/MKDT", home):
        sort_dset.main(args)
    init = home / "init" / "cifar10"
    with open(init / "CIFAR10_barlow_twins_2_high_loss_indices.pkl", "rb") as f:
        top2 = torch.as_tensor(np.asarray(pickle.load(f)).copy())
    with open(init / "CIFAR10_barlow_twins_5_high_loss_indices.pkl", "rb") as f:
        top5 = torch.as_tensor(np.asarray(pickle.load(f)).copy())
    order = torch.as_tensor(np.argsort(observed.scores)[::-1].copy())
    save("highloss.pt", out, {"scores": torch.from_numpy(observed.scores), "order": order,
                              "top2": top2, "top5": top5})
    return order


def mkdt_distill(load, tmp: Path, inputs: dict[str, Tensor], trajectory: Tensor, order: Tensor,
                 dtype: torch.dtype, out: Path) -> dict[str, Tensor]:
    """``distill.main`` for 2 iterations on the top-6 high-loss images, one expert file."""
    cfg = SETTINGS["mkdt"]["distill"]
    stub_wandb()
    distill = load("distill")
    tag = "64" if dtype == torch.float64 else "32"
    work = tmp / f"distill{tag}"
    (work / "experts").mkdir(parents=True)
    shapes = [p.shape for p in load("utils").get_network("ConvNetW32", 3, 32, (32, 32),
                                                         fix_net=True).parameters()]
    snapshots = [[t.view(s).to(dtype) for t, s in
                  zip(row.split([s.numel() for s in shapes]), shapes)] for row in trajectory]
    torch.save([snapshots], work / "experts" / "replay_buffer_0.pt")
    torch.save(inputs["targets"].to(dtype), work / "targets.pt")
    idx = order[:cfg["images"]].tolist()
    with open(work / "init.pkl", "wb") as f:
        pickle.dump(idx, f)
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, dtype)
    args = SimpleNamespace(
        dataset="CIFAR10", model="ConvNetW32", eval_it=1, iters=cfg["iters"],
        lr_img=cfg["lr_img"], lr_lr=cfg["lr_lr"], lr_teacher=cfg["lr_teacher"],
        batch_syn=cfg["batch_syn"], data_path="", expert_epochs=cfg["expert_epochs"],
        syn_steps=cfg["syn_steps"], max_start_epoch=cfg["max_start_epoch"],
        lr_labels=cfg["lr_labels"], image_init_idx_path=str(work / "init.pkl"),
        train_labels_path=str(work / "targets.pt"), run_id="fixture",
        expert_dir=str(work / "experts"), criterion="mse")
    recorder = Recorder()
    cwd = Path.cwd()
    os.chdir(work)
    try:
        with default_dtype(dtype), patched(distill, "get_dataset", fake_get_dataset(images)), \
                patched(distill, "tqdm", recorder.tqdm), no_cuda(), recorder.randperm(), \
                recorder.sgd_steps(), pinned_clock(load("utils"), cfg["clock_seed"], True):
            distill.main(args)
    finally:
        os.chdir(cwd)
    # per iteration the three optimizers step in the order images, labels, lr (L209-211)
    steps = [recorder.steps[3 * i:3 * i + 3] for i in range(cfg["iters"])]
    result = {
        "init_indices": torch.tensor(idx),
        "randperms": torch.stack(recorder.randperms),
        "loss": torch.tensor([p["Grand_Loss"] for p in recorder.postfix], dtype=torch.float64),
        "start_epoch": torch.tensor([p["Start_Epoch"] for p in recorder.postfix]),
        "grad_images": torch.stack([s[0]["grads"][0] for s in steps]),
        "grad_targets": torch.stack([s[1]["grads"][0] for s in steps]),
        "grad_lr": torch.stack([s[2]["grads"][0] for s in steps]),
        "images": steps[-1][0]["params"][0],
        "targets": torch.stack([s[1]["params"][0] for s in steps]),
        "lr": torch.stack([s[2]["params"][0] for s in steps]),
    }
    save(f"distill{tag}.pt", out, result)
    return result


def mkdt_pretrain(load, distilled: dict[str, Tensor], out: Path) -> None:
    """``pretrain_mse`` for 2 epochs on the float64 distilled set; its initialisation is
    observed where ``get_network`` returns it."""
    cfg = SETTINGS["mkdt"]["pretrain"]
    utils = load("utils")
    module = load("pretrain_methods.pretrain_mse")
    seen: dict[str, Any] = {}

    def observed_get_network(*args: Any, **kwargs: Any) -> nn.Module:
        net = utils.get_network(*args, **kwargs)
        seen["init"] = copy.deepcopy(net.state_dict())
        return net

    x_syn, y_syn = distilled["images"], distilled["targets"][-1]
    syn_lr = distilled["lr"][-1].detach().cpu()  # eval.py L90-91: a 0-d tensor
    loader = shuffled_loader(torch.utils.data.TensorDataset(x_syn, y_syn), cfg["batch"],
                             cfg["clock_seed"])
    with default_dtype(torch.float64), pinned_clock(utils, cfg["clock_seed"]), \
            patched(module, "get_network", observed_get_network):
        model = module.pretrain_mse(train_model="ConvNetW32", channel=3,
                                    num_classes=int(y_syn.shape[1]), img_size=(32, 32),
                                    device="cpu", dl_syn=loader, pre_opt="sgd", pre_lr=syn_lr,
                                    pre_wd=cfg["wd"], pre_epoch=cfg["epochs"])
    save("pretrain.pt", out, {"init": flat(list(seen["init"].values())),
                              "final": flat(list(model.state_dict().values())),
                              "lr": syn_lr})


def mkdt_probe(load, inputs: dict[str, Tensor], out: Path) -> dict[str, Any]:
    """``train_clf`` + ``test_clf`` on given features, and ``le_run``'s encoding of a
    labelled subset with a BatchNorm ConvNet (train mode, its default)."""
    cfg = SETTINGS["mkdt"]["probe"]
    le = load("evaluation.linear_evaluation")
    utils = load("utils")
    rng = np.random.default_rng(cfg["feature_seed"])
    centres = rng.normal(0, 1, (cfg["classes"], cfg["features"]))

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = rng.integers(0, cfg["classes"], n)
        return (torch.from_numpy(centres[y] + rng.normal(0, 2.0, (n, cfg["features"]))),
                torch.from_numpy(y))

    (x_tr, y_tr), (x_te, y_te) = draw(cfg["train"]), draw(cfg["test"])

    class Identity(nn.Module):
        features = nn.Identity()

    with default_dtype(torch.float64):
        torch.manual_seed(cfg["seed"])
        clf = le.train_clf(x_tr, y_tr, cfg["features"], cfg["classes"], "cpu",
                           reg_weight=cfg["reg_weight"], iter=cfg["le_iters"])
        test = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_te, y_te),
                                           batch_size=256, shuffle=False)
        acc, _ = le.test_clf(test, "cpu", Identity(), clf, feature=True)

    # le_run with a BatchNorm encoder: the labelled subset is encoded in train mode
    images = normalize(inputs["images_u8"], MKDT_MEAN, MKDT_STD, torch.float64)
    test_images = normalize(inputs["test_images_u8"], MKDT_MEAN, MKDT_STD, torch.float64)
    random.seed(cfg["seed"])  # eval.py L42, then utils.get_dataset L148
    subset = random.sample(range(len(images)), int(len(images) * cfg["subset_frac"]))
    labelled = torch.utils.data.Subset(
        torch.utils.data.TensorDataset(images, inputs["task_labels"]), subset)
    dl_tr = torch.utils.data.DataLoader(labelled, batch_size=cfg["test_batch_size"],
                                        shuffle=False)
    dl_te = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(test_images, inputs["test_labels"]),
        batch_size=cfg["test_batch_size"], shuffle=False)
    seen: dict[str, Any] = {}

    def observed_get_network(*args: Any, **kwargs: Any) -> nn.Module:
        seen["model"] = utils.get_network(*args, **kwargs)
        return seen["model"]

    def observed_train_clf(x: Tensor, y: Tensor, *args: Any, **kwargs: Any) -> nn.Module:
        seen["z_train"] = x.detach().clone()
        return train_clf(x, y, *args, **kwargs)

    train_clf = le.train_clf
    with default_dtype(torch.float64):
        encoder = utils.get_network("ConvNetBN", 3, 512, (32, 32), fix_net=True)
        weights = generated_state(encoder.state_dict(), cfg["encoder_seed"])
        encoder.load_state_dict(weights)
        with patched(le, "get_network", observed_get_network), \
                patched(le, "train_clf", observed_train_clf):
            le_acc = le.le_run("ConvNetBN", 3, cfg["classes"], (32, 32), "cpu", encoder, dl_tr,
                               dl_te, le_iters=cfg["le_iters"], seed=cfg["seed"])
        model = seen["model"]
        with torch.no_grad():  # the encoder as test_clf used it: eval mode, updated statistics
            z_test = model.features(test_images).view(len(test_images), -1)
    buffers = {k: v for k, v in model.state_dict().items() if "running" in k}
    save("probe.pt", out, {
        "x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
        "weight": clf.weight.detach(), "bias": clf.bias.detach(),
        "accuracy": torch.tensor(acc, dtype=torch.float64),
        "subset": torch.tensor(subset), "z_train": seen["z_train"], "z_test": z_test,
        "running_after": torch.cat([v.reshape(-1) for v in buffers.values()]),
        "le_accuracy": torch.tensor(le_acc, dtype=torch.float64)})
    return {"encoder_sha256": state_sha256(weights), "encoder_keys": list(weights)}


def run_mkdt(directory: Path, out: Path) -> dict[str, Any]:
    inputs = mkdt_inputs()
    save("inputs.pt", out, inputs)
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir, reference_modules(directory) as load:
        tmp = Path(tmp_dir)
        info["teacher"] = mkdt_teacher(load, tmp, inputs, out)
        trajectories = mkdt_experts(load, tmp, inputs, out)
        order = mkdt_highloss(load, tmp, inputs, trajectories, out)
        distilled = mkdt_distill(load, tmp, inputs, trajectories[0], order, torch.float64, out)
        mkdt_distill(load, tmp, inputs, trajectories[0], order, torch.float32, out)
        mkdt_pretrain(load, distilled, out)
        info["probe"] = mkdt_probe(load, inputs, out)
    return info


# ---------------------------------------------------------------------------------- KRR-ST


def krrst_param_counts(load) -> dict[str, Any]:
    """Parameters and feature sizes of KRR-ST's pool / evaluation networks (krrst.md §7)."""
    get_model = load("models.wrapper").get_model
    out = {}
    for name, size in (("convnet_128_256_512_bn", 32), ("convnet_64_128_256_512_bn", 64)):
        model = get_model(name, (3, size, size), 512)
        out[name] = {"image_size": size, "parameters": sum(p.numel() for p in
                                                           model.parameters()),
                     "features": model.num_features}
    return out


def krrst_outer_steps(load, inputs: dict[str, Tensor], out: Path) -> dict[str, Any]:
    """Pool warm-up (``ModelPool.init``), then 2 outer steps of ``algorithms/distill.run``
    with the optimizer and schedule of ``train.py`` L67-74, on a fixed real batch."""
    cfg = SETTINGS["krrst"]
    model_pool, distill = load("model_pool"), load("algorithms.distill")
    mean = torch.tensor(KRRST_MEAN, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(KRRST_STD, dtype=torch.float64).view(1, -1, 1, 1)

    def normalise(x: Tensor) -> Tensor:  # stands for Kornia's Normalize (data/augmentation.py)
        return (x - mean) / std

    w = linear_teacher_weight(cfg["teacher_seed"], cfg["target_dim"])
    result: dict[str, Any] = {}
    with default_dtype(torch.float64):
        teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, cfg["target_dim"],
                                                        bias=False))
        teacher[1].weight.data.copy_(w)
        raw = inputs["images_u8"].double() / 255
        x_syn = raw[cfg["syn_indices"]].clone()
        x_real = raw[cfg["real_indices"]].clone()
        with torch.no_grad():  # train.py L47-57
            y_syn = teacher(normalise(x_syn))
        result["y_syn"] = y_syn.clone()
        args = SimpleNamespace(online_iteration=cfg["online_iteration"],
                               num_models=cfg["num_models"], train_model=cfg["pool_model"],
                               img_shape=(3, 32, 32), num_pretrain_classes=cfg["target_dim"],
                               online_opt="sgd", online_lr=cfg["online_lr"],
                               online_wd=cfg["online_wd"], outer_grad_norm=0.0)
        torch.manual_seed(cfg["torch_seed"])
        np.random.seed(cfg["numpy_seed"])
        pool = model_pool.ModelPool(args, "cpu")
        result["pool_init"] = flat(list(pool.models[0].state_dict().values()))
        pool.init(x_syn.detach(), y_syn.detach())
        result["warmup_steps"] = torch.tensor(pool.iterations[0])
        result["pool_warm"] = flat(list(pool.models[0].state_dict().values()))
        x_syn.requires_grad_(True)
        y_syn.requires_grad_(True)
        outer_opt = torch.optim.AdamW([x_syn, y_syn], lr=cfg["outer_lr"], weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LinearLR(outer_opt, start_factor=1.0,
                                                     end_factor=1e-3,
                                                     total_iters=cfg["outer_iteration"])
        batches = iter(lambda: (x_real.clone(), torch.zeros(len(x_real))), None)
        steps: dict[str, list[Tensor]] = {k: [] for k in (
            "loss", "lr", "grad_x", "grad_y", "x", "y", "pool", "iterations")}
        for _ in range(cfg["outer_steps_run"]):
            steps["lr"].append(torch.tensor(outer_opt.param_groups[0]["lr"]))
            loss = distill.run(args, "cpu", teacher, pool, outer_opt, batches, normalise, x_syn,
                               y_syn)
            steps["loss"].append(loss.detach())
            steps["grad_x"].append(x_syn.grad.detach().clone())
            steps["grad_y"].append(y_syn.grad.detach().clone())
            steps["x"].append(x_syn.detach().clone())
            steps["y"].append(y_syn.detach().clone())
            steps["pool"].append(flat(list(pool.models[0].state_dict().values())))
            steps["iterations"].append(torch.tensor(pool.iterations[0]))
            schedule.step()
    result.update({k: torch.stack(v) for k, v in steps.items()})
    save("krrst.pt", out, result)
    return {"pool_keys": list(pool.models[0].state_dict())}


def krrst_counter(load, out: Path) -> None:
    """``ModelPool.update``'s counter and re-initialisations over a fixed update sequence."""
    cfg = SETTINGS["krrst"]["counter"]
    model_pool = load("model_pool")
    args = SimpleNamespace(online_iteration=cfg["online_iteration"],
                           num_models=cfg["num_models"], train_model="convnet_2_bn",
                           img_shape=(3, 8, 8), num_pretrain_classes=2, online_opt="sgd",
                           online_lr=0.1, online_wd=1e-3)
    torch.manual_seed(0)
    np.random.seed(cfg["numpy_seed"])
    pool = model_pool.ModelPool(args, "cpu")
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2)
    pool.init(x, y)
    initial = list(pool.iterations)
    counters, reinit = [], []
    for idx in cfg["updates"]:
        before = pool.models[idx]
        pool.update(idx, x, y)
        counters.append(list(pool.iterations))
        reinit.append(pool.models[idx] is not before)
    save("krrst_pool.pt", out, {"initial": torch.tensor(initial),
                                "counters": torch.tensor(counters),
                                "reinitialised": torch.tensor(reinit)})


def krrst_schedule(out: Path) -> None:
    """The outer lr of every step under ``train.py`` L73-74 (read before ``step()``)."""
    cfg = SETTINGS["krrst"]["schedule"]
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([param], lr=cfg["outer_lr"], weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=1e-3,
                                                 total_iters=cfg["total"])
    steps = sorted(set(range(0, 11)) | set(range(0, cfg["total"] + 1, 1000))
                   | {cfg["total"] - 1})
    lrs = {}
    for step in range(cfg["total"] + 1):
        if step in steps:
            lrs[step] = opt.param_groups[0]["lr"]
        opt.step()
        schedule.step()
    save("krrst_lr.pt", out, {"steps": torch.tensor(steps),
                              "lr": torch.tensor([lrs[s] for s in steps], dtype=torch.float64)})


def run_krrst(directory: Path, out: Path) -> dict[str, Any]:
    inputs = torch.load(out / "inputs.pt", weights_only=True)
    with reference_modules(directory) as load:
        info = {"param_counts": krrst_param_counts(load)}
        info["outer"] = krrst_outer_steps(load, inputs, out)
        krrst_counter(load, out)
    krrst_schedule(out)
    return info


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mkdt", type=Path, required=True, help="checkout of jiayini1119/MKDT")
    p.add_argument("--krrst", type=Path, required=True, help="checkout of db-Lee/selfsup_dd")
    p.add_argument("--out", type=Path, default=FIXTURES, help="fixture folder")
    p.add_argument("--any-commit", action="store_true",
                   help="accept checkouts at other commits than the pinned ones")
    p.add_argument("--part", choices=("mkdt", "krrst"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.part:  # one repository per process: both have a top-level ``utils`` module
        run = run_mkdt if args.part == "mkdt" else run_krrst
        info = run((args.mkdt if args.part == "mkdt" else args.krrst).resolve(), args.out)
        (args.out / f".{args.part}.json").write_text(json.dumps(info))
        return
    commits = {}
    for part in ("mkdt", "krrst"):
        directory = getattr(args, part)
        commit = git_commit(directory)
        if not commit.startswith(COMMITS[part]) and not args.any_commit:
            raise SystemExit(f"{directory} is at {commit}, not {REPOSITORIES[part]}@"
                             f"{COMMITS[part]}; check out that commit (or --any-commit)")
        commits[part] = {"repository": REPOSITORIES[part], "commit": commit}
    args.out.mkdir(parents=True, exist_ok=True)
    info = {}
    for part in ("mkdt", "krrst"):
        subprocess.run([sys.executable, __file__, "--mkdt", str(args.mkdt), "--krrst",
                        str(args.krrst), "--out", str(args.out), "--part", part], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        info[part] = json.loads((args.out / f".{part}.json").read_text())
        (args.out / f".{part}.json").unlink()
    settings = {
        "generated_by": "tests/reference/make_fixtures.py",
        "references": commits,
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0],
                     "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "threads": 1,
        "settings": SETTINGS,
        "results": info,
        "files": {f.name: f.stat().st_size for f in sorted(args.out.glob("*.pt"))},
    }
    (args.out / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")
    total = sum(settings["files"].values())
    print(f"wrote {len(settings['files'])} fixture files ({total / 1e6:.2f} MB) to {args.out}")


if __name__ == "__main__":
    main()
