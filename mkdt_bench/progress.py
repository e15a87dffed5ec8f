"""Progress reporting (tqdm bars on stderr) that a run can switch off."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    """Hands out tqdm bars; ``enabled=False`` makes every bar silent. Messages (failed
    cells and units) always reach stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def bar(self, total: int | None, desc: str, initial: int = 0) -> tqdm:
        return tqdm(total=total, desc=desc, initial=initial, disable=not self.enabled,
                    leave=False, file=sys.stderr, dynamic_ncols=True)

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)
