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


def texture_figure(res: TextureResult, *, title_text: str | None = None) -> Image.Image:
    """The sample as it was measured beside the synthesised texture, at the same scale, with both periods."""
    image, reg = res.image, res.regularity
    syn = (f"synthesised {image.shape[-1]}x{image.shape[-2]}\nperiod {reg.synthesis.period:.1f} px, "
           f"regularity {reg.score:.2f}")
    return side_by_side([(to_rgb(res.sample[0]), f"sample\nperiod {reg.sample.period:.1f} px"),
                         (to_rgb(image[0]), syn)], title_text=title_text)


def texture_sweep_figure(sweep: Sequence[TextureResult]) -> Image.Image:
    """The layer sweep (Gatys et al. 2015, Fig. 2): the sample, then one texture per growing layer set."""
    side = max(sweep[0].image.shape[-2:])
    pics = [to_rgb(r.image[0]) for r in sweep]
    labels = [f"{len(r.layers)} layer{'s' if len(r.layers) > 1 else ''}, up to {r.layers[-1]}" for r in sweep]
    return grid([fit(to_rgb(sweep[0].sample[0]), side), *pics], ncols=len(pics) + 1, labels=["sample", *labels],
                label_size=11)


def style_figure(content: torch.Tensor, styles: Sequence[tuple[torch.Tensor, str]], res: StyleResult, *,
                 caption: str = "result", title_text: str | None = None) -> Image.Image:
    """Content photo, the style image(s) with their names, and the stylised image, all at the result's height."""
    image = res.image
    h = int(image.shape[-2])
    panels = [(to_rgb(content[0]), "content"), *[(to_rgb(s[0]), f"style: {n}") for s, n in styles],
              (to_rgb(image[0]), caption)]
    return side_by_side(panels, height=h, title_text=title_text)
