"""The ``[teacher]`` options (presets' ``[teacher]``, ``--set teacher.KEY=VALUE``): defaults,
the choices the registries allow, and the ranges of the numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from mkdt_bench.options import SEED_MAX, Interval
from mkdt_bench.registry import Registry
from mkdt_bench.ssl import SSL_RECIPES
from mkdt_bench.teachers.registry import TEACHERS

#: Teacher options and their defaults.
TEACHER_DEFAULTS: dict[str, Any] = {
    "kind": "ssl",
    "arch": "resnet18",
    "ssl": "barlow_twins",
    "epochs": 200,
    "batch_size": 256,
    "lr": 0.06,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "proj_dim": 2048,
    "bt_lambda": 5e-3,
    "temperature": 0.5,
    "min_scale": 0.08,
    "cj_strength": 0.5,
    "gaussian_blur": 0.0,
    "hf_prob": 0.5,
    "train_images": 0,
    "seed": 0,
    "checkpoint": "",
}


class RegisteredNames:
    """The names ``registry`` holds whose entry passes ``keep``, read when asked (so that a
    plug-in registered later is allowed): a choice list for
    :func:`mkdt_bench.options.resolve_options`."""

    def __init__(self, registry: Registry[Any],
                 keep: Callable[[Any], bool] = lambda entry: True) -> None:
        self.registry = registry
        self.keep = keep

    def names(self) -> list[str]:
        return [n for n in self.registry.names() if self.keep(self.registry.get(n))]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, value: object) -> bool:
        return value in self.names()

    def __len__(self) -> int:
        return len(self.names())


TEACHER_CHOICES: dict[str, RegisteredNames] = {
    "kind": RegisteredNames(TEACHERS, lambda kind: kind.trains),
    "ssl": RegisteredNames(SSL_RECIPES),
}
#: Ranges of the numeric teacher options (:func:`mkdt_bench.options.resolve_options`).
TEACHER_BOUNDS: dict[str, Interval] = {
    "epochs": Interval(int, 1, None),
    "batch_size": Interval(int, 2, None, note="the SSL losses compare the images of a batch"),
    "lr": Interval(float, 0, None, closed="neither"),
    "momentum": Interval(float, 0, 1, closed="left"),
    "weight_decay": Interval(float, 0, None),
    "proj_dim": Interval(int, 1, None),
    "bt_lambda": Interval(float, 0, None),
    "temperature": Interval(float, 0, None, closed="neither"),
    "min_scale": Interval(float, 0, 1, closed="right", note="the smallest crop's area share"),
    "cj_strength": Interval(float, 0, 2.5, note="lightly's hue jitter, 0.2 x cj_strength, "
                            "must stay within 0.5"),
    "gaussian_blur": Interval(float, 0, 1, note="a probability"),
    "hf_prob": Interval(float, 0, 1, note="a probability"),
    "train_images": Interval(int, 0, None, note="0 = every training image"),
    "seed": Interval(int, 0, SEED_MAX),
}
