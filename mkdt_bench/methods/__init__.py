"""Distillation methods: one file each, registered by name.

Adding a method is one new file, ``methods/NAME.py``, holding a :class:`Method` subclass
decorated ``@register_method("name")`` (from :mod:`mkdt_bench.methods.registry`), plus one
registration line: the module's name in the import list below. Third-party packages use
the ``mkdt_bench.methods`` entry-point group instead and touch no file here.
"""

from mkdt_bench.methods import (
    baselines,
    dm_ssl,
    herding,
    imported,
    kcenter,
    kmeans,
    krrst,
    mkdt,
    random_ssl,
    sas,
)
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import METHODS, create_method, register_method

__all__ = ["METHODS", "Method", "MethodContext", "create_method", "register_method",
           "baselines", "dm_ssl", "herding", "imported", "kcenter", "kmeans", "krrst", "mkdt",
           "random_ssl", "sas"]
