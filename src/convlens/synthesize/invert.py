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
from ..errors import UserError
from ..images import ImageLike
from ..models.model import Model

__all__ = ["invert", "InversionResult", "default_invert_layers"]


def default_invert_layers(model: Model, n: int = 5) -> list[str]:
    """Shallow to deep from the layer index: the stem's output and ``n - 1`` stage outputs spread over the depth
    (``bn1, blocks.1, blocks.2, blocks.4, blocks.5`` on EfficientNet-Lite0) -- never a per-model name."""
    stem = model.layers.stem()
    stages = [s for s in model.layers.stages() if s != stem]
    return list(dict.fromkeys([stem, *model.layers.spread(n - 1, stages)]))


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


def invert(model: Model, image: ImageLike | torch.Tensor, layers: str | Sequence[str] | None = None, *,
           steps: int | None = None, tv: float | None = None, beta: float = 2.0, alpha: float = 6.0,
           alpha_weight: float | None = None, optimizer: str = "auto", lr: float | None = None, jitter: int = 1,
           seed: int = 0, progress: bool = False) -> InversionResult:
    """Invert the code of ``image`` at each of ``layers`` (Mahendran & Vedaldi 2015), one reconstruction each.

    Args:
        model, image: the network and the photo (a path / PIL image, centre-cropped to the model input; or
            pixels ``(1, 3, H, W)``).
        layers: one or several layer names; each is inverted separately (default
            :func:`default_invert_layers`).
        steps: optimiser steps per layer (default 100 for L-BFGS, 200 for Adam).
        tv, beta: weight and exponent of the total-variation prior (:func:`total_variation`); default weight
            0.05 for L-BFGS, 0.5 for Adam.
        alpha, alpha_weight: exponent and weight of the alpha-norm prior (:func:`alpha_norm`); default weight
            0.1 for L-BFGS, 1 for Adam.
        optimizer: ``lbfgs`` (near-perfect at shallow layers; ``jitter`` is ignored), ``adam`` (with ``jitter``
            random shifts and a stronger TV prior: more informative images at deep layers, where L-BFGS matches
            the code with near-grey images), or ``auto`` (default): L-BFGS for layers of stride <= 2, Adam deeper.
        lr: step size (default 0.05 for Adam, 1 for L-BFGS).
        seed: the noise start and the shifts.

    Returns:
        :class:`InversionResult` with the reconstructions and their relative feature errors.
    """
    names = default_invert_layers(model) if layers is None else [layers] if isinstance(layers, str) else list(layers)
    for n in names:
        model.layer(n)
    if isinstance(image, torch.Tensor):
        photo = (image if image.dim() == 4 else image[None]).float().to(model.device)
    else:
        photo = model.load(image)
    if optimizer not in ("auto", "adam", "lbfgs"):
        raise UserError(f"optimizer must be auto, adam or lbfgs, got {optimizer!r}")
    targets = activations(model, photo, names)
    out = InversionResult(photo=photo.detach())
    for i, name in enumerate(names):
        opt = optimizer
        if opt == "auto":
            info = model.layers.get(name)
            shallow = info is not None and not info.rf.whole and max(info.rf.stride) <= 2
            opt = "lbfgs" if shallow else "adam"
        lbfgs = opt == "lbfgs"
        w_tv = (0.05 if lbfgs else 0.5) if tv is None else tv
        w_alpha = (0.1 if lbfgs else 1.0) if alpha_weight is None else alpha_weight
        regs = ([w_tv * total_variation(beta)] if w_tv else []) + ([w_alpha * alpha_norm(alpha)] if w_alpha else [])
        gen = torch.Generator().manual_seed(seed + i)
        param = PixelImage(size=(int(photo.shape[-2]), int(photo.shape[-1])), noise=0.1, generator=gen)
        objective = feature_match(name, targets[name])
        transforms = [Jitter(jitter, mode="roll")] if jitter and not lbfgs else []
        res = optimize(model, objective, param, transforms=transforms, regularizers=regs or None,
                       steps=steps if steps is not None else (100 if lbfgs else 200), optimizer=opt, lr=lr,
                       maximize=False, generator=gen, progress=progress)
        err = float(evaluate(model, objective, res.images).clamp_min(0).sqrt()[0])
        out.images[name] = res.images
        out.errors[name] = err
        out.results[name] = res
    return out
