"""How a model wants its pixels: resize, centre crop, normalise -- and the exact inverse of normalising."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from ..images import ImageLike, load_image, to_pil, to_pixels

__all__ = ["Preprocess"]

_PIL_MODES = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
              "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class Preprocess:
    """A model's input convention.

    Attributes:
        size: model input ``(H, W)``.
        mean, std: per-channel normalisation applied *inside* the model call; callers always work in pixel
            space [0, 1].
        resize: the shorter side is resized to this before the centre crop (ImageNet's 256 -> 224 recipe).
        interpolation: ``bilinear`` or ``bicubic`` (Pillow's, antialiased).
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: int = 256
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _PIL_MODES:
            raise ValueError(f"interpolation must be one of {sorted(_PIL_MODES)}, got {self.interpolation!r}")

    def fit(self, image: ImageLike, *, crop: bool = True) -> Image.Image:
        """Resize the shorter side to ``resize`` and centre-crop to ``size`` (or, ``crop=False``, resize to size)."""
        img = load_image(image, draft=(self.resize, self.resize))
        h, w = self.size
        mode = _PIL_MODES[self.interpolation]
        if not crop:
            return img.resize((w, h), mode)
        scale = self.resize / min(img.size)
        nw, nh = max(w, round(img.size[0] * scale)), max(h, round(img.size[1] * scale))
        img = img.resize((nw, nh), mode)
        left, top = (nw - w) // 2, (nh - h) // 2
        return img.crop((left, top, left + w, top + h))

    def to_tensor(self, image: ImageLike, *, crop: bool = True) -> torch.Tensor:
        """Load, resize and crop one image to a pixel-space tensor ``3xHxW`` in [0, 1]."""
        return to_pixels(self.fit(image, crop=crop))

    def batch(self, images: list[ImageLike] | tuple[ImageLike, ...], *, crop: bool = True) -> torch.Tensor:
        """Several images as one pixel batch ``Nx3xHxW``."""
        return torch.stack([self.to_tensor(i, crop=crop) for i in images])

    @staticmethod
    def to_image(x: torch.Tensor) -> Image.Image:
        """The inverse of :meth:`to_tensor` after cropping: a pixel tensor back to an 8-bit image."""
        return to_pil(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space [0, 1] -> the model's input space: ``(x - mean) / std`` per channel."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`normalize`."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * std + mean

    def resize_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Resize a pixel batch to the model size (bilinear, antialiased) without cropping."""
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
