"""Top-k patches: the dataset crops that drive each channel hardest (Zeiler & Fergus 2014; Girshick et al. 2014).

One streamed :func:`~convlens.read.scan.scan` keeps, per channel, the k images with the largest activation and
where in the map it happened; each is then cropped to the receptive field of that unit, computed from the
layer index (``model.layers[layer].rf``) -- a crop that would leave the image is clipped and marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class TopPatches:
    """``patches[i]`` are the top patches (strongest first) of channel ``channels[i]`` of ``layer``."""

    layer: str
    channels: list[int]
    patches: list[list[Patch]]
    rf_size: tuple[float, float]


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
            row.append(Patch(top.file_of(image_id), float(top.values[c, j]), y, x, box, full, box != full,
                             cache[image_id][:, y0:y1, x0:x1].clone()))
        rows.append(row)
    return TopPatches(top.layer, [int(c) for c in top.channels], rows, rf.size)


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


def guided_patches(model: Model, tp: TopPatches) -> list[list[torch.Tensor]]:
    """The guided-backpropagation image (Springenberg et al. 2015) of every top unit, cropped like its patch.

    Each is ``3 x h x w``, scaled for display to [0, 1] with zero at 0.5.
    """
    from ..core.taps import Tap, backward_rule

    rows = []
    for c, patches in zip(tp.channels, tp.patches):
        row = []
        for p in patches:
            x = model.preprocess.to_tensor(p.file)[None].to(model.device).requires_grad_(True)
            with backward_rule("guided", model, strict=False), Tap(model, tp.layer, stop=True) as tap:
                tap.run(x)
                tap.outputs[tp.layer][0, c, p.y, p.x].backward()
            g = x.grad[0].detach().cpu()  # type: ignore[index]
            x0, y0, x1, y1 = p.box
            g = g[:, y0:y1, x0:x1]
            row.append((0.5 + 0.5 * g / g.abs().max().clamp_min(1e-12)).clamp(0, 1))
        rows.append(row)
    return rows
