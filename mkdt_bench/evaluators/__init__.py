"""Evaluators: the downstream protocols that score a pre-trained encoder.

Downstream protocols are registered by name (``linear``, ...); plug-ins use the
``mkdt_bench.evaluators`` entry-point group.
"""

from __future__ import annotations

from typing import Any

from mkdt_bench.evaluators.base import Evaluator
from mkdt_bench.registry import Registry, named_class

EVALUATORS: Registry = Registry("evaluator", entry_point_group="mkdt_bench.evaluators",
                                on_add=named_class, base=Evaluator)


def register_evaluator(name: str):
    """Class decorator: register an Evaluator subclass under ``name``."""

    def decorator(cls: type[Evaluator]) -> type[Evaluator]:
        return EVALUATORS.add(name, cls)

    return decorator


def create_evaluator(name: str, **options: Any) -> Evaluator:
    return EVALUATORS.get(name)(**options)


from mkdt_bench.evaluators import finetune, knn, linear, linear_val  # noqa: E402,F401

__all__ = ["EVALUATORS", "Evaluator", "create_evaluator", "register_evaluator"]
