"""Seeds and random-number-generator state, for determinism and exact resumption."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (lightly's transforms use NumPy)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed derived from a base seed and names (e.g. a grid cell)."""
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def rng_state() -> dict[str, Any]:
    """The global generators' state, to be stored in a snapshot: tensors and plain data only
    (NumPy's key array as a tensor), so that it loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": list(random.getstate()),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s result; a state that does not fit one of the generators
    raises (``TypeError``, ``ValueError``, ``RuntimeError``) before any generator is changed."""
    version, internal, gauss = state["python"]
    python = (version, tuple(internal), gauss)
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys)
    if keys.dtype.kind not in "iu" or keys.min(initial=0) < 0 or keys.max(initial=0) >= 2**32:
        raise ValueError("NumPy generator keys are not 32-bit unsigned integers")
    numpy = (name, keys.astype(np.uint32), pos, has_gauss, cached)
    random.Random().setstate(python)  # each checked on a throwaway generator first
    np.random.RandomState().set_state(numpy)
    torch.Generator().set_state(state["torch"])
    random.setstate(python)
    np.random.set_state(numpy)
    torch.set_rng_state(state["torch"])
