"""What an SSL recipe is: one self-supervised objective as lightly's parts (view transform,
projection head, loss), shared by the teacher, ``random-ssl`` and SSL pre-training."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

#: An SSL transform: a PIL image -> its views.
ViewTransform = Callable[[Any], Any]


class SSLRecipe:
    """One SSL objective. Subclasses set :attr:`display_name` and build their parts in
    :meth:`parts` (importing lightly there, so that naming a recipe imports no torch).

    ``options`` are the ``[teacher]`` keys (or ``random-ssl``'s copy of them): ``proj_dim``,
    ``bt_lambda``, ``temperature`` and the view keys of :func:`view_options`.
    """

    #: The name it is registered under (set by :data:`mkdt_bench.ssl.SSL_RECIPES`).
    name: ClassVar[str] = ""
    #: How captions name it ("Barlow Twins").
    display_name: ClassVar[str] = ""

    def parts(self, options: Mapping[str, Any], mean: tuple[float, ...],
              std: tuple[float, ...], size: int,
              feature_dim: int) -> tuple[ViewTransform, nn.Module, nn.Module]:
        """The view transform (normalising with ``mean``/``std`` at ``size`` pixels), the
        projection head on ``feature_dim`` features, and the loss of two views' projections."""
        raise NotImplementedError


def view_options(options: Mapping[str, Any], mean: tuple[float, ...], std: tuple[float, ...],
                 size: int) -> dict[str, Any]:
    """The keyword arguments lightly's view transforms share: crop size and scale, colour
    jitter, blur and flip probabilities, and the normalisation."""
    return dict(input_size=size, cj_strength=options["cj_strength"],
                min_scale=options["min_scale"], gaussian_blur=options["gaussian_blur"],
                hf_prob=options["hf_prob"], normalize={"mean": list(mean), "std": list(std)})
