"""The evaluator registry, below the evaluator files (timm's ``_registry.py``): evaluator
files import :func:`register_evaluator` from here, never from the package face."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mkdt_bench.evaluators.base import Evaluator
from mkdt_bench.registry import Registry, named_class

EVALUATORS: Registry[type[Evaluator]] = Registry(
    "evaluator", entry_point_group="mkdt_bench.evaluators", on_add=named_class, base=Evaluator)


def register_evaluator(name: str) -> Callable[[type[Evaluator]], type[Evaluator]]:
    """Class decorator: register an Evaluator subclass under ``name``."""

    def decorator(cls: type[Evaluator]) -> type[Evaluator]:
        return EVALUATORS.add(name, cls)

    return decorator


def create_evaluator(name: str, **options: Any) -> Evaluator:
    """Instantiate a registered evaluator with validated options."""
    return EVALUATORS.get(name)(**options)
