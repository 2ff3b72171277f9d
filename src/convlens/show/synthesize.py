"""Figures of the optimisation-to-image techniques, shared by the CLI and the tour."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from .figures import side_by_side, to_rgb

if TYPE_CHECKING:
    from ..synthesize.invert import InversionResult

__all__ = ["inversion_figure"]


def inversion_figure(res: InversionResult, *, title_text: str | None = None) -> Image.Image:
    """The photo, then each layer's reconstruction with its distance to the photo (what of the image the code
    keeps), its relative feature error and that of a grey image (what an image carrying nothing of the photo
    scores there)."""
    panels = [(to_rgb(res.photo[0]), "photo")]
    for name, im in res.images.items():
        caption = (f"{name}\nfrom photo {res.pixel_errors[name]:.2f}\n"
                   f"code error {res.errors[name]:.3f} (grey {res.grey_errors[name]:.2f})")
        panels.append((to_rgb(im[0]), caption))
    return side_by_side(panels, caption_size=11, title_text=title_text)
