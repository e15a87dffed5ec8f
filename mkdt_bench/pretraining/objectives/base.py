"""What a pre-training objective is, and the registry of them (below the objective files):
how an encoder learns from a DistilledSet (regression onto its targets, SSL on views of its
images, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from mkdt_bench.registry import Registry, named_class

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from mkdt_bench.distilled import DistilledSet
    from mkdt_bench.models import Encoder


class PretrainObjective:
    """The loss an encoder is pre-trained with, for one set: built once per run (drawing
    any random initialisation from the global generator, after the encoder's), then asked
    for the loss of each batch of set indices. Parts it trains with the encoder (a projection
    head) are in :meth:`parameters` and dropped afterwards."""

    #: The name it is registered under (set by :data:`PRETRAIN_OBJECTIVES`).
    name: ClassVar[str] = ""
    #: What a step that fails is called in the error, and what the error suggests.
    step_name: ClassVar[str] = "pre-training"
    hint: ClassVar[str] = "lower pretrain.lr"

    @staticmethod
    def out_dim(distilled: DistilledSet) -> int:
        """Width of the encoder's head for ``distilled``."""
        raise NotImplementedError

    def __init__(self, model: Encoder, distilled: DistilledSet, seed: int,
                 device: torch.device) -> None:
        self.distilled = distilled

    def parameters(self) -> list[nn.Parameter]:
        """Parts trained with the encoder; none unless an objective has some."""
        return []

    def loss(self, model: nn.Module, batch: Tensor, perm: Tensor) -> Tensor:
        """The loss of the set's images ``batch`` (indices into the epoch's permutation
        ``perm``)."""
        raise NotImplementedError


#: Pre-training objectives by name; :func:`objective_name` picks a set's.
PRETRAIN_OBJECTIVES: Registry[type[PretrainObjective]] = Registry(
    "pre-training objective", on_add=named_class, base=PretrainObjective)


def objective_name(distilled: DistilledSet) -> str:
    """The objective ``distilled`` is pre-trained with: ``ssl`` for a set that carries an SSL
    recipe instead of targets (``random-ssl``), else ``regression`` onto its targets."""
    return "ssl" if distilled.ssl_recipe is not None else "regression"
