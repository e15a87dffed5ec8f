"""Pictures of a distilled set (``mkdt-bench show``): its images in a grid under a title
that says what they are."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend
from torchvision.utils import make_grid

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError
from mkdt_bench.report.figures import check_figure_out


def set_title(distilled: DistilledSet, label: str, seed: int | None, budget: int | None,
              max_images: int) -> str:
    """``mkdt, seed 0: 143 images of 1x8x8 from digits (budget 143), first 100 shown``."""
    shape = f"{distilled.channels}x{distilled.image_size}x{distilled.image_size}"
    text = label + (f", seed {seed}" if seed is not None else "")
    text += f": {len(distilled):,} images of {shape} from {distilled.source}"
    if budget is not None:
        text += f" (budget {budget:,})"
    if 0 < max_images < len(distilled):
        text += f"; only the first {max_images:,} shown"
    return text


def _upscaled(images: torch.Tensor, min_pixels: int = 32) -> torch.Tensor:
    """Images repeated pixel by pixel (nearest) until each side is at least ``min_pixels``."""
    factor = math.ceil(min_pixels / min(images.shape[-2:]))
    if factor <= 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def show_set(distilled: DistilledSet, out: str | Path, title: str,
             max_images: int = 100) -> Path:
    """A PNG (or PDF, SVG: ``out``'s extension) of a set's first ``max_images`` images,
    de-normalised with the set's own statistics, each upscaled (nearest) to at least
    32 px, under ``title`` (which the file also carries as its ``Title``)."""
    kind = check_figure_out(out)
    if max_images < 1:
        raise UserError(f"--max-images {max_images} must be at least 1")
    if len(distilled) == 0:
        raise UserError(f"{title}: the set holds no images (e.g. the floor row `none`); "
                        "nothing to show")
    if distilled.channels not in (1, 3):
        raise UserError(f"{title}: images with {distilled.channels} channels cannot be shown "
                        "(1 or 3 needed)")
    shown = distilled.images[:max_images]
    mean = torch.tensor(distilled.mean).view(1, -1, 1, 1)
    std = torch.tensor(distilled.std).view(1, -1, 1, 1)
    raw = _upscaled((shown * std + mean).clamp(0, 1))
    grid = make_grid(raw, nrow=max(1, math.ceil(len(raw) ** 0.5)), padding=2, pad_value=1.0)
    pixels = grid.permute(1, 2, 0).numpy()
    height, width = pixels.shape[:2]
    head, margin = 44, 8  # title band and border, in pixels (1 px = 1 figure pixel)
    fig_w, fig_h = max(width + 2 * margin, 480), height + head + margin
    fig = Figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
    left = (fig_w - width) // 2  # whole pixels: the grid's pixels stay the image's
    ax = fig.add_axes((left / fig_w, margin / fig_h, width / fig_w, height / fig_h))
    ax.imshow(pixels, interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    fig.text(0.5, 1 - 6 / fig_h, title, ha="center", va="top", fontsize=9, wrap=True)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, format=kind, metadata={"Title": title})
    return out


__all__ = ["set_title", "show_set"]
