"""Figures of texture synthesis and style transfer, shared by the CLI and the tour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image

from .figures import fit, grid, side_by_side, to_rgb

if TYPE_CHECKING:
    from ..synthesize.style import StyleResult
    from ..synthesize.texture import TextureResult

__all__ = ["texture_figure", "texture_sweep_figure", "style_figure"]


def _sample(sample: torch.Tensor, side: int) -> Image.Image:
    return fit(to_rgb(sample[0]), side)


def texture_figure(sample: torch.Tensor, res: TextureResult, *, side: int, title_text: str | None = None
                   ) -> Image.Image:
    """The sample ``(1, 3, H, W)`` (fitted to ``side``) beside the synthesised texture."""
    image = res.image
    return side_by_side([(_sample(sample, side), "sample"),
                         (to_rgb(image[0]), f"synthesised {image.shape[-1]}x{image.shape[-2]}")], title_text=title_text)


def texture_sweep_figure(sample: torch.Tensor, sweep: Sequence[TextureResult], *, side: int) -> Image.Image:
    """The layer sweep (Gatys et al. 2015, Fig. 2): the sample, then one texture per growing layer set."""
    pics = [to_rgb(r.image[0]) for r in sweep]
    labels = [f"up to {r.layers[-1]}" for r in sweep]
    return grid([_sample(sample, side), *pics], ncols=len(pics) + 1, labels=["sample", *labels], label_size=11)


def style_figure(content: torch.Tensor, styles: Sequence[tuple[torch.Tensor, str]], res: StyleResult, *,
                 caption: str = "result", title_text: str | None = None) -> Image.Image:
    """Content photo, the style image(s) with their names, and the stylised image, all at the result's height."""
    image = res.image
    h = int(image.shape[-2])
    panels = [(to_rgb(content[0]), "content"), *[(to_rgb(s[0]), f"style: {n}") for s, n in styles],
              (to_rgb(image[0]), caption)]
    return side_by_side(panels, height=h, title_text=title_text)
