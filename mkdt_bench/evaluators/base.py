"""The evaluator interface: score a frozen or fine-tuned encoder on a downstream task."""

from __future__ import annotations

import hashlib
import random
from typing import Any, ClassVar

import torch
from torch import Tensor

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.errors import UserError
from mkdt_bench.models import Encoder
from mkdt_bench.options import Configurable


class Evaluator(Configurable):
    """Base class of downstream protocols: sub-class, declare :attr:`options`, implement
    ``evaluate``, which returns at least ``{"accuracy": percent}``."""

    kind = "evaluator"
    #: The version of the evaluator's code: raise it (2, 3, ...) with every change that
    #: changes its scores; from 2 on it is part of each cell's key. mkdt-bench's
    #: evaluators are at 1 until they declare one; a plug-in that declares none is keyed by
    #: the sha256 of its source files (:mod:`mkdt_bench.code_version`).
    version: ClassVar[int | None] = None
    #: Options added after rows were first stored, each with the value that reproduces the
    #: behaviour before it existed: tables read a stored row without the option as having
    #: that value instead of setting it apart.
    compatible_defaults: ClassVar[dict[str, Any]] = {}

    def evaluate(self, encoder: Encoder, task: ImageDataset, fraction: float, seed: int,
                 device: torch.device) -> dict[str, float]:
        raise NotImplementedError


def labelled_subset(n_train: int, fraction: float, seed: int) -> list[int]:
    """Indices of the labelled training subset (``docs/protocol.md`` A.3).

    Uniform, not stratified: ``random.sample(range(N), int(N * fraction))`` with Python's
    generator seeded by the run seed, exactly as the reference code draws it.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"label fraction {fraction} must be in (0, 1]")
    k = int(n_train * fraction)
    if k < 1:
        raise UserError(f"label fraction {fraction} of {n_train} training images selects no "
                        "image; use a larger fraction")
    return random.Random(seed).sample(range(n_train), k)


def test_scores(pred: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 ``accuracy`` and ``mean_per_class_accuracy`` (the mean over the classes present
    in ``labels`` of each class's accuracy; the Aircraft / Flowers convention), in percent."""
    pred, labels = pred.cpu(), labels.cpu()
    hit = (pred == labels).double()
    classes, inverse = labels.unique(return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, hit)
    per_class /= torch.bincount(inverse, minlength=len(classes)).double()
    return {"accuracy": hit.mean().item() * 100,
            "mean_per_class_accuracy": per_class.mean().item() * 100}


def feature_dtype(features: Tensor) -> Tensor:
    """Features on the CPU in float32, or float64 if computed in float64."""
    return features.to(torch.promote_types(features.dtype, torch.float32)).cpu()


@torch.no_grad()
def extract_features(encoder: Encoder, images: Tensor, device: torch.device,
                     batch_size: int = 512) -> Tensor:
    """Frozen ``encoder.features`` of normalised images, eval mode (float32, or float64 for
    a float64 encoder)."""
    encoder.eval()
    chunks = [feature_dtype(encoder.features(images[i:i + batch_size].to(device)))
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


#: The last encoder's test features: (its fingerprint, the task object, device, features).
#: The cells of one encoder (label fractions, evaluators) encode the same test set.
_LAST_TEST_FEATURES: list[tuple[str, ImageDataset, str, Tensor]] = []


def encoder_fingerprint(encoder: Encoder) -> str:
    """sha256 of the encoder's class and every parameter and buffer (names, dtypes, values):
    equal for two encoders exactly when their features are."""
    digest = hashlib.sha256(type(encoder).__qualname__.encode())
    for name, tensor in encoder.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encode_test_set(encoder: Encoder, task: ImageDataset, device: torch.device) -> Tensor:
    """:func:`extract_features` of ``task``'s normalised test images, reused while the same
    encoder (same weights and buffers) scores the same task object again."""
    key = encoder_fingerprint(encoder)
    for fingerprint, seen, where, features in _LAST_TEST_FEATURES:
        if fingerprint == key and seen is task and where == str(device):
            return features
    features = extract_features(encoder, task.normalized("test"), device)
    _LAST_TEST_FEATURES[:] = [(key, task, str(device), features)]
    return features
