"""Evaluators: the downstream protocols that score a pre-trained encoder.

Adding an evaluator is one new file, ``evaluators/NAME.py``, holding an :class:`Evaluator`
subclass decorated ``@register_evaluator("name")`` (from
:mod:`mkdt_bench.evaluators.registry`), plus one registration line: the module's name in
the import list below. Plug-ins use the ``mkdt_bench.evaluators`` entry-point group instead.
"""

from mkdt_bench.evaluators import finetune, knn, linear, linear_val
from mkdt_bench.evaluators.base import Evaluator
from mkdt_bench.evaluators.registry import EVALUATORS, create_evaluator, register_evaluator

__all__ = ["EVALUATORS", "Evaluator", "create_evaluator", "register_evaluator",
           "finetune", "knn", "linear", "linear_val"]
