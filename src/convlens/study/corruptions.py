"""Controlled corruptions at five severities: the ImageNet-C definitions (Hendrycks & Dietterich, ICLR 2019) and
three geometric / occluding ones of our own.

Why not the PyPI package ``imagecorruptions``: version 1.1.2 (the latest) does not import without ``pkg_resources``
(gone from current setuptools), and with that shimmed its ``gaussian_blur`` and ``glass_blur`` call scikit-image's
removed ``multichannel=`` argument, ``fog`` uses NumPy 1's ``np.float_`` and ``frost`` fails to find its bundled
pictures; it also draws from NumPy's global random state. The corruptions needed here are short, so they are
written out below with the constants of ImageNet-C's ``make_imagenet_c.py`` (as carried by ``imagecorruptions``),
each drawing its randomness from a seeded :class:`numpy.random.Generator`.

Every corruption maps one image ``H x W x 3`` (float, values 0..255) and a severity 1..5 to an image of the same
shape; :func:`corrupt` applies one to a pixel batch ``(N, 3, H, W)`` in [0, 1] and rounds to 8 bits, as ImageNet-C's
saved images are.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import UserError, closest

__all__ = ["Corruption", "CORRUPTIONS", "DEFAULT_CORRUPTIONS", "corrupt", "corruption_names"]

Fn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """A named corruption: ``fn(image 0..255 HxWx3, severity 1..5, rng) -> image``; ``source`` says whose
    definition it follows (``"ImageNet-C"`` or ``"convlens"``) and ``family`` groups it (noise, blur, digital,
    weather / photometric, geometric, occlusion)."""

    name: str
    family: str
    source: str
    fn: Fn
    doc: str


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255)


# --- noise (ImageNet-C) -----------------------------------------------------------------------------------------

def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return _clip((x / 255.0 + rng.normal(size=x.shape, scale=c)) * 255)


def _shot_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (60, 25, 12, 5, 3)[s - 1]
    return _clip(rng.poisson(x / 255.0 * c) / c * 255)


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # skimage.util.random_noise(mode="s&p", amount=c): each value flipped with probability c, half to 0, half to 1
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    out = x / 255.0
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    out = np.where(flipped & salted, 1.0, np.where(flipped & ~salted, 0.0, out))
    return _clip(out * 255)


# --- blur (ImageNet-C) ------------------------------------------------------------------------------------------

def _disk(radius: float, alias_blur: float) -> np.ndarray:
    import cv2

    if radius <= 8:
        ax, ksize = np.arange(-8, 8 + 1, dtype=np.float64), (3, 3)
    else:
        ax, ksize = np.arange(-radius, radius + 1, dtype=np.float64), (5, 5)
    xx, yy = np.meshgrid(ax, ax)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def _defocus_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    k = _disk(radius, alias)
    img = (x / 255.0).astype(np.float32)
    out = np.stack([cv2.filter2D(img[..., ch], -1, k) for ch in range(3)], -1)
    return _clip(out * 255)


def _gaussian_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # skimage.filters.gaussian(x, sigma=c, channel_axis=-1): mode "nearest", truncate 4
    from scipy.ndimage import gaussian_filter

    c = (1, 2, 3, 4, 6)[s - 1]
    return _clip(gaussian_filter(x / 255.0, sigma=(c, c, 0), mode="nearest", truncate=4.0) * 255)


# --- digital (ImageNet-C) ---------------------------------------------------------------------------------------

def _jpeg(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    q = (25, 18, 15, 10, 7)[s - 1]
    buf = io.BytesIO()
    Image.fromarray(np.uint8(np.round(x))).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64)


def _pixelate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    h, w = x.shape[:2]
    img = Image.fromarray(np.uint8(np.round(x)))
    img = img.resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64)


def _contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    img = x / 255.0
    means = img.mean(axis=(0, 1), keepdims=True)
    return _clip(((img - means) * c + means) * 255)


def _brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    c = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    hsv = rgb2hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _clip(hsv2rgb(hsv) * 255)


# --- geometric and occlusion (convlens; ImageNet-C has none) --------------------------------------------------

def _rotation(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    angle = (6.0, 12.0, 18.0, 24.0, 30.0)[s - 1] * (1 if rng.random() < 0.5 else -1)
    h, w = x.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    out = cv2.warpAffine(x.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _clip(out.astype(np.float64))


def _scale(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    f = (0.85, 0.7, 0.55, 0.4, 0.3)[s - 1]
    h, w = x.shape[:2]
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    small = cv2.resize(x.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.empty_like(x, dtype=np.float32)
    out[...] = x.reshape(-1, 3).mean(0)  # the photo's mean colour around the shrunken photo
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return _clip(out.astype(np.float64))


def _occlusion(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    frac = (0.05, 0.1, 0.2, 0.3, 0.4)[s - 1]
    h, w = x.shape[:2]
    side = round(float(np.sqrt(frac * h * w)))
    sh, sw = min(h, side), min(w, side)
    top = int(rng.integers(0, h - sh + 1))
    left = int(rng.integers(0, w - sw + 1))
    out = x.copy()
    out[top:top + sh, left:left + sw] = 127.5
    return out


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", "noise", "ImageNet-C", _gaussian_noise,
               "additive Gaussian noise, sigma 0.08-0.38 of the range"),
    Corruption("shot_noise", "noise", "ImageNet-C", _shot_noise, "Poisson (photon) noise, 60-3 photons per unit"),
    Corruption("impulse_noise", "noise", "ImageNet-C", _impulse_noise, "salt-and-pepper noise, 3-27% of values"),
    Corruption("defocus_blur", "blur", "ImageNet-C", _defocus_blur, "disk kernel of radius 3-10 px"),
    Corruption("gaussian_blur", "blur", "ImageNet-C", _gaussian_blur, "Gaussian blur, sigma 1-6 px"),
    Corruption("jpeg_compression", "digital", "ImageNet-C", _jpeg, "JPEG quality 25-7"),
    Corruption("pixelate", "digital", "ImageNet-C", _pixelate, "box down- and up-sampling to 60-25% of the side"),
    Corruption("brightness", "photometric", "ImageNet-C", _brightness, "HSV value +0.1 to +0.5"),
    Corruption("contrast", "photometric", "ImageNet-C", _contrast, "contrast to 40-5% around the channel means"),
    Corruption("rotation", "geometric", "convlens", _rotation,
               "rotation by 6-30 degrees (random sign), borders reflected"),
    Corruption("scale", "geometric", "convlens", _scale,
               "photo shrunk to 85-30% of its side, centred on its mean colour"),
    Corruption("occlusion", "occlusion", "convlens", _occlusion,
               "a mid-grey square covering 5-40% of the image at a random place"),
)}
"""Every corruption by name."""

DEFAULT_CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "jpeg_compression", "brightness",
                                        "contrast", "rotation", "scale", "occlusion")
"""The issue's set: noise, blur, JPEG, brightness, contrast, rotation, scale, occlusion."""


