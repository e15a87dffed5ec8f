"""``import:DIR``: an existing DistilledSet directory as a method of the grid.

The set is evaluated exactly like every method's output; a hash of its files' sha256 is
the method's only option, so a changed directory is a new cache entry. A set whose image shape or
normalisation differs from the source data is refused (``distilled.check_compatible``), and
so is a set of no images, before any work starts (:func:`check_not_empty`).
"""

from __future__ import annotations

from pathlib import Path

from mkdt_bench.cache import config_hash, file_sha256
from mkdt_bench.distilled import DistilledSet, check_compatible
from mkdt_bench.errors import UserError
from mkdt_bench.methods.base import Method, MethodContext
from mkdt_bench.methods.registry import METHODS
from mkdt_bench.options import Opt


def check_not_empty(distilled: DistilledSet, what: str) -> None:
    """Refuse a set of no images as a set to evaluate: it is no pre-training, which the
    built-in ``none`` row measures (a set under another name would be that row again)."""
    if len(distilled) == 0:
        raise UserError(f"{what} holds no images; pre-training on nothing is the 'none' row "
                        "(add none to --methods of a run) and is not scored as a set")


@METHODS.register_prefix("import")
def imported_set(path: str) -> type[Method]:
    """The Method class that returns the set stored in ``path``."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserError(f"method 'import:{path}': directory {str(directory)!r} does not exist")
    files = {p.name: file_sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}
    check_not_empty(DistilledSet.load(directory), f"method 'import:{path}'")

    class ImportedSet(Method):
        """A stored DistilledSet (its size is its own, whatever the grid's budget)."""

        name = f"import:{path}"
        options = {"fingerprint": Opt(config_hash(files), None,
                                      "hash of the directory's files' sha256")}
        seeded = False

        def distill(self, ctx: MethodContext) -> DistilledSet:
            distilled = DistilledSet.load(directory)
            check_compatible(distilled, int(ctx.images.shape[1]), int(ctx.images.shape[-1]),
                             ctx.mean, ctx.std, ctx.source, f"method {self.name!r}")
            return distilled

    return ImportedSet
