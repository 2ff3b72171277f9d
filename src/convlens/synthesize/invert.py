"""Feature inversion (Mahendran & Vedaldi 2015): which image does a layer's code describe?

Find ``x`` minimising ``||Phi(x) - Phi_0||^2 / ||Phi_0||^2 + lambda_alpha ||x||_alpha + lambda_TV TV_beta(x)``
from noise, where ``Phi_0`` is the code of a photo at one layer. Shallow layers give the photo back almost
exactly; deeper layers keep what the network considers essential and lose the rest, which is the point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.objectives import alpha_norm, feature_match, total_variation
from ..core.optimize import OptimizeResult, evaluate, optimize
from ..core.params import PixelImage
from ..core.taps import activations
from ..core.transforms import Jitter
from ..images import ImageLike
from ..models.model import Model

__all__ = ["invert", "InversionResult", "DEFAULT_INVERT_LAYERS"]

DEFAULT_INVERT_LAYERS = ("bn1", "blocks.1", "blocks.2", "blocks.3", "blocks.5")


@dataclass
class InversionResult:
    """Reconstructions of one photo from the code at several layers.

    Attributes:
        photo: the input pixels ``(1, 3, H, W)``.
        images: layer -> reconstruction ``(1, 3, H, W)``.
        errors: layer -> final relative feature error ``||Phi(x) - Phi_0|| / ||Phi_0||`` (0 = same code; the
            square root of the objective, so 0.05 means the code differs by 5 % of its norm).
        results: layer -> the loop's result (losses, seconds).
    """

    photo: torch.Tensor
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    results: dict[str, OptimizeResult] = field(default_factory=dict)


def invert(model: Model, image: ImageLike | torch.Tensor, layers: str | Sequence[str] = DEFAULT_INVERT_LAYERS, *,
           steps: int = 200, tv: float = 0.5, beta: float = 2.0, alpha: float = 6.0, alpha_weight: float = 1.0,
           optimizer: str = "adam", lr: float | None = None, jitter: int = 1, seed: int = 0,
           progress: bool = False) -> InversionResult:
    """Invert the code of ``image`` at each of ``layers`` (Mahendran & Vedaldi 2015), one reconstruction each.

    Args:
        model, image: the network and the photo (a path / PIL image, centre-cropped to the model input; or
            pixels ``(1, 3, H, W)``).
        layers: one or several layer names; each is inverted separately.
        steps: optimiser steps per layer.
        tv, beta: weight and exponent of the total-variation prior (:func:`total_variation`).
        alpha, alpha_weight: exponent and weight of the alpha-norm prior (:func:`alpha_norm`).
        optimizer: ``adam`` (default; with ``jitter`` random shifts, more informative at deep layers) or
            ``lbfgs`` (``jitter`` is then ignored; near-perfect at shallow layers).
        lr: step size (default 0.05 for Adam, 1 for L-BFGS).
        seed: the noise start and the shifts.

    Returns:
        :class:`InversionResult` with the reconstructions and their relative feature errors.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    for n in names:
        model.layer(n)
    if isinstance(image, torch.Tensor):
        photo = (image if image.dim() == 4 else image[None]).float().to(model.device)
    else:
        photo = model.load(image)
    targets = activations(model, photo, names)
    out = InversionResult(photo=photo.detach())
    regs = []
    if tv:
        regs.append(tv * total_variation(beta))
    if alpha_weight:
        regs.append(alpha_weight * alpha_norm(alpha))
    for i, name in enumerate(names):
        gen = torch.Generator().manual_seed(seed + i)
        param = PixelImage(size=tuple(photo.shape[-2:]), noise=0.1, generator=gen)
        objective = feature_match(name, targets[name])
        transforms = [Jitter(jitter, mode="roll")] if jitter and optimizer != "lbfgs" else []
        res = optimize(model, objective, param, transforms=transforms, regularizers=regs or None, steps=steps,
                       optimizer=optimizer, lr=lr, maximize=False, generator=gen, progress=progress)
        err = float(evaluate(model, objective, res.images).clamp_min(0).sqrt()[0])
        out.images[name] = res.images
        out.errors[name] = err
        out.results[name] = res
    return out
