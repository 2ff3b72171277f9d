"""Top-k patches: the dataset crops that drive each channel hardest (Zeiler & Fergus 2014; Girshick et al. 2014).

One streamed :func:`~convlens.read.scan.scan` keeps, per channel, the k images with the largest activation and
where in the map it happened; each is then cropped to the receptive field of that unit, computed from the
layer index (``model.layers[layer].rf``) -- a crop that would leave the image is clipped and marked.

From mid-network on the theoretical receptive field covers the whole image, so that crop is the whole photo. There
the patch is cropped instead to the region that actually drives the unit (``crop="erf"``, the default when the
theoretical field is at least half the image): the smallest square centred on the unit that holds ``mass`` (90%)
of the unit's guided-backpropagation magnitude ``sum_c |g|`` (Springenberg et al. 2015), at least ``min_side``
pixels. The same batched :func:`~convlens.attribute.gradients.guided_units` pass gives the guided tiles, so
``guided_patches`` then costs nothing; the theoretical box is kept on each patch (``rf_box``) for the figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..models import Model
from .dataset import Dataset
from .reducers import TopK, TopKResult
from .scan import scan

__all__ = ["Patch", "TopPatches", "crop_patches", "erf_box", "erf_crop", "guided_patches", "large_rf", "top_patches",
           "unit_erf_box"]


@dataclass
class Patch:
    """One top-activating unit: its image, map position ``(y, x)``, activation ``value`` and the crop
    ``box`` ``(x0, y0, x1, y1)`` in model-input pixels (clipped to the image; ``clipped`` says so) -- the receptive
    field, or with ``TopPatches.crop == "erf"`` the square holding most of the unit's guided-backprop mass.
    ``pixels`` is the ``3 x h x w`` crop in [0, 1]; ``full`` the unclipped box (may leave the image); ``rf_box``
    the theoretical receptive field, clipped (equal to ``box`` for ``crop="rf"``)."""

    file: Path
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    full: tuple[int, int, int, int]
    clipped: bool
    pixels: torch.Tensor = field(repr=False)
    mean: float | None = None  # the channel's mean over this image's map: the key that ranks equal maxima
    rf_box: tuple[int, int, int, int] | None = None
    fallback: str | None = None
    """Why an effective-field crop fell back to the theoretical field (its guided gradient is zero everywhere):
    ``"resting"`` -- the plain gradient is zero too: every rectifier between the unit and the pixels is clamped
    (off, or at its ceiling), so the unit does not respond to any pixel there and its guided map is undefined;
    typically an off-unit at the value it takes with nothing in its window (``BN(0)`` after a negative depthwise
    kernel), a floor it rests at, not a response; ``"guided"`` -- only guided backprop is zero (every path to the
    pixels passes a negative weight, and guided keeps positive paths only)."""


FALLBACKS = {"resting": "plain gradient zero too: the unit does not respond to any pixel there (every rectifier "
                        "on the way clamped), typically the value it takes with nothing in its window",
             "guided": "only guided backprop is zero: every path to the pixels passes a negative weight"}


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
    crop: str = "rf"
    """``"rf"``: patches are theoretical receptive fields; ``"erf"``: squares holding ``mass`` of the guided mass."""
    mass: float | None = None
    guided: list[list[torch.Tensor]] | None = field(default=None, repr=False)
    """With ``crop="erf"``: each patch's guided-backprop tile (display-scaled, cropped like it), from the same pass."""
    input_size: tuple[int, int] | None = None
    """The model's input ``(H, W)`` the patches were cut from."""


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
                             cache[image_id][:, y0:y1, x0:x1].clone(), mean, box))
        rows.append(row)
    return TopPatches(top.layer, [int(c) for c in top.channels], rows, rf.size, [int(t) for t in top.ties],
                      input_size=model.preprocess.size)


