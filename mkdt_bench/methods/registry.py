"""The method registry, below the method files (timm's ``_registry.py``): method files
import :func:`register_method` from here, never from the package face."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mkdt_bench.methods.base import Method
from mkdt_bench.registry import Registry, named_class

METHODS: Registry[type[Method]] = Registry(
    "method", entry_point_group="mkdt_bench.methods", on_add=named_class, base=Method)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method subclass under ``name``."""

    def decorator(cls: type[Method]) -> type[Method]:
        return METHODS.add(name, cls)

    return decorator


def create_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method with validated options."""
    return METHODS.get(name)(**options)
