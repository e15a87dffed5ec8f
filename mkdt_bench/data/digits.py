"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mkdt_bench.data._decode import fingerprint
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS

# Train-split statistics in the [0, 1] scale (computed once from the fixed split below).
MEAN = (0.3054,)
STD = (0.3760,)


@DATASETS.register("digits")
def digits(root: Path | None, cache_dir: Path) -> ImageDataset:
    """1,797 1 x 8 x 8 images (0..16 scaled to 0..255), fixed stratified 80/20 split.

    ``root`` and ``cache_dir`` are unused: the data ship with scikit-learn.
    """
    x, y = load_digits(return_X_y=True)
    images = torch.from_numpy(np.round(x * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y.astype(np.int64))
    train, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=0)
    train, test = torch.from_numpy(train), torch.from_numpy(test)
    tensors = (images[train], labels[train], images[test], labels[test])
    classes = [str(d) for d in range(10)]
    return ImageDataset("digits", *tensors, classes=classes, mean=MEAN, std=STD,
                        fingerprint=fingerprint("digits", *tensors, classes=classes))