def corruption_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"default"`` / ``None`` -> :data:`DEFAULT_CORRUPTIONS`, ``"all"`` -> every one, else the listed names
    (a comma-separated string or a sequence), each checked."""
    if spec is None or spec == "default":
        return list(DEFAULT_CORRUPTIONS)
    if spec == "all":
        return list(CORRUPTIONS)
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [str(n).strip() for n in spec]
    names = [n for n in names if n]
    for n in names:
        if n not in CORRUPTIONS:
            hint = closest(n, list(CORRUPTIONS))
            raise UserError(f"unknown corruption {n!r}; known: {', '.join(CORRUPTIONS)}, default or all"
                            + (f" (closest: {', '.join(hint)})" if hint else ""))
    if not names:
        raise UserError("no corruption named")
    return names


def corrupt(x: torch.Tensor, name: str, severity: int, *, seed: int = 0,
            ids: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to a pixel batch ``(N, 3, H, W)`` in [0, 1].

    Image ``i`` draws its randomness from ``numpy.random.default_rng([seed, corruption, severity, ids[i]])``, so an
    image is corrupted the same way whatever batch it is in (``ids`` default to ``0..N-1``). The result is rounded
    to 8-bit levels and returned in [0, 1] on the input's device and dtype; the input is not modified.
    """
    if name not in CORRUPTIONS:
        corruption_names([name])  # raises with the known names
    if not isinstance(severity, int) or not 1 <= severity <= 5:
        raise UserError(f"severity must be 1-5, got {severity!r}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
    ids = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} images")
    c = CORRUPTIONS[name]
    index = list(CORRUPTIONS).index(name)
    arr = (x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.float64)
    out = np.empty_like(arr)
    for i, (img, k) in enumerate(zip(arr, ids)):
        rng = np.random.default_rng([seed, index, severity, int(k)])
        res = c.fn(img, severity, rng)
        if res.shape != img.shape:
            raise RuntimeError(f"corruption {name} changed the shape {img.shape} -> {res.shape}")
        out[i] = res
    y = torch.from_numpy(np.round(np.clip(out, 0, 255)) / 255.0).permute(0, 3, 1, 2)
    return y.to(device=x.device, dtype=x.dtype).contiguous()
