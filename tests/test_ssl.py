"""SSL recipes (``mkdt_bench.ssl``) and teacher kinds (``mkdt_bench.teachers``) as registries:
a new objective is one class plus one registration, and naming them (or reading the
pre-training options) imports no torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from mkdt_bench.config import build_config
from mkdt_bench.errors import UserError
from mkdt_bench.methods import create_method
from mkdt_bench.ssl import SSL_RECIPES, SSLRecipe, display_name, ssl_parts, view_options
from mkdt_bench.stages.env import Env, cached_dataset
from mkdt_bench.stages.teacher import ensure_teacher, load_teacher
from mkdt_bench.teachers import describe_teacher

TINY = ["teacher.arch=convnet:width=8", "teacher.epochs=1", "teacher.batch_size=64",
        "teacher.proj_dim=16", "teacher.train_images=128"]


class VICReg(SSLRecipe):
    """lightly's VICReg loss on SimCLR's views with a Barlow Twins expander (a recipe that is
    not built in)."""

    display_name = "VICReg"

    def parts(self, options: Mapping[str, Any], mean: tuple[float, ...],
              std: tuple[float, ...], size: int, feature_dim: int) -> tuple[Any, Any, Any]:
        from lightly.loss import VICRegLoss
        from lightly.models.modules import BarlowTwinsProjectionHead
        from lightly.transforms import SimCLRTransform

        head = BarlowTwinsProjectionHead(feature_dim, options["proj_dim"], options["proj_dim"])
        return SimCLRTransform(**view_options(options, mean, std, size)), head, VICRegLoss()


@pytest.fixture
def vicreg(monkeypatch):
    """VICReg registered for one test (the registry as it was afterwards)."""
    monkeypatch.setattr(SSL_RECIPES, "_items", dict(SSL_RECIPES._items))
    SSL_RECIPES.add("vicreg", VICReg)
    return VICReg


@pytest.mark.parametrize("face", ["mkdt_bench.ssl", "mkdt_bench.teachers",
                                  "mkdt_bench.pretraining"])
def test_naming_recipes_and_teachers_imports_no_torch(face):
    code = (f"import sys, {face}\n"
            "from mkdt_bench.teachers import TEACHERS, describe_teacher\n"
            "from mkdt_bench.ssl import SSL_RECIPES\n"
            "assert SSL_RECIPES.names() and TEACHERS.names()\n"
            "describe_teacher({'kind': 'ssl', 'ssl': 'simclr', 'arch': 'convnet', 'epochs': 1})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_built_in_recipes_and_their_names():
    assert SSL_RECIPES.names() == ["barlow_twins", "simclr"]
    assert display_name("barlow_twins") == "Barlow Twins" and display_name("simclr") == "SimCLR"
    assert display_name("gone") == "gone"  # a row of a recipe no longer installed
    with pytest.raises(UserError, match="unknown SSL recipe 'byol'.*barlow_twins, simclr"):
        ssl_parts({"ssl": "byol"}, (0.5,), (0.5,), 8, 16)


def test_the_teacher_and_random_ssl_accept_exactly_the_registered_recipes(vicreg):
    with pytest.raises(UserError, match=r"teacher: ssl='byol' is not allowed; choose one of "
                                        r"'barlow_twins', 'simclr', 'vicreg'"):
        build_config("quick", overrides=["teacher.ssl=byol"])
    assert build_config("quick", overrides=["teacher.ssl=vicreg"]).teacher.ssl == "vicreg"
    assert create_method("random-ssl", ssl="vicreg").config["ssl"] == "vicreg"
    with pytest.raises(UserError, match="ssl='byol' is not allowed"):
        create_method("random-ssl", ssl="byol")


def test_a_registered_recipe_trains_a_teacher_through_the_teacher_stage(vicreg, tmp_path):
    """One class and one registration line: the grid's teacher stage trains with it, its
    key is its own, and captions name it."""
    cfg = build_config("quick", overrides=[*TINY, "teacher.ssl=vicreg"]).to_dict()
    env = Env(cache_dir=str(tmp_path / "cache"), progress=False, threads=1)
    digits = cached_dataset("digits", env.data_root, env.cache_dir)
    tkey, _ = ensure_teacher(cfg, env, digits)
    simclr = build_config("quick", overrides=[*TINY, "teacher.ssl=simclr"]).to_dict()
    assert tkey != ensure_teacher(simclr, env, digits)[0]
    teacher = load_teacher(env, tkey, cfg["teacher"]["arch"], digits)
    reps = teacher.features(digits.normalized("train")[:8])
    assert reps.shape == (8, teacher.feature_dim) and torch.isfinite(reps).all()
    assert describe_teacher(cfg["teacher"]) == "VICReg convnet:width=8, 1 epochs on 128 images"
