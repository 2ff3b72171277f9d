"""Greedy insertion: the order in which the image's regions must be shown for the network to see the target.

A search of the preservation game (Fong & Vedaldi 2017; Fong, Patrick & Vedaldi 2019, "extremal
perturbations"), played on the insertion metric's own terms (Petsiuk et al. 2018): start from a blurred copy of
the image and, round after round, reveal the cells of a grid whose pixels raise the target's score the most
when copied back, until the score is almost that of the whole image. Unlike a gradient, the search sees how
regions act together: a cell that only matters beside another is found once the other is shown. Where no cell
raises the score (a flat round), a prior map breaks the tie and orders the pixels inside each cell.

A greedy search is myopic, and which grid finds the object depends on the object (a snake's evidence is spread
over many cells, a bird's sits in one): the search runs on grids of several cell sizes, and keeps whichever
order -- one per grid, or the prior map's own -- plays both of Petsiuk et al.'s games best in its own score
(insertion area minus deletion area at ``check_steps`` points), as restarts of any search keep the best.

Forward-only: each round scores every remaining cell as one batch of masked copies on the fastest checked
engine (:mod:`convlens.attribute._forward`); about 3,000 copies of a 224 x 224 image at the defaults.

Because the search plays the game that insertion measures, its insertion score is partly earned by
construction: read it beside deletion (set to black, which the search never sees) and beside other canvases
(``evaluate-saliency --blur``), where it must hold up too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..models.model import Model
from ._common import TargetLike, check_batch, resolve_targets, scores
from ._forward import forward_scores
from .occlusion import _filler

__all__ = ["greedy_insertion"]


def greedy_insertion(model: Model, x: torch.Tensor, target: TargetLike = None, *,
                     cells: int | Sequence[int] = (16, 32), reveal: float = 0.02, stop: float = 0.95,
                     prior: str | None = "guided_gradcam", prior_weight: float = 0.15, blur: float | None = None,
                     check_steps: int = 25, batch_size: int = 64, engine: str = "auto") -> torch.Tensor:
    """Greedy insertion map ``(N, H, W)`` in (0, 1]: larger means revealed earlier.

    The image is shown on a Gaussian-blurred copy of itself (``blur`` pixels, default the longer side / 28, the
    insertion metric's canvas) and cut into square cells of each size in ``cells``. Each round scores every
    hidden cell revealed on top of those already shown and reveals the best ones, ``reveal`` of the image per
    round (2 %: one step of a 50-step insertion curve). A cell's merit is its score gain as a share of the whole
    image's gain over the canvas, plus ``prior_weight`` times its share of the ``prior`` map (a method of
    :data:`~convlens.attribute.METHODS`, normalised to its largest cell; ``None``: no prior). Once the score
    reaches ``stop`` of the way from the canvas to the image, the last round's merits order the remaining cells.
    Within a cell, pixels follow the prior map. Of the orders found (one per cell size) and the prior's own,
    the one with the largest insertion area minus deletion area (pixels set to black) over ``check_steps``
    steps is returned, always in the same units: the reveal order, 1 for the first pixel.

    The score is the softmax probability of a class target, and a unit's activation or an output score
    otherwise (:func:`~convlens.attribute._common.scores`, eager PyTorch).
    """
    from .methods import saliency

    x = check_batch(x).detach()
    t: Any = resolve_targets(model, x, target)
    sizes = [cells] if isinstance(cells, int) else [int(c) for c in cells]
    if not sizes or min(sizes) < 1 or not 0 < reveal <= 1 or not 0 < stop <= 1 or prior_weight < 0 or check_steps < 1:
        raise ValueError(f"need cells >= 1, 0 < reveal <= 1, 0 < stop <= 1, prior_weight >= 0 and check_steps >= 1, "
                         f"got {cells}, {reveal}, {stop}, {prior_weight}, {check_steps}")
    n, _, H, W = x.shape
    canvas = _filler(x, "blur", blur)
    out = torch.empty(n, H, W, dtype=x.dtype, device=x.device)
    classes = isinstance(t, torch.Tensor)
    passes = n * sum(math.ceil(H / c) * math.ceil(W / c) / (2 * reveal) for c in sizes) if classes else 0
    with forward_scores(model, engine=engine if classes else "torch", passes=int(passes), check=x[:2]) as fwd:
        for i in range(n):
            ti = int(t[i]) if classes else (t[i] if isinstance(t, tuple) else t)

            def score(batch: torch.Tensor, ti: Any = ti) -> torch.Tensor:
                if classes:
                    return fwd(batch).float().softmax(-1)[:, ti].cpu()
                with torch.no_grad():
                    return scores(model, batch, ti).float().cpu()

            pix = None
            if prior is not None:
                pix = saliency(model, x[i:i + 1], prior, ti)[0].detach().float().clamp(min=0)
                pix = pix / pix.max().clamp(min=1e-12)
            ends = score(torch.stack([canvas[i], x[i], torch.zeros_like(x[i])]))  # canvas, image, black: once
            found = [_search(x[i], canvas[i], c, score, pix, reveal, stop, prior_weight, batch_size, ends)
                     for c in sizes]
            if pix is not None:
                found.append(_order(pix))
            merit = [_games(x[i], canvas[i], m, score, check_steps, batch_size, ends) for m in found]
            out[i] = found[max(range(len(found)), key=merit.__getitem__)]
    return out


def _search(x: torch.Tensor, canvas: torch.Tensor, cell: int, score: Any, pix: torch.Tensor | None,
            reveal: float, stop: float, prior_weight: float, batch_size: int, ends: torch.Tensor) -> torch.Tensor:
    """One image's reveal order on one grid, as a map (see :func:`greedy_insertion`); ``ends`` are the scores of
    the canvas and of the image."""
    H, W = x.shape[-2:]
    gw = math.ceil(W / cell)
    cell_id = (torch.arange(H, device=x.device) // cell)[:, None] * gw + (torch.arange(W, device=x.device) // cell)
    cells = math.ceil(H / cell) * gw
    per_round = max(1, round(reveal * H * W / cell ** 2))
    s0, scale = float(ends[0]), max(abs(float(ends[1] - ends[0])), 1e-12)
    prior = torch.zeros(cells)
    if pix is not None:
        mass = torch.zeros(cells).index_add_(0, cell_id.flatten().cpu(), pix.flatten().cpu())
        prior = mass / torch.bincount(cell_id.flatten().cpu(), minlength=cells).float()
        prior = prior / prior.max().clamp(min=1e-12)
    shown = torch.zeros(cells, dtype=torch.bool)
    order: list[int] = []
    reached = False
    while len(order) < cells:
        rest = (~shown).nonzero()[:, 0]
        base = shown.to(cell_id.device)[cell_id]
        merit = torch.empty(len(rest))
        for s in range(0, len(rest), batch_size):
            part = rest[s:s + batch_size].to(cell_id.device)
            keep = base[None] | (cell_id[None] == part[:, None, None])
            merit[s:s + len(part)] = (score(torch.where(keep[:, None], x[None], canvas[None])) - s0) / scale
        reached = reached or float(merit.max()) >= stop
        ranked = (merit + prior_weight * prior[rest]).argsort(descending=True)
        picked = rest[ranked if reached else ranked[:per_round]]
        order += picked.tolist()
        shown[picked] = True
    value = torch.empty(cells)
    value[torch.tensor(order)] = 1 - torch.arange(cells, dtype=torch.float32) / cells
    m = value.to(cell_id.device)[cell_id]
    if pix is not None:  # within a cell, the prior's order (never across cells)
        m = m + pix.to(m.device) * (0.5 / cells)
    return m.to(x.dtype)


def _rank(m: torch.Tensor) -> torch.Tensor:
    """Each pixel's rank in decreasing order of ``m`` (0 = the largest; ties in pixel order), shaped like ``m``."""
    rank = torch.empty(m.numel(), dtype=torch.long, device=m.device)
    rank[m.flatten().argsort(descending=True, stable=True)] = torch.arange(m.numel(), device=m.device)
    return rank.view(m.shape)


