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
from ..core.params import FourierImage
from ..core.taps import activations
from ..images import ImageLike
from ..models.model import Model

__all__ = ["invert", "InversionResult", "default_invert_layers"]


def default_invert_layers(model: Model, n: int = 5) -> list[str]:
    """Shallow to deep from the layer index: the stem's output, ``n - 1`` stage outputs spread over the depth and
    the class scores (the index's classifier, when it has one) -- ``bn1, blocks.1, blocks.2, blocks.4, blocks.5,
    classifier`` on EfficientNet-Lite0; never a per-model name."""
    stem = model.layers.stem()
    stages = [s for s in model.layers.stages() if s != stem]
    logits = model.layers.classifier()
    return list(dict.fromkeys([stem, *model.layers.spread(n - 1, stages), *([logits] if logits else [])]))


@dataclass
class InversionResult:
    """Reconstructions of one photo from the code at several layers.

    Attributes:
        photo: the input pixels ``(1, 3, H, W)``.
        images: layer -> reconstruction ``(1, 3, H, W)``.
        errors: layer -> final relative feature error ``||Phi(x) - Phi_0|| / ||Phi_0||`` (0 = same code; the
            square root of the objective, so 0.05 means the code differs by 5 % of its norm).
        grey_errors: layer -> the same error for a uniform grey image, which carries nothing of the photo: the
            level an informative reconstruction must beat. Near 0, the layer's code hardly depends on the image
            (e.g. a collapsed randomly initialised network), so a near-0 ``errors`` there means nothing.
        pixel_errors: layer -> how far the reconstruction is from the photo, ``||x - x_0|| / ||x_0||``: what of the
            photo itself the code keeps. It is the lecture's lesson (deeper codes keep less of the image: the
            reconstructions grow more abstract), where ``errors`` says how well the optimiser matched the code.
        results: layer -> the loop's result (losses, seconds).
    """

    photo: torch.Tensor
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    grey_errors: dict[str, float] = field(default_factory=dict)
    pixel_errors: dict[str, float] = field(default_factory=dict)
    results: dict[str, OptimizeResult] = field(default_factory=dict)


# the normalisation of the prior in the journal version (Mahendran & Vedaldi 2016): pixels measured against a typical
# pixel magnitude B (80 of 255 for mean-subtracted images) and image gradients against V = B / 6.5
_B = 80 / 255
_V = _B / 6.5


def invert(model: Model, image: ImageLike | torch.Tensor, layers: str | Sequence[str] | None = None, *,
           steps: int = 200, tv: float = 0.01, beta: float = 2.0, alpha: float = 6.0, alpha_weight: float = 0.01,
           lr: float = 0.05, lr_end: float = 0.005, seed: int = 0, progress: bool = False) -> InversionResult:
    """Invert the code of ``image`` at each of ``layers`` (Mahendran & Vedaldi 2015), one reconstruction each.

    Every layer gets the same recipe, so the errors of different layers are comparable: from a random start,
    minimise ``||Phi(x) - Phi_0||^2 / ||Phi_0||^2 + alpha_weight * mean(|x - 0.5| / B)^alpha
    + tv * mean(|grad x| / V)^beta`` (the paper's objective and its normalisation of the prior, ``B = 80/255``,
    ``V = B / 6.5``) with Adam, the step decaying geometrically from ``lr`` to ``lr_end``, on a Fourier
    parametrisation with decorrelated colour (Olah et al. 2017; a preconditioner, not a prior: it keeps the deep
    layers from filling the image with saturated high-frequency colour noise).

    Args:
        model, image: the network and the photo (a path / PIL image, centre-cropped to the model input; or
            pixels ``(1, 3, H, W)``).
        layers: one or several layer names, the class scores included; each is inverted separately (default
            :func:`default_invert_layers`).
        steps: optimiser steps per layer.
        tv, beta: weight and exponent of the total-variation prior (:func:`total_variation`, divided by
            ``V^beta``).
        alpha, alpha_weight: exponent and weight of the alpha-norm prior (:func:`alpha_norm`, divided by
            ``B^alpha``).
        lr, lr_end: Adam's first and last step size.
        seed: the random start.

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
    targets = activations(model, photo, names)
    regs = ([tv / _V ** beta * total_variation(beta)] if tv else []) + (
        [alpha_weight / _B ** alpha * alpha_norm(alpha)] if alpha_weight else [])
    out = InversionResult(photo=photo.detach())
    for i, name in enumerate(names):
        gen = torch.Generator().manual_seed(seed + i)
        param = FourierImage(size=(int(photo.shape[-2]), int(photo.shape[-1])), generator=gen)
        objective = feature_match(name, targets[name])
        res = optimize(model, objective, param, regularizers=regs or None, steps=steps, optimizer="adam", lr=lr,
                       lr_end=lr_end, maximize=False, generator=gen, progress=progress)
        err, grey = evaluate(model, objective, torch.cat([res.images[:1], torch.full_like(photo, 0.5)])
                             ).clamp_min(0).sqrt().tolist()
        out.images[name] = res.images
        out.errors[name] = err
        out.grey_errors[name] = grey
        out.pixel_errors[name] = float((res.images[:1] - photo).norm() / photo.norm())
        out.results[name] = res
    return out
