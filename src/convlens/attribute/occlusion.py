"""Occlusion sensitivity (Zeiler & Fergus 2014), batched, with incremental inference (Nakandala et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..models.model import Model
from ._common import TargetLike, check_batch, chunks, resolve_targets, scores
from ._incremental import IncrementalPlan

__all__ = ["occlusion", "occlusion_windows", "FILLS"]

FILLS = ("zero", "mean", "blur")


def occlusion_windows(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]
                      ) -> list[tuple[int, int, int, int]]:
    """The occluder boxes ``(y0, x0, y1, x1)`` in raster order: starts every ``stride`` pixels, the last one
    clipped at the border so every pixel is covered (Captum's ``Occlusion`` convention)."""
    boxes = []
    ny = math.ceil(max(0, height - window[0]) / stride[0]) + 1
    nx = math.ceil(max(0, width - window[1]) / stride[1]) + 1
    for i in range(ny):
        for j in range(nx):
            y0, x0 = i * stride[0], j * stride[1]
            boxes.append((y0, x0, min(height, y0 + window[0]), min(width, x0 + window[1])))
    return boxes


def _filler(x: torch.Tensor, fill: str | float, sigma: float | None = None) -> torch.Tensor:
    """The picture an occluder shows, per image ``N x 3 x H x W``: black, the image's mean colour, or a blur
    (Gaussian of ``sigma`` pixels, default the image's longer side / 28)."""
    if isinstance(fill, (int, float)):
        return torch.full_like(x, float(fill))
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if fill == "blur":
        sigma = max(x.shape[-2:]) / 28 if sigma is None else sigma
        r = max(1, int(3 * sigma))
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        y = F.pad(x, (r, r, r, r), mode="replicate")
        y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), groups=3)
        return F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), groups=3)
    raise ValueError(f"fill must be one of {FILLS} or a number, got {fill!r}")


def _to_score(out: torch.Tensor, target: int, score: str) -> torch.Tensor:
    if score == "prob":
        return out.float().softmax(-1)[:, target].to(out.dtype)
    return out[:, target]