def erf_box(mass: np.ndarray, cy: float, cx: float, *, fraction: float = 0.9, min_side: int = 16
            ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """The smallest square centred on ``(cy, cx)`` (input pixels) holding ``fraction`` of the non-negative
    ``H x W`` map ``mass``, at least ``min_side`` wide. Returns ``(clipped, unclipped)`` boxes ``(x0, y0, x1, y1)``
    with exclusive ends, placed like :meth:`ReceptiveField.box`. An all-zero map gives the ``min_side`` square."""
    h, w = mass.shape
    m = np.asarray(mass, np.float64)
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = m.cumsum(0).cumsum(1)
    total = integral[-1, -1]
    sides = np.arange(max(1, int(min_side)), 2 * max(h, w) + 2)
    y0 = np.floor(cy - (sides - 1) / 2).astype(int)
    x0 = np.floor(cx - (sides - 1) / 2).astype(int)
    cy0, cx0 = np.clip(y0, 0, h), np.clip(x0, 0, w)
    cy1, cx1 = np.clip(y0 + sides, 0, h), np.clip(x0 + sides, 0, w)
    inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
    ok = np.nonzero(inside >= fraction * total - 1e-12 * max(total, 1.0))[0] if total > 0 else np.array([0])
    i = int(ok[0]) if len(ok) else len(sides) - 1
    s = int(sides[i])
    return ((int(cx0[i]), int(cy0[i]), int(cx1[i]), int(cy1[i])),
            (int(x0[i]), int(y0[i]), int(x0[i]) + s, int(y0[i]) + s))


def _unit_gradients(model: Model, tp: TopPatches, batch_size: int, *, rule: str = "guided",
                    only: set[tuple[int, int]] | None = None
                    ) -> Iterator[tuple[int, int, Patch, torch.Tensor, torch.Tensor]]:
    """``(row, column, patch, guided gradient 3 x H x W, image pixels)`` of every top unit (or of the ``(row,
    column)`` in ``only``), the units through :func:`~convlens.attribute.gradients.guided_units` ``batch_size``
    at a time (one backward pass per batch); ``rule="gradient"`` for the plain gradient."""
    from ..attribute.gradients import guided_units

    flat = [(i, j, c, p) for i, (c, ps) in enumerate(zip(tp.channels, tp.patches)) for j, p in enumerate(ps)
            if only is None or (i, j) in only]
    cache: dict[Path, torch.Tensor] = {}
    for s in range(0, len(flat), batch_size):
        part = flat[s:s + batch_size]
        for *_, p in part:
            if p.file not in cache:
                cache[p.file] = model.preprocess.to_tensor(p.file)
        x = torch.stack([cache[p.file] for *_, p in part])
        g = guided_units(model, tp.layer, x, [c for _, _, c, _ in part], [p.y for *_, p in part],
                         [p.x for *_, p in part], rule=rule).cpu()
        for n, (i, j, _, p) in enumerate(part):
            yield i, j, p, g[n], cache[p.file]


def erf_crop(model: Model, tp: TopPatches, *, mass: float = 0.9, min_side: int | None = None,
             batch_size: int = 16) -> TopPatches:
    """``tp`` with every patch re-cropped to its unit's effective field: the smallest square centred on the unit
    holding ``mass`` of its guided-backprop magnitude (see :func:`erf_box`; ``min_side`` defaults to twice the
    layer's stride, at least 16 px), clipped to the theoretical field. Also fills ``tp.guided`` from the same
    batched pass. Patches of a unit with an all-zero guided gradient keep their receptive-field crop, and say why
    (``Patch.fallback``, from one plain-gradient pass over just those units)."""
    from ..show.figures import display_signed

    if not 0 < mass <= 1:
        raise UserError(f"mass must be in (0, 1], got {mass}")
    rf = model.layers[tp.layer].rf
    side = int(min_side) if min_side is not None else max(16, int(2 * max(rf.stride)))
    rows: list[list[Patch]] = [list(ps) for ps in tp.patches]
    guided: list[list[torch.Tensor]] = [[torch.empty(0)] * len(ps) for ps in tp.patches]
    flat: set[tuple[int, int]] = set()
    for i, j, p, g, img in _unit_gradients(model, tp, batch_size):
        rfb = p.rf_box if p.rf_box is not None else p.box
        found = unit_erf_box(rf, g, p.y, p.x, rfb, mass=mass, min_side=side)
        if found is None:
            guided[i][j] = display_signed(g[:, rfb[1]:rfb[3], rfb[0]:rfb[2]])
            flat.add((i, j))
            continue
        box, full = found
        bx0, by0, bx1, by1 = box
        rows[i][j] = Patch(p.file, p.value, p.y, p.x, box, full, box != full, img[:, by0:by1, bx0:bx1].clone(),
                           p.mean, rfb)
        guided[i][j] = display_signed(g[:, by0:by1, bx0:bx1])
    _why_zero(model, replace(tp, patches=rows), flat, batch_size)
    return TopPatches(tp.layer, tp.channels, rows, tp.rf_size, tp.ties, tp.secondary, "erf", mass, guided,
                      tp.input_size or model.preprocess.size)


def _why_zero(model: Model, tp: TopPatches, flat: set[tuple[int, int]], batch_size: int) -> None:
    """Set ``Patch.fallback`` of the units ``flat`` (row, rank) whose guided map is zero, in place, from one
    plain-gradient pass over just those: ``resting`` (the plain gradient is zero too) or ``guided``."""
    if flat:
        for i, j, p, g, _ in _unit_gradients(model, tp, batch_size, rule="gradient", only=flat):
            tp.patches[i][j] = replace(p, fallback="guided" if g.abs().sum() > 0 else "resting")


def unit_erf_box(rf: Any, grad: torch.Tensor, y: int, x: int, rf_box: tuple[int, int, int, int], *,
                 mass: float = 0.9, min_side: int = 16
                 ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """The effective-field crop of the unit at map position ``(y, x)`` from its guided gradient ``grad``
    (``3 x H x W``): :func:`erf_box` around the unit's centre, clipped to its theoretical box ``rf_box``. Returns
    ``(box, unclipped)``, or ``None`` when the gradient is zero everywhere (keep the receptive-field crop)."""
    a = grad.abs().sum(0).cpu().numpy()
    if not a.any():
        return None
    cy, cx = rf.start[0] + y * rf.stride[0], rf.start[1] + x * rf.stride[1]
    (bx0, by0, bx1, by1), full = erf_box(a, cy, cx, fraction=mass, min_side=min_side)
    box = (max(bx0, rf_box[0]), max(by0, rf_box[1]), min(bx1, rf_box[2]), min(by1, rf_box[3]))
    return box, full


def top_patches(model: Model, dataset: str | Path | Dataset | Sequence[str | Path], layer: str, *,
                channels: Sequence[int] | None = None, k: int = 9, batch_size: int | None = None,
                cache_dir: str | Path | None = None, progress: bool = True, crop: str = "auto",
                mass: float = 0.9, min_side: int | None = None) -> TopPatches:
    """For each channel of ``layer`` (or just ``channels``), the ``k`` dataset patches that activate it most.

    ``crop``: ``"rf"`` crops each to its unit's theoretical receptive field; ``"erf"`` to the square around the
    unit holding ``mass`` of its guided-backprop magnitude (:func:`erf_crop`; one batched backward pass per 16
    patches); ``"auto"`` (default) uses ``"erf"`` when the theoretical field is at least half the input's side,
    where receptive-field crops are (nearly) the whole photo.
    """
    if crop not in ("auto", "erf", "rf"):
        raise UserError(f"crop must be 'auto', 'erf' or 'rf', got {crop!r}")
    info = model.layers[layer]
    if not info.spatial:
        raise UserError(f"layer {layer!r} has no spatial map (output {info.shape}); pick a convolutional layer")
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < info.channels]
        if bad:
            raise UserError(f"channel {bad[0]} out of range: layer {layer} has channels 0-{info.channels - 1}")
    out = scan(model, dataset, [TopK(layer, k, channels=None if channels is None else list(channels))],
               batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    tp = crop_patches(model, out[f"topk:{layer}"])
    if crop == "auto":
        crop = "erf" if large_rf(model, layer) else "rf"
    return erf_crop(model, tp, mass=mass, min_side=min_side) if crop == "erf" else tp


def large_rf(model: Model, layer: str) -> bool:
    """Whether ``layer``'s theoretical receptive field spans at least half the input's side (``crop="auto"``)."""
    rf = model.layers[layer].rf
    h, w = model.preprocess.size
    return rf.whole or max(rf.size[0] / h, rf.size[1] / w) >= 0.5


def guided_patches(model: Model, tp: TopPatches, *, batch_size: int = 16) -> TopPatches:
    """``tp`` with the guided-backpropagation image (Springenberg et al. 2015) of every top unit in ``guided``,
    cropped like its patch, and the reason of every all-zero one in its ``Patch.fallback`` (as :func:`erf_crop`).

    Units go through :func:`~convlens.attribute.gradients.guided_units` ``batch_size`` at a time (one backward
    pass per batch, not per unit). Each is ``3 x h x w`` scaled for display by the shared
    :func:`~convlens.show.figures.display_signed` (zero at 0.5, 99th percentile of ``|g|`` at 0 / 1).
    """
    from ..show.figures import display_signed

    if tp.guided is not None:  # computed with the effective-field crops, in the same pass
        return tp
    out = replace(tp, patches=[list(ps) for ps in tp.patches])
    rows: list[list[torch.Tensor]] = [[torch.empty(0)] * len(ps) for ps in tp.patches]
    flat: set[tuple[int, int]] = set()
    for i, j, p, g, _ in _unit_gradients(model, tp, batch_size):
        x0, y0, x1, y1 = p.box
        rows[i][j] = display_signed(g[:, y0:y1, x0:x1])
        if not bool(g.abs().sum() > 0):
            flat.add((i, j))
    _why_zero(model, out, flat, batch_size)
    out.guided = rows
    return out