def _order(m: torch.Tensor) -> torch.Tensor:
    """A map as its reveal order: ``1 - rank / pixels`` (1 = the largest value; ties in pixel order)."""
    return (1 - _rank(m).float() / m.numel()).to(m.dtype)


def _games(x: torch.Tensor, canvas: torch.Tensor, m: torch.Tensor, score: Any, steps: int, batch_size: int,
           ends: torch.Tensor) -> float:
    """Insertion area minus deletion area of map ``m`` in the search's own score: its pixels, in decreasing order
    and ``steps`` equal groups (ties in pixel order), copied onto the canvas, or set to black in the image.
    ``ends`` are the scores of the canvas, the image and the black image (the curves' shared end points)."""
    counts = torch.tensor([round(m.numel() * k / steps) for k in range(1, steps)], device=m.device)
    shown = _rank(m)[None, None] < counts.view(-1, 1, 1, 1)  # the interior steps (steps - 1, 1, H, W)
    black = torch.zeros_like(x)
    inner = [torch.cat([score(torch.where(part, a[None], b[None])) for part in shown.split(batch_size)]
                       + [torch.empty(0)]) for a, b in ((x, canvas), (black, x))]
    ins = torch.cat([ends[:1], inner[0], ends[1:2]])
    dele = torch.cat([ends[1:2], inner[1], ends[2:]])
    return float(torch.trapezoid(ins, dx=1 / steps) - torch.trapezoid(dele, dx=1 / steps))
