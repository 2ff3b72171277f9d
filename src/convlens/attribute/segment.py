"""Segmentation without labels: GrabCut seeded by a saliency map (Simonyan et al. 2014, section 3.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ._common import check_batch

__all__ = ["Segmentation", "grabcut"]


@dataclass
class Segmentation:
    """Foreground masks ``(N, H, W)`` (bool) and the share of the image each covers, ``area`` ``(N,)``."""

    masks: torch.Tensor
    area: torch.Tensor

    def cutout(self, x: torch.Tensor, background: float = 1.0) -> torch.Tensor:
        """The images ``(N, 3, H, W)`` with everything outside the mask set to ``background``."""
        return torch.where(self.masks[:, None].to(x.device), x, torch.full_like(x, background))


def grabcut(x: torch.Tensor, maps: torch.Tensor, *, foreground: float = 0.95, probable: float = 0.7,
            background: float = 0.3, iterations: int = 5, smooth: float = 0.02) -> Segmentation:
    """Segment each image with OpenCV's GrabCut, seeded by its saliency map (Simonyan et al. 2014).

    The map is blurred (Gaussian, ``smooth`` times the image side) and ranked: pixels above the ``foreground``
    quantile are sure foreground, above ``probable`` probable foreground, below ``background`` sure
    background, the rest probable background; GrabCut's colour models then decide. Returns the masks
    ``(N, H, W)`` and the foreground share of each image.
    """
    import cv2

    x = check_batch(x)
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"expected maps of shape {(x.shape[0], *x.shape[-2:])}, got {tuple(maps.shape)}")
    out = []
    for i, (img, sal) in enumerate(zip(x, maps)):
        if not torch.isfinite(sal).all():
            raise UserError(f"saliency map {i} has NaN or infinite values; GrabCut needs a finite map")
        rgb = (img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        s = sal.detach().float().cpu().numpy()
        sigma = max(1.0, smooth * max(s.shape))
        s = cv2.GaussianBlur(s, (0, 0), sigma)
        q_fg, q_pr, q_bg = np.quantile(s, [foreground, probable, background])
        mask = np.full(s.shape, cv2.GC_PR_BGD, np.uint8)
        mask[s >= q_pr] = cv2.GC_PR_FGD
        mask[s >= q_fg] = cv2.GC_FGD
        mask[s <= q_bg] = cv2.GC_BGD
        fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        if not fg.any() or fg.all() or not q_fg > q_bg:
            raise UserError(f"saliency map {i} is flat (values {float(s.min()):.3g} to {float(s.max()):.3g}): "
                            f"GrabCut needs a map that ranks some pixels above others to seed it")
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        out.append(torch.from_numpy((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)))
    masks = torch.stack(out)
    return Segmentation(masks, masks.flatten(1).float().mean(1))
