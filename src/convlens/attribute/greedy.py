"""Greedy insertion: the order in which the image's regions must be shown for the network to see the target.

A search of the preservation game (Fong & Vedaldi 2017; Fong, Patrick & Vedaldi 2019, "extremal
perturbations"), played on the insertion metric's own terms (Petsiuk et al. 2018): start from a blurred copy of
the image and, round after round, reveal the cells of a grid whose pixels raise the target's score the most
when copied back, until the score is almost that of the whole image. Unlike a gradient, the search sees how
regions act together: a cell that only matters beside another is found once the other is shown. Where no cell
raises the score (a flat round), a prior map breaks the tie and orders the pixels inside each cell.

Forward-only: each round scores every remaining cell as one batch of masked copies on the fastest checked
engine (:mod:`convlens.attribute._forward`); about 1,500 copies of a 224 x 224 image at the defaults.

Because the search plays the game that insertion measures, its insertion score is partly earned by
construction: read it beside deletion (set to black, which the search never sees) and beside other canvases
(``evaluate-saliency --blur``), where it must hold up too.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..models.model import Model
from ._common import TargetLike, check_batch, resolve_targets, scores
from ._forward import forward_scores
from .occlusion import _filler

__all__ = ["greedy_insertion"]


def greedy_insertion(model: Model, x: torch.Tensor, target: TargetLike = None, *, cell: int = 16,
                     per_round: int = 4, stop: float = 0.95, prior: str | None = "guided_gradcam",
                     prior_weight: float = 0.15, blur: float | None = None, batch_size: int = 64,
                     engine: str = "auto") -> torch.Tensor:
    """Greedy insertion map ``(N, H, W)`` in (0, 1]: larger means revealed earlier.

    The image is cut into ``cell x cell`` cells and shown on a Gaussian-blurred copy of itself (``blur`` pixels,
    default the longer side / 28, the insertion metric's canvas). Each round scores every hidden cell revealed
    on top of those already shown and reveals the ``per_round`` best. A cell's merit is its score gain as a
    share of the whole image's gain over the canvas, plus ``prior_weight`` times its share of the ``prior``
    map (a method of :data:`~convlens.attribute.METHODS`, normalised to its largest cell; ``None``: no prior).
    Once the score reaches ``stop`` of the way from the canvas to the image, the last round's merits order the
    remaining cells. Within a cell, pixels follow the prior map.

    The score is the softmax probability of a class target, and a unit's activation or an output score
    otherwise (:func:`~convlens.attribute._common.scores`, eager PyTorch).
    """
    from .methods import saliency

    x = check_batch(x).detach()
    t: Any = resolve_targets(model, x, target)
    if cell < 1 or per_round < 1 or not 0 < stop <= 1 or prior_weight < 0:
        raise ValueError(f"need cell >= 1, per_round >= 1, 0 < stop <= 1 and prior_weight >= 0, "
                         f"got {cell}, {per_round}, {stop}, {prior_weight}")
    n, _, H, W = x.shape
    gh, gw = math.ceil(H / cell), math.ceil(W / cell)
    cell_id = (torch.arange(H, device=x.device) // cell)[:, None] * gw + (torch.arange(W, device=x.device) // cell)
    canvas = _filler(x, "blur", blur)
    out = torch.empty(n, H, W, dtype=x.dtype, device=x.device)
    classes = isinstance(t, torch.Tensor)
    cells = gh * gw
    passes = n * cells * (cells // per_round + 1) // 2 if classes else 0
    with forward_scores(model, engine=engine if classes else "torch", passes=passes, check=x[:2]) as fwd:
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
            out[i] = _search(x[i], canvas[i], cell_id, cells, score, pix, per_round, stop, prior_weight, batch_size)
    return out


def _search(x: torch.Tensor, canvas: torch.Tensor, cell_id: torch.Tensor, cells: int, score: Any,
            pix: torch.Tensor | None, per_round: int, stop: float, prior_weight: float, batch_size: int
            ) -> torch.Tensor:
    """One image's reveal order as a map (see :func:`greedy_insertion`)."""
    ends = score(torch.stack([canvas, x]))
    s0, gain = float(ends[0]), float(ends[1] - ends[0])
    scale = max(abs(gain), 1e-12)
    prior = torch.zeros(cells)
    if pix is not None:
        mass = torch.zeros(cells).index_add_(0, cell_id.flatten().cpu(), pix.flatten().cpu())
        area = torch.bincount(cell_id.flatten().cpu(), minlength=cells).float()
        prior = mass / area
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
            got = score(torch.where(keep[:, None], x[None], canvas[None]))
            merit[s:s + len(part)] = (got - s0) / scale
        reached = reached or float(merit.max()) >= stop
        ranked = (merit + prior_weight * prior[rest]).argsort(descending=True)
        take = ranked if reached else ranked[:per_round]
        picked = rest[take]
        order += picked.tolist()
        shown[picked] = True
    value = torch.empty(cells)
    value[torch.tensor(order)] = 1 - torch.arange(cells, dtype=torch.float32) / cells
    m = value.to(cell_id.device)[cell_id]
    if pix is not None:  # within a cell, the prior's order (never across cells)
        m = m + pix.to(m.device) * (0.5 / cells)
    return m.to(x.dtype)
