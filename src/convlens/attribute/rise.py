"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko, BMVC 2018).

A black-box method: the network is only run forward, on the image multiplied by many random smooth masks, and
each pixel's saliency is the score the network gives on average when that pixel is kept. Forward-only, so the
masked copies run batched on the fastest checked engine (OpenVINO when installed).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..models.model import Model
from ._common import TargetLike, Unit, check_batch, resolve_targets
from ._forward import forward_scores
from .occlusion import _filler

__all__ = ["rise", "rise_masks"]


def rise_masks(count: int, size: tuple[int, int], *, cells: int = 7, keep: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` RISE masks ``(count, H, W)`` in [0, 1]: a ``cells x cells`` grid of cells kept with probability
    ``keep``, upsampled bilinearly to ``(cells + 1)`` cell sizes and cropped at a random shift of up to one cell
    (Petsiuk et al. 2018, section 3.2), so the masks are smooth and not aligned to a grid."""
    H, W = size
    ch, cw = math.ceil(H / cells), math.ceil(W / cells)
    grid = (torch.rand(count, 1, cells, cells, generator=generator) < keep).float()
    up = F.interpolate(grid, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (count,), generator=generator)
    dx = torch.randint(0, cw, (count,), generator=generator)
    return torch.stack([up[i, 0, int(dy[i]):int(dy[i]) + H, int(dx[i]):int(dx[i]) + W] for i in range(count)]
                       ).clamp_(0, 1)


def rise(model: Model, x: torch.Tensor, target: TargetLike = None, *, masks: int = 2000, cells: int = 7,
         keep: float = 0.5, fill: str | float = "zero", batch_size: int = 64,
         generator: torch.Generator | None = None, engine: str = "auto") -> torch.Tensor:
    """RISE saliency (Petsiuk et al. 2018): ``S(pixel) = E[score(x * M) M(pixel)] / keep`` over ``masks`` random
    masks (:func:`rise_masks`), where ``x * M`` shows the image where the mask is 1 and ``fill`` (one of
    :data:`~convlens.attribute.FILLS` or a number: ``zero``, black, is the paper's) where it is 0, the score being the softmax probability of the target class (or a :class:`Unit`'s
    activation: a channel's mean or one neuron).

    The same masks (drawn with ``generator``) serve every image of the batch; masked copies run ``batch_size`` at
    a time on ``engine`` (``auto``: OpenVINO when installed, checked against PyTorch). The paper uses 4000 masks
    of 7 x 7 cells for ImageNet networks; the default 2000 halves the time and keeps the map's ranking close.
    Returns ``(N, H, W)`` in units of the score (a probability for classes): the expected score when the pixel
    is kept.
    """
    x = check_batch(x).detach()
    t: Any = resolve_targets(model, x, target)
    if masks < 1 or not 0 < keep < 1 or cells < 1:
        raise ValueError(f"need masks >= 1, 0 < keep < 1 and cells >= 1, got {masks}, {keep}, {cells}")
    n, _, H, W = x.shape
    canvas = _filler(x, fill)
    unit = t if isinstance(t, Unit) else None
    total = torch.zeros(n, H * W, dtype=torch.float64)
    per = max(1, batch_size // n)  # masks per forward batch, so one batch holds every image's copies
    with forward_scores(model, layer=unit.layer if unit else None, engine=engine, passes=masks * n,
                        check=x[:2]) as fwd:
        for start in range(0, masks, per):
            m = rise_masks(min(per, masks - start), (H, W), cells=cells, keep=keep, generator=generator).to(x.device)
            mm = m[None, :, None]
            batch = (x.unsqueeze(1) * mm + canvas.unsqueeze(1) * (1 - mm)).flatten(0, 1)  # image-major (n * b, 3, H, W)
            out = fwd(batch).float().cpu()
            if unit is None:
                s = out.softmax(-1).view(n, len(m), -1).gather(2, t.cpu().view(n, 1, 1).expand(n, len(m), 1))[..., 0]
            else:
                s = _unit_score(out, unit).view(n, len(m))
            total += s.double().cpu() @ m.flatten(1).double().cpu()
    return (total / (masks * keep)).view(n, H, W).to(x.dtype).to(x.device)


def _unit_score(a: torch.Tensor, unit: Unit) -> torch.Tensor:
    if a.dim() == 2:
        return a[:, unit.channel]
    if unit.y is None:
        return a[:, unit.channel].flatten(1).mean(1)
    return a[:, unit.channel, unit.y, unit.x]
