"""Top-k patches: the dataset crops that drive each channel hardest (Zeiler & Fergus 2014; Girshick et al. 2014).

One streamed :func:`~convlens.read.scan.scan` keeps, per channel, the k images with the largest activation and
where in the map it happened; each is then cropped to the receptive field of that unit, computed from the
layer index (``model.layers[layer].rf``) -- a crop that would leave the image is clipped and marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..models import Model
from .dataset import Dataset
from .reducers import TopK, TopKResult
from .scan import scan

__all__ = ["Patch", "TopPatches", "crop_patches", "guided_patches", "top_patches"]


@dataclass
class Patch:
    """One top-activating unit: its image, map position ``(y, x)``, activation ``value`` and the receptive
    field ``box`` ``(x0, y0, x1, y1)`` in model-input pixels (clipped to the image; ``clipped`` says so).
    ``pixels`` is the ``3 x h x w`` crop in [0, 1]; ``full`` the unclipped box (may leave the image)."""

    file: Path
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    full: tuple[int, int, int, int]
    clipped: bool
    pixels: torch.Tensor = field(repr=False)
    mean: float | None = None  # the channel's mean over this image's map: the key that ranks equal maxima


@dataclass
class TopPatches:
    """``patches[i]`` are the top patches (strongest first) of channel ``channels[i]`` of ``layer``."""

    layer: str
    channels: list[int]
    patches: list[list[Patch]]
    rf_size: tuple[float, float]
    ties: list[int] = field(default_factory=list)
    """Per channel, how many of its top patches share their maximum with another (ranked by ``secondary``)."""
    secondary: str = TopKResult.SECONDARY


def crop_patches(model: Model, top: TopKResult) -> TopPatches:
    """Crop every entry of a top-k result to its unit's receptive field (each image decoded once)."""
    info = model.layers[top.layer]
    rf = info.rf
    h, w = model.preprocess.size
    cache: dict[int, torch.Tensor] = {}
    rows: list[list[Patch]] = []
    for c in range(len(top.channels)):
        row = []
        for j in range(top.ids.shape[1]):
            image_id = int(top.ids[c, j])
            if image_id < 0:
                continue
            if image_id not in cache:
                cache[image_id] = model.preprocess.to_tensor(top.file_of(image_id))
            y, x = int(top.y[c, j]), int(top.x[c, j])
            box = rf.box(y, x, h, w)
            full = (0, 0, w, h) if rf.whole else rf.unclipped(y, x)
            x0, y0, x1, y1 = box
            mean = None if top.means is None or np.isnan(top.means[c, j]) else float(top.means[c, j])
            row.append(Patch(top.file_of(image_id), float(top.values[c, j]), y, x, box, full, box != full,
                             cache[image_id][:, y0:y1, x0:x1].clone(), mean))
        rows.append(row)
    return TopPatches(top.layer, [int(c) for c in top.channels], rows, rf.size, [int(t) for t in top.ties])


def top_patches(model: Model, dataset: str | Path | Dataset | Sequence[str | Path], layer: str, *,
                channels: Sequence[int] | None = None, k: int = 9, batch_size: int | None = None,
                cache_dir: str | Path | None = None, progress: bool = True) -> TopPatches:
    """For each channel of ``layer`` (or just ``channels``), the ``k`` dataset patches that activate it most."""
    info = model.layers[layer]
    if not info.spatial:
        raise UserError(f"layer {layer!r} has no spatial map (output {info.shape}); pick a convolutional layer")
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < info.channels]
        if bad:
            raise UserError(f"channel {bad[0]} out of range: layer {layer} has channels 0-{info.channels - 1}")
    out = scan(model, dataset, [TopK(layer, k, channels=None if channels is None else list(channels))],
               batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    return crop_patches(model, out[f"topk:{layer}"])


def guided_patches(model: Model, tp: TopPatches, *, batch_size: int = 16) -> list[list[torch.Tensor]]:
    """The guided-backpropagation image (Springenberg et al. 2015) of every top unit, cropped like its patch.

    Units go through :func:`~convlens.attribute.gradients.guided_units` ``batch_size`` at a time (one backward
    pass per batch, not per unit). Each is ``3 x h x w`` scaled for display by the shared
    :func:`~convlens.show.figures.display_signed` (zero at 0.5, 99th percentile of ``|g|`` at 0 / 1).
    """
    from ..attribute.gradients import guided_units
    from ..show.figures import display_signed

    flat = [(i, j, c, p) for i, (c, ps) in enumerate(zip(tp.channels, tp.patches)) for j, p in enumerate(ps)]
    rows: list[list[torch.Tensor]] = [[torch.empty(0)] * len(ps) for ps in tp.patches]
    cache: dict[Path, torch.Tensor] = {}
    for s in range(0, len(flat), batch_size):
        part = flat[s:s + batch_size]
        for *_, p in part:
            if p.file not in cache:
                cache[p.file] = model.preprocess.to_tensor(p.file)
        x = torch.stack([cache[p.file] for *_, p in part])
        g = guided_units(model, tp.layer, x, [c for _, _, c, _ in part], [p.y for *_, p in part],
                         [p.x for *_, p in part]).cpu()
        for n, (i, j, _, p) in enumerate(part):
            x0, y0, x1, y1 = p.box
            rows[i][j] = display_signed(g[n, :, y0:y1, x0:x1])
    return rows
