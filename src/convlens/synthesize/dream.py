"""DeepDream (Mordvintsev, Olah & Tyka 2015), as in the original notebook, on the one optimisation loop.

Each step: roll the image by a random jitter, run forward to the layer, set the gradient at the layer to the
activation itself (maximise ``0.5 ||a||^2``, :func:`~convlens.core.objectives.layer_norm`), back-propagate, take
an L1-normalised step ``step_size / mean|g| * g``, roll back, clip to the valid pixel range. Octaves: the photo
is processed from coarse to fine; at each scale the detail added so far is upsampled and added to the photo at
that scale (``PixelImage(octave_mode="detail")``), which grows patterns at every scale while the photo stays
sharp. With a guide image the objective is the dot product with the guide's best-matching features.
"""

from __future__ import annotations

import torch

from ..core.objectives import Objective, layer_guide, layer_norm
from ..core.optimize import OptimizeResult, optimize
from ..core.params import PixelImage
from ..core.taps import activations
from ..core.transforms import Jitter
from ..errors import UserError
from ..images import ImageLike, load_image, to_pixels
from ..models.model import Model

__all__ = ["dream", "DREAM_DEPTH", "default_dream_layer", "photo_pixels"]

DREAM_DEPTH = 2 / 3
"""The default dream layer's place in the network: the stage output at two thirds of the depth."""


def default_dream_layer(model: Model) -> str:
    """The stage output at :data:`DREAM_DEPTH` of the depth (``blocks.4`` on EfficientNet-Lite0, ``layer3.1`` on a
    ResNet-18), from the layer index -- never a per-model name."""
    return model.layers.at_depth(DREAM_DEPTH)


def photo_pixels(image: ImageLike | torch.Tensor, max_side: int | None = None) -> torch.Tensor:
    """A photo as pixels ``(1, 3, H, W)``, its longer side reduced to ``max_side`` if larger (aspect kept)."""
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image[None]
        if max_side and max(x.shape[-2:]) > max_side:
            s = max_side / max(x.shape[-2:])
            size = (max(8, round(x.shape[-2] * s)), max(8, round(x.shape[-1] * s)))
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x.float()
    img = load_image(image)
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(8, round(img.width * s)), max(8, round(img.height * s))), 1)
    return to_pixels(img)[None]


def dream(model: Model, image: ImageLike | torch.Tensor, *, layer: str | None = None, octaves: int = 4,
          octave_scale: float = 1.4, steps: int = 10, jitter: int = 32, step_size: float = 1.5 / 255,
          guide: ImageLike | torch.Tensor | None = None, max_side: int | None = 512, seed: int = 0,
          progress: bool = False, snapshot_every: int = 0) -> OptimizeResult:
    """DeepDream a photo (Mordvintsev et al. 2015).

    Args:
        model: the network; ``layer`` the layer whose activation norm grows (default
            :func:`default_dream_layer`; block outputs work best on EfficientNet-Lite: the post-ReLU6 activations
            clip at 6 and barely grow).
        image: the photo (path, PIL image or pixels); processed at its own size, longer side capped at
            ``max_side``.
        octaves, octave_scale: coarse-to-fine scales (each ``octave_scale`` times larger).
        steps: steps per octave; ``jitter``: maximum random roll in pixels; ``step_size``: the L1-normalised
            step in pixel units (1.5/255, the notebook's 1.5 on a 0-255 scale).
        guide: optional guide image: maximise the dot product with its best-matching features instead.

    Returns:
        :class:`~convlens.core.optimize.OptimizeResult`: ``images`` the dream ``(1, 3, H, W)``, ``values`` the
        final objective (``0.5 ||a||^2`` of the layer, or the guide's dot product).
    """
    layer = layer or default_dream_layer(model)
    model.layer(layer)
    x = photo_pixels(image, max_side).to(model.device)
    if min(x.shape[-2:]) / octave_scale ** (octaves - 1) < 16:
        raise UserError(f"{octaves} octaves of scale {octave_scale} make the {tuple(x.shape[-2:])} photo smaller "
                        f"than 16 pixels; use fewer octaves")
    objective: Objective = layer_norm(layer)
    if guide is not None:
        g = photo_pixels(guide, max_side=max(model.preprocess.size)).to(model.device)
        objective = layer_guide(layer, activations(model, g, layer)[layer][0])
    param = PixelImage(init=x, octave_mode="detail")
    return optimize(model, objective, param, transforms=[Jitter(jitter, mode="roll")], steps=steps,
                    optimizer="sgd-l1", lr=step_size, octaves=octaves, octave_scale=octave_scale, seed=seed,
                    progress=progress, snapshot_every=snapshot_every)
