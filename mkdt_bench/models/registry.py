"""The model registry and ``create_model``: below the architecture files, which register
into it (timm's ``_registry.py``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mkdt_bench.errors import UserError
from mkdt_bench.models.base import Encoder
from mkdt_bench.registry import Registry

MODELS: Registry[Callable[..., Encoder]] = Registry("model", entry_point_group="mkdt_bench.models")
list_models = MODELS.names

_REQUIRED = ("in_channels", "image_size", "out_dim")


def create_model(
    name: str, *, in_channels: int, image_size: int, out_dim: int, **kwargs: Any
) -> Encoder:
    """Build the registered model ``name``; options it does not take raise a UserError."""
    factory = MODELS.get(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # not introspectable: let the factory decide
        params = None
    if params is not None and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    ):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            allowed = [p for p in params if p not in _REQUIRED] or ["(none)"]
            raise UserError(
                f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
    return factory(in_channels=in_channels, image_size=image_size, out_dim=out_dim, **kwargs)
