"""Reading images from disk the way every command does: any format Pillow reads, EXIF rotation honoured."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

__all__ = ["ImageLike", "load_image", "list_images", "to_pil", "IMAGE_SUFFIXES", "demo_images", "to_pixels"]

ImageLike = Union[str, os.PathLike, Image.Image]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(source: ImageLike, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied, grayscale / palette / RGBA converted (alpha over white).

    ``draft`` lets JPEG decoding skip resolution it does not need (Pillow's draft mode): the decoded image is
    at least that (width, height), which makes large photos several times cheaper to read.
    Raises :class:`UserError` for a missing or unreadable file.
    """
    if isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
        from .read.dataset import tar_member_image  # a member of a WebDataset .tar shard: "shard.tar/key.jpg"
        source = tar_member_image(source, draft=draft) or source
    if isinstance(source, Image.Image):
        img = source
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(f"no such file: {path}")
        if path.is_dir():
            raise UserError(f"expected an image file, got a folder: {path}")
        try:
            img = Image.open(path)
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"not an image Pillow can read: {path} ({exc.__class__.__name__})") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def list_images(paths: Iterable[ImageLike] | ImageLike, *, recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders recursively by default)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        path = Path(p)  # type: ignore[arg-type]
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            out += sorted(f for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            out.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return out


def to_pil(x: torch.Tensor) -> Image.Image:
    """Turn one pixel-space tensor ``3xHxW`` (or ``1x3xHxW``) in [0, 1] into an 8-bit RGB image."""
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected a 3xHxW tensor, got shape {tuple(x.shape)}")
    arr = (x.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8)
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


def to_pixels(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a float tensor ``3xHxW`` in [0, 1] (no resizing)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


_DEMO = ("chelsea", "coffee", "astronaut", "rocket")


def demo_images(names: Sequence[str] = _DEMO) -> dict[str, Image.Image]:
    """Photos that ship with scikit-image (chelsea the cat, coffee, astronaut, rocket, ...), as RGB images."""
    from skimage import data

    out = {}
    for name in names:
        arr = getattr(data, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        out[name] = Image.fromarray(arr[..., :3].astype(np.uint8), "RGB")
    return out
