"""SSL recipes: one file per objective, registered in :data:`SSL_RECIPES` (a new objective is
one file plus its import below). Importing this package imports no torch; a recipe's lightly
parts are built by :func:`ssl_parts`, and :mod:`mkdt_bench.ssl.views` pairs the views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mkdt_bench.ssl import barlow_twins, simclr  # noqa: F401 - the built-in recipes register
from mkdt_bench.ssl.base import SSLRecipe, ViewTransform, view_options
from mkdt_bench.ssl.registry import SSL_RECIPES

if TYPE_CHECKING:
    from torch import nn


def ssl_parts(options: Mapping[str, Any], mean: tuple[float, ...], std: tuple[float, ...],
              size: int, feature_dim: int) -> tuple[ViewTransform, nn.Module, nn.Module]:
    """The view transform, projection head and loss of the recipe ``options["ssl"]``."""
    return SSL_RECIPES.get(options["ssl"])().parts(options, mean, std, size, feature_dim)


def display_name(name: str) -> str:
    """How captions name the recipe ``name``; the name itself for one not installed."""
    return SSL_RECIPES.get(name).display_name if name in SSL_RECIPES else name

__all__ = ["SSL_RECIPES", "SSLRecipe", "ViewTransform", "display_name", "ssl_parts",
           "view_options"]
