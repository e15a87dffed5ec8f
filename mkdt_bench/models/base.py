"""The encoder contract shared by every model (mkdt.md §2, evaluation.md A.2)."""

from __future__ import annotations

from torch import Tensor, nn


class Encoder(nn.Module):
    """A feature extractor plus a linear regression head.

    Subclasses set ``feature_dim`` (size of the flattened embedding at the construction
    image size), ``head = nn.Linear(feature_dim, out_dim)`` (the head regressing onto the
    teacher representation, mkdt.md §2) and implement :meth:`features`.
    """

    feature_dim: int
    head: nn.Module

    def features(self, x: Tensor) -> Tensor:
        """The ``N × feature_dim`` embedding used by linear probes (evaluation.md A.2)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
