"""The empirical receptive field of a unit (Zhou, Khosla, Lapedriza, Oliva & Torralba, ICLR 2015).

The theoretical receptive field of a unit is every pixel that can reach it; the *empirical* one is the part that
actually matters. Zhou et al. measure it by sliding a small patch of random pixels over an image that excites
the unit, recording how much the unit's activation drops at each position (the discrepancy map), aligning the
maps of many such images on the unit and averaging them. The result is typically far smaller than the
theoretical window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..attribute._common import Unit
from ..attribute.occlusion import occlusion
from ..core.taps import activations
from ..errors import UserError
from ..models import Model

__all__ = ["EmpiricalRF", "empirical_receptive_field"]


@dataclass
class EmpiricalRF:
    """The averaged discrepancy map of one unit.

    ``map`` is ``(S, S)`` in input pixels, centred on the unit's theoretical receptive-field centre, each image's
    map scaled to max 1 before averaging; ``theoretical`` is the side of the theoretical window (drawn as a box of
    that side around the centre); ``empirical`` the side of the square with the area where the mean map exceeds
    half its maximum, centred at ``peak`` (its offset ``(dy, dx)`` in pixels from the theoretical centre: TF-style
    "same" padding pads bottom/right more, so effective fields may sit a little up-left). ``maps`` are the
    per-image discrepancy maps in image coordinates, ``units`` the ``(y, x)`` map position used in each image.
    """

    layer: str
    channel: int
    map: np.ndarray
    theoretical: float
    empirical: float
    maps: list[np.ndarray]
    units: list[tuple[int, int]]
    occluder: int
    stride: int
    peak: tuple[float, float] = (0.0, 0.0)


def empirical_receptive_field(model: Model, images: torch.Tensor, layer: str, channel: int, *,
                              units: Sequence[tuple[int, int]] | None = None, occluder: int = 11,
                              stride: int | None = None, batch_size: int = 32, seed: int = 0) -> EmpiricalRF:
    """Measure the empirical receptive field of ``channel`` at ``layer`` on pixel batch ``images`` ``(N,3,H,W)``.

    Each image uses the unit at ``units[i]`` (default: where the channel is strongest). The occluder is a
    ``occluder x occluder`` patch of uniform random pixels (fixed by ``seed``), moved by ``stride`` pixels over
    the theoretical window (default stride: about 1/20 of the window, at least 2), and the discrepancy is the
    absolute change of the unit's activation.
    """
    info = model.layers[layer]
    if not info.spatial:
        raise UserError(f"layer {layer!r} has no spatial map; pick a convolutional layer")
    if not 0 <= channel < info.channels:
        raise UserError(f"channel {channel} out of range: layer {layer} has channels 0-{info.channels - 1}")
    rf = info.rf
    n, _, h, w = images.shape
    size = int(max(rf.size))
    stride = stride or max(2, round(size / 20))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(3, occluder, occluder, generator=gen)
    half = (size + occluder) // 2 + 1
    side = 2 * half + 1
    total = np.zeros((side, side), np.float64)
    maps, used = [], []
    with torch.no_grad():
        base = activations(model, images.to(model.device), layer)[layer][:, channel].float().cpu()
    for i in range(n):
        if units is not None:
            y, x = units[i]
        else:
            y, x = divmod(int(base[i].flatten().argmax()), base.shape[-1])
        x0, y0, x1, y1 = rf.unclipped(y, x)
        cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
        tops = range(max(0, y0 - occluder // 2), min(h - occluder, y1 - occluder // 2) + 1, stride)
        lefts = range(max(0, x0 - occluder // 2), min(w - occluder, x1 - occluder // 2) + 1, stride)
        # the discrepancy map is an occlusion map of the unit: |change| of its activation under a random patch
        m = occlusion(model, images[i:i + 1].to(model.device), Unit(layer, channel, int(y), int(x)),
                      window=occluder, stride=stride, fill=noise, absolute=True, starts=(tops, lefts),
                      batch_size=batch_size)[0].double().cpu().numpy()
        maps.append(m.astype(np.float32))
        used.append((int(y), int(x)))
        if m.max() > 0:
            m = m / m.max()
        # paste into the unit-centred frame
        oy, ox = round(cy) - half, round(cx) - half
        sy0, sx0 = max(0, oy), max(0, ox)
        sy1, sx1 = min(h, oy + side), min(w, ox + side)
        total[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox] += m[sy0:sy1, sx0:sx1]
    mean = total / max(1, n)
    hot = mean > 0.5 * mean.max() if mean.max() > 0 else np.zeros_like(mean, bool)
    empirical = float(np.sqrt(hot.sum()))
    peak = (0.0, 0.0)
    if hot.any():
        ys, xs = np.nonzero(hot)
        weight = mean[hot]
        peak = (float((ys * weight).sum() / weight.sum()) - half, float((xs * weight).sum() / weight.sum()) - half)
    return EmpiricalRF(layer, channel, mean.astype(np.float32), float(size), empirical, maps, used, occluder, stride,
                       peak)
