"""The SSL recipe registry, below the recipe files (timm's ``_registry``)."""

from __future__ import annotations

from mkdt_bench.registry import Registry, named_class
from mkdt_bench.ssl.base import SSLRecipe

#: SSL objectives by name (``teacher.ssl``, ``random-ssl``'s ``ssl``); plug-ins register
#: in the entry-point group ``mkdt_bench.ssl_recipes``.
SSL_RECIPES: Registry[type[SSLRecipe]] = Registry(
    "SSL recipe", entry_point_group="mkdt_bench.ssl_recipes", on_add=named_class,
    base=SSLRecipe)
