"""``mkdt-bench list``: what is registered (methods, models, data sets, evaluators, presets),
or with ``--options NAME`` each option of one method or evaluator."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("list", help="show registered methods, models, data sets, "
                                    "evaluators and presets")
    p.add_argument("--options", metavar="NAME",
                   help="print each option of the method or evaluator NAME: its default, "
                        "the values allowed and what it does")
    p.add_argument("--debug", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mkdt_bench.config import list_presets
    from mkdt_bench.data import DATASETS
    from mkdt_bench.evaluators import EVALUATORS
    from mkdt_bench.methods import METHODS
    from mkdt_bench.models import MODELS

    if args.options is not None:
        return print_options(args.options, METHODS, EVALUATORS)
    for title, names in (("methods", METHODS.names()),
                         ("models", MODELS.names() + MODELS.prefixes()),
                         ("datasets", DATASETS.names() + DATASETS.prefixes()),
                         ("evaluators", EVALUATORS.names()), ("presets", list_presets())):
        print(f"{title}: {', '.join(names)}")
    return 0


def print_options(name: str, methods: Any, evaluators: Any) -> int:
    """The options of the method or evaluator ``name``, with the ``--set`` key they take."""
    from mkdt_bench.errors import UserError
    from mkdt_bench.options import did_you_mean

    for section, registry in (("methods", methods), ("evaluators", evaluators)):
        if name in registry.names():
            cls = registry.get(name)
            print(f"{cls.kind} {name!r}: set with --set {section}.{name}.OPTION=VALUE")
            for line in cls.describe_options() or ["(no options)"]:
                print(f"  {line}")
            return 0
    known = methods.names() + evaluators.names()
    raise UserError(f"--options {name!r}: no method or evaluator of that name"
                    f"{did_you_mean(name, known)}; known: {', '.join(known)}")
