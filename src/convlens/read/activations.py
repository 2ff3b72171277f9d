"""Activation maps of one image at one layer (Yosinski et al. 2015's "live" view, frozen)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.taps import activations
from ..errors import UserError
from ..images import ImageLike
from ..models import Model

__all__ = ["ActivationMaps", "activation_maps"]


@dataclass
class ActivationMaps:
    """Every channel's map of ``layer`` for one image.

    ``maps`` is ``(C, H, W)`` (a flat layer gives ``(C, 1, 1)``); ``pixels`` the ``3 x H x W`` input in [0, 1];
    ``rectified`` says whether the layer's output has passed a rectifier; only then is ``dead[c]`` (channel ``c``
    nowhere positive: all zero after a ReLU) meaningful. On a linear layer (a block's projection output) a map
    that is nowhere positive is an ordinary negative response, so ``dead`` is all False there and
    ``nonpositive`` counts those maps instead.
    """

    layer: str
    maps: torch.Tensor
    pixels: torch.Tensor
    rectified: bool = True

    @property
    def nonpositive(self) -> np.ndarray:
        return (self.maps.flatten(1).amax(1) <= 0).numpy()

    @property
    def dead(self) -> np.ndarray:
        return self.nonpositive if self.rectified else np.zeros(self.channels, dtype=bool)

    @property
    def channels(self) -> int:
        return int(self.maps.shape[0])


def activation_maps(model: Model, image: ImageLike | torch.Tensor, layer: str) -> ActivationMaps:
    """Run one image up to ``layer`` (stopping there) and return each channel's activation map."""
    x = image if isinstance(image, torch.Tensor) else model.load(image)
    if x.dim() == 3:
        x = x[None]
    if x.shape[0] != 1:
        raise UserError(f"activation_maps reads one image, got a batch of {x.shape[0]}")
    a = activations(model, x.to(model.device), layer)[layer][0].float().cpu()
    if a.dim() == 1:
        a = a[:, None, None]
    from .scan import is_rectified

    return ActivationMaps(layer, a, x[0].cpu(), rectified=is_rectified(model, layer))
