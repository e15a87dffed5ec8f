"""The ``[pretrain]`` options: defaults, ranges, what names an encoder, and the recipe in
words."""

from __future__ import annotations

from typing import Any

from mkdt_bench.options import Interval

#: ``[pretrain]`` options.
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "lr": 0.1,
    "use_learned_lr": True,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 256,
    "steps": 0,
}
#: Ranges of the ``[pretrain]`` options (:func:`mkdt_bench.options.resolve_options`).
PRETRAIN_BOUNDS: dict[str, Interval] = {
    "epochs": Interval(int, 1, None),
    "lr": Interval(float, 0, None, closed="neither"),
    "momentum": Interval(float, 0, 1, closed="left"),
    "weight_decay": Interval(float, 0, None),
    "batch_size": Interval(int, 1, None),
    "steps": Interval(int, 0, None, note="0 = use epochs"),
}

#: Options added after encoders were stored, at the value that keeps the old behaviour:
#: left out of encoder and cell keys at that value (see :func:`pretrain_key`); tables read
#: a row stored without the option as having that value.
COMPATIBLE_DEFAULTS: dict[str, Any] = {"steps": 0}


def pretrain_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """What names an encoder's pre-training: ``cfg`` without compatible defaults."""
    return {k: v for k, v in cfg.items()
            if not (k in COMPATIBLE_DEFAULTS and v == COMPATIBLE_DEFAULTS[k])}


def describe_pretrain(cfg: dict[str, Any]) -> str:
    """The recipe of a ``[pretrain]`` config in words, for captions and ``eval``'s report:
    ``20 epochs at batch 256, SGD lr 0.1 (a set's learned lr where it has one), momentum
    0.9, weight decay 0.0001``."""
    length = (f"{cfg['steps']} steps" if cfg.get("steps", 0) > 0 else
              f"{cfg['epochs']} epoch{'' if cfg['epochs'] == 1 else 's'}")
    learned = " (a set's learned lr where it has one)" if cfg["use_learned_lr"] else ""
    return (f"{length} at batch {cfg['batch_size']}, SGD lr {cfg['lr']:g}{learned}, momentum "
            f"{cfg['momentum']:g}, weight decay {cfg['weight_decay']:g}")
