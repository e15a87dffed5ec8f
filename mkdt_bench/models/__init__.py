"""Encoder architectures: a registry and ``create_model`` (timm-style).

Every model is built as ``create_model(name, in_channels=..., image_size=..., out_dim=...)``
and returns an :class:`Encoder`. Plug-ins register under the ``mkdt_bench.models``
entry-point group.
"""

from __future__ import annotations

from mkdt_bench.models import convnet, resnet, timm_models  # noqa: F401 - they register themselves
from mkdt_bench.models.base import Encoder
from mkdt_bench.models.registry import MODELS, create_model, list_models

__all__ = ["MODELS", "Encoder", "create_model", "list_models"]
