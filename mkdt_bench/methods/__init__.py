"""Distillation methods: one file each, registered by name.

Adding a method is one new file with a :class:`Method` subclass plus one registration
line (``@register_method("name")``). Third-party packages use the ``mkdt_bench.methods``
entry-point group instead.
"""

from __future__ import annotations

from typing import Any

from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.registry import Registry, named_class

METHODS: Registry = Registry("method", entry_point_group="mkdt_bench.methods",
                             on_add=named_class, base=Method)


def register_method(name: str):
    """Class decorator: register a Method subclass under ``name``."""

    def decorator(cls: type[Method]) -> type[Method]:
        return METHODS.add(name, cls)

    return decorator


def create_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method with validated options."""
    return METHODS.get(name)(**options)


from mkdt_bench.methods import (  # noqa: E402,F401
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

__all__ = ["METHODS", "Method", "MethodContext", "create_method", "register_method"]
