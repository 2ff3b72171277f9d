"""Reading images from disk the way every command does: one reader, one folder walker, one skip policy.

:func:`load_image` opens anything Pillow reads as 8-bit RGB: EXIF orientation applied; 16-bit and 32-bit
greyscale scaled (not clipped); CMYK, palette, greyscale and alpha (over white) converted; an animated GIF / PNG
gives its first frame; an image larger than :func:`max_image_pixels` (a decompression bomb) is refused with one
line (raise the limit with :func:`set_max_image_pixels`, ``convlens --max-image-pixels N``).
:func:`list_images` walks folders, following symbolic links once (never in a loop), and :func:`read_images`
reads a list of files with the skip-and-report policy every folder command shares.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

__all__ = ["ImageLike", "load_image", "list_images", "to_pil", "IMAGE_SUFFIXES", "demo_images", "to_pixels",
           "max_image_pixels", "set_max_image_pixels", "read_images", "FolderRead"]

ImageLike = str | os.PathLike | Image.Image
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default: about 9459 x 9459
_limit: list[int | None] = [int(os.environ.get("CONVLENS_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)) or None]
# our own check below refuses an image above the limit before decoding; Pillow's warning would only repeat it
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def max_image_pixels() -> int | None:
    """The largest image (width x height) :func:`load_image` decodes; ``None`` means no limit."""
    return _limit[0]


def set_max_image_pixels(pixels: int | None) -> None:
    """Raise (or lower) the decompression-bomb limit for this process; ``None`` or 0 removes it."""
    if pixels is not None and pixels < 0:
        raise UserError(f"the image-size limit must be a positive number of pixels, got {pixels}")
    _limit[0] = int(pixels) if pixels else None
    # Pillow refuses at twice its own limit while opening; keep it out of our way
    Image.MAX_IMAGE_PIXELS = None if not pixels else max(int(pixels), DEFAULT_MAX_PIXELS)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB, scaling deep greyscale instead of clipping it."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            arr8 = arr.astype(np.float64) / 257.0
        elif img.mode == "I":
            top = float(arr.max()) if arr.size else 0.0
            arr8 = arr.astype(np.float64) / (257.0 if top > 255 else 1.0) if top <= 65535 else \
                arr.astype(np.float64) / (top / 255.0)
        else:  # float images: [0, 1] if they look like it, else 0..255
            top = float(np.nanmax(arr)) if arr.size else 0.0
            arr8 = np.nan_to_num(arr.astype(np.float64)) * (255.0 if top <= 1.0 else 1.0)
        return Image.fromarray(np.clip(np.rint(arr8), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "P", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(source: ImageLike, *, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied, deep / grayscale / palette / CMYK / RGBA converted.

    ``draft`` lets JPEG decoding skip resolution it does not need (Pillow's draft mode): the decoded image is
    at least that (width, height), which makes large photos several times cheaper to read.
    Raises :class:`UserError` (one line) for a missing, unreadable or oversized file.
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
            limit = _limit[0]
            if limit is not None and img.width * img.height > limit:
                raise UserError(f"{path} is {img.width}x{img.height} = {img.width * img.height:,} pixels, more than "
                                f"the limit of {limit:,} (a decompression bomb?); raise it with "
                                f"--max-image-pixels if you trust the file")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animations: the first frame
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
        except Image.DecompressionBombError as exc:
            raise UserError(f"{path} is too large to decode safely ({exc}); raise the limit with "
                            f"--max-image-pixels if you trust the file") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            if isinstance(exc, UserError):
                raise
            raise UserError(f"not an image Pillow can read: {path} ({exc.__class__.__name__})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001, S110 -- a damaged EXIF block: keep the pixels as stored
        pass
    return _to_rgb(img)


def list_images(paths: Iterable[ImageLike] | ImageLike, *, recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders recursively by default).

    Symbolic links to folders are followed once: a link back to a folder already walked (a loop) is not
    entered again, so every image is listed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:  # type: ignore[union-attr]
        path = Path(p)  # type: ignore[arg-type]
        if path.is_dir():
            found: list[Path] = []
            seen: set[str] = set()
            for top, dirs, names in os.walk(path, followlinks=True):
                real = os.path.realpath(top)
                if real in seen:
                    dirs[:] = []
                    continue
                seen.add(real)
                dirs.sort()
                if not recursive:
                    dirs[:] = []
                for n in names:
                    f = Path(top) / n
                    if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                        found.append(f)
            out += sorted(found)
        elif path.exists():
            out.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return out


T = TypeVar("T")


@dataclass
class FolderRead(Generic[T]):
    """What a folder job read: ``items`` and their ``files`` (in order), and ``skipped`` ``(file, reason)``."""

    items: list[T] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skipped_json(self) -> list[dict[str, str]]:
        """``skipped`` as ``[{"file": ..., "reason": ...}]`` for ``result.json``."""
        return [{"file": f, "reason": r} for f, r in self.skipped]


@overload
def read_images(files: Sequence[str | os.PathLike], read: None = None, *,
                warn: Callable[[str], Any] | None = None) -> FolderRead[Image.Image]: ...


@overload
def read_images(files: Sequence[str | os.PathLike], read: Callable[[Path], T], *,
                warn: Callable[[str], Any] | None = None) -> FolderRead[T]: ...


def read_images(files: Sequence[str | os.PathLike], read: Callable[[Path], Any] | None = None, *,
                warn: Callable[[str], Any] | None = None) -> FolderRead[Any]:
    """Read every file with ``read`` (default :func:`load_image`); skip one that fails with a warning, go on.

    The policy every folder command shares: an unreadable or oversized file is listed in ``skipped`` (and in
    ``result.json`` by the command), never fatal; only an empty result is an error (a :class:`UserError`).
    """
    reader: Callable[[Path], Any] = read or load_image
    out: FolderRead[Any] = FolderRead()
    for f in files:
        path = Path(f)
        try:
            item = reader(path)
        except UserError as exc:
            reason = str(exc)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            out.items.append(item)
            out.files.append(path)
            continue
        out.skipped.append((str(path), reason))
        message = f"skipped {path}: {reason}"
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, stacklevel=2)
    if files and not out.items:
        raise UserError(f"none of the {len(files)} image(s) could be read (first: {out.skipped[0][1]})")
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
