"""Faithfulness of saliency maps: deletion and insertion curves (Petsiuk et al., "RISE", 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.model import Model
from ._common import check_batch, chunks
from .occlusion import _filler

__all__ = ["Faithfulness", "deletion_insertion"]


@dataclass
class Faithfulness:
    """Deletion / insertion curves ``(N, steps + 1)`` of the target probability, and their areas ``(N,)``.

    ``fractions`` are the shares of pixels removed (deletion) or inserted (insertion) at each point. A faithful
    map makes the probability fall fast under deletion (small area) and rise fast under insertion (large area).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor

    @property
    def deletion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.deletion, self.fractions, dim=-1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.insertion, self.fractions, dim=-1)


def deletion_insertion(model: Model, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
                       steps: int = 50, batch_size: int = 64, generator: torch.Generator | None = None
                       ) -> Faithfulness:
    """Deletion and insertion curves of saliency ``maps`` ``(N, H, W)`` (Petsiuk et al. 2018).

    Pixels are taken in decreasing order of saliency (ties broken at random with ``generator``) in ``steps``
    equal groups. Deletion sets them to black, starting from the image; insertion copies them from the image
    into a blurred copy of it. At each step the softmax probability of ``target`` is recorded; the areas under
    the curves (trapezoid rule over the fraction of pixels) lie in [0, 1]. All step images run batched.
    """
    x = check_batch(x)
    n, _, H, W = x.shape
    if maps.shape != (n, H, W):
        raise ValueError(f"expected maps of shape {(n, H, W)}, got {tuple(maps.shape)}")
    target = torch.as_tensor(target, device=x.device).view(-1).expand(n)
    total = H * W
    counts = [round(total * k / steps) for k in range(steps + 1)]
    black = torch.zeros_like(x)
    blurred = _filler(x, "blur")
    dele = torch.empty(n, steps + 1)
    ins = torch.empty(n, steps + 1)
    for i in range(n):
        noise = torch.rand(total, generator=generator) * 1e-6 * (maps[i].abs().max().item() + 1e-12)
        order = torch.argsort(maps[i].flatten().float().cpu() + noise, descending=True).to(x.device)
        rank = torch.empty(total, dtype=torch.long, device=x.device)
        rank[order] = torch.arange(total, device=x.device)
        rank = rank.view(1, 1, H, W)
        thresholds = torch.tensor(counts, device=x.device).view(-1, 1, 1, 1)
        for curve, start, end in ((dele, x[i], black[i]), (ins, blurred[i], x[i])):
            probs = []
            for sl in chunks(steps + 1, batch_size):
                chosen = rank < thresholds[sl]  # S x 1 x H x W: the pixels moved so far
                batch = torch.where(chosen, end.unsqueeze(0), start.unsqueeze(0))
                with torch.no_grad():
                    probs.append(model(batch).float().softmax(-1)[:, int(target[i])].cpu())
            curve[i] = torch.cat(probs)
    fractions = torch.tensor(counts, dtype=torch.float32) / total
    return Faithfulness(fractions, dele, ins)