def occlusion(model: Model, x: torch.Tensor, target: TargetLike = None, *, window: int | tuple[int, int] = 32,
              stride: int | tuple[int, int] = 8, fill: str | float | torch.Tensor = "zero", score: str = "prob",
              batch_size: int = 64, incremental: bool = True, absolute: bool = False,
              starts: tuple[Sequence[int], Sequence[int]] | None = None) -> torch.Tensor:
    """Occlusion maps: slide a ``window`` occluder every ``stride`` pixels and record how much the target drops.

    Each pixel gets the mean drop ``score(x) - score(occluded)`` over the occluder positions that cover it
    (Zeiler & Fergus 2014; the same numbers as Captum's ``Occlusion``). ``score`` is ``prob`` (softmax
    probability of the target class) or ``logit``; a :class:`Unit` target scores that unit's activation.
    An output score (a callable target) is scored on the logits, whatever ``score`` says.
    ``fill`` is ``zero`` (black), ``mean`` (the image's mean colour), ``blur``, a number, or a ``3 x h x w``
    patch shown at every position (the random patch of the empirical receptive field, Zhou et al. 2015).
    ``absolute`` records ``|score(x) - score(occluded)|``; ``starts`` ``(tops, lefts)`` replaces the raster of
    occluder positions (pixels no occluder covers get 0).
    Occluded copies are evaluated ``batch_size`` at a time; with ``incremental`` (class targets) the early
    layers recompute only the region each occluder reaches (Nakandala et al. 2019, "Krypton") -- exact, and
    several times cheaper in those layers. Returns ``(N, H, W)``; positive means the region supports the target.
    """
    x = check_batch(x)
    t: Any = resolve_targets(model, x, target)
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be prob or logit, got {score!r}")
    win: tuple[int, int] = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
    st: tuple[int, int] = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
    n, _, H, W = x.shape
    win = (min(win[0], H), min(win[1], W))
    if min(win) < 1 or min(st) < 1:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    if starts is None and ((H > win[0] and st[0] > win[0]) or (W > win[1] and st[1] > win[1])):
        raise ValueError(f"stride {st} larger than the window {win} would leave pixels unoccluded")
    if starts is None:
        boxes = occlusion_windows(H, W, win, st)
    else:
        boxes = [(int(t0), int(l0), min(H, int(t0) + win[0]), min(W, int(l0) + win[1]))
                 for t0 in starts[0] for l0 in starts[1]]
    patch = fill if isinstance(fill, torch.Tensor) else None
    if patch is not None:
        if patch.dim() != 3 or patch.shape[0] != 3 or tuple(patch.shape[1:]) < win:
            raise ValueError(f"a fill patch must be 3 x h x w with h, w >= the window {win}, got {tuple(patch.shape)}")
        patch = patch.to(x.device, x.dtype)
        incremental = False
    fills = _filler(x, "zero" if patch is not None else fill)  # type: ignore[arg-type]
    maps = torch.zeros(n, H, W, dtype=x.dtype, device=x.device)
    counts = torch.zeros(H, W, dtype=x.dtype, device=x.device)
    for (y0, x0, y1, x1) in boxes:
        counts[y0:y1, x0:x1] += 1
    for i in range(n):
        xi, fi = x[i:i + 1], fills[i:i + 1]
        unit = not isinstance(t, torch.Tensor)  # a unit or an output score: scored by scores()
        ti: Any = (t[i] if isinstance(t, tuple) else t) if unit else int(t[i])  # one image's target
        plan = None
        if incremental and not unit:
            plan = _plan(model, xi, fi, boxes, win)
        with torch.no_grad():
            base = scores(model, xi, ti).float()[0] if unit else _to_score(model(xi), ti, score)[0]
            for sl in chunks(len(boxes), batch_size):
                part = boxes[sl]
                if plan is not None:
                    patches, origins = _patches(xi, fi, part, win)
                    s = _to_score(plan.logits(patches, origins), ti, score)
                else:
                    batch = xi.expand(len(part), -1, -1, -1).clone()
                    for b, (y0, x0, y1, x1) in enumerate(part):
                        batch[b, :, y0:y1, x0:x1] = fi[0, :, y0:y1, x0:x1] if patch is None else \
                            patch[:, :y1 - y0, :x1 - x0]
                    s = scores(model, batch, ti) if unit else _to_score(model(batch), ti, score)
                drop = (base - s).abs() if absolute else base - s
                for b, (y0, x0, y1, x1) in enumerate(part):
                    maps[i, y0:y1, x0:x1] += drop[b]
    return maps / counts.clamp(min=1)


def _patches(xi: torch.Tensor, fi: torch.Tensor, boxes: list[tuple[int, int, int, int]], win: tuple[int, int]
             ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Occluded image content inside a fixed-size box per occluder (clipped occluders keep clean pixels)."""
    H, W = xi.shape[-2:]
    out, origins = [], []
    for (y0, x0, y1, x1) in boxes:
        oy, ox = min(y0, H - win[0]), min(x0, W - win[1])
        p = xi[0, :, oy:oy + win[0], ox:ox + win[1]].clone()
        p[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = fi[0, :, y0:y1, x0:x1]
        out.append(p)
        origins.append((oy, ox))
    return torch.stack(out), origins


def _plan(model: Model, xi: torch.Tensor, fi: torch.Tensor, boxes: list[tuple[int, int, int, int]],
          win: tuple[int, int]) -> IncrementalPlan | None:
    """An incremental plan checked on three occluders (first, middle, last) against full forward passes."""
    picks = sorted({0, len(boxes) // 2, len(boxes) - 1})
    checks = []
    for j in picks:
        y0, x0, y1, x1 = boxes[j]
        occ = xi.clone()
        occ[:, :, y0:y1, x0:x1] = fi[:, :, y0:y1, x0:x1]
        patch, origin = _patches(xi, fi, [boxes[j]], win)
        checks.append((occ, patch, origin[0]))
    H, W = xi.shape[-2:]
    origins = [(min(y0, H - win[0]), min(x0, W - win[1])) for (y0, x0, _, _) in boxes]
    return IncrementalPlan.build(model, xi, win, check=checks, origins=origins)
