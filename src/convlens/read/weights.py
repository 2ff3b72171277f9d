"""Parameters as pictures: convolution filters and the templates of a linear classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..models import Model

__all__ = ["Filters", "conv_filters", "linear_templates"]


@dataclass
class Filters:
    """The weights of one convolution, ready to be drawn.

    ``weight`` is ``(out, in/groups, kh, kw)``. ``kind`` says how to read it: ``rgb`` (a first layer reading the
    image: one colour tile per output channel, Krizhevsky et al. 2012's 96 11x11 filters), ``depthwise``
    (``groups == in == out``: one grayscale tile per channel) or ``kernels`` (every (output, input) kernel its
    own grayscale tile, the "20 x 16 grid of 7x7" figure of the lecture).
    """

    layer: str
    weight: torch.Tensor
    kind: str
    groups: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)


def _conv(model: Model | nn.Module, layer: str | None) -> tuple[str, nn.Conv2d]:
    if isinstance(model, Model):
        name = layer or model.layers.first_conv()
        mod = model.layer(name)
    else:
        mods = dict(model.named_modules())
        if layer is None:
            name = next((n for n, m in mods.items() if isinstance(m, nn.Conv2d)), "")
        else:
            name = layer
        if name not in mods or not name:
            raise UserError(f"unknown layer {layer!r}")
        mod = mods[name]
    if not isinstance(mod, nn.Conv2d):
        raise UserError(f"layer {name!r} is a {type(mod).__name__}, not a Conv2d; pick a convolution "
                        "(see `convlens layers MODEL`)")
    return name, mod


def conv_filters(model: Model | nn.Module, layer: str | None = None) -> Filters:
    """The filters of convolution ``layer`` (default: the first one reading the RGB image) as a :class:`Filters`.

    Following Krizhevsky et al. (2012) and Zeiler & Fergus (2014): first-layer filters are shown as colour
    images, deeper ones kernel by kernel, since only the first layer's inputs are pixels.
    """
    name, conv = _conv(model, layer)
    w = conv.weight.detach().float().cpu().clone()
    if conv.in_channels == 3 and conv.groups == 1:
        kind = "rgb"
    elif conv.groups > 1 and conv.groups == conv.in_channels:
        kind = "depthwise"
    else:
        kind = "kernels"
    return Filters(name, w, kind, int(conv.groups))


def linear_templates(model: Model | nn.Module, layer: str | None = None, *,
                     shape: tuple[int, int, int] = (3, 32, 32)) -> torch.Tensor:
    """Each row of a linear layer whose input is an image, reshaped to that image: ``(classes, C, H, W)``.

    A linear classifier on raw pixels (the lecture's CIFAR-10 templates) scores a class by the dot product of the
    image with the row; drawn as a picture the row is the class's "template". ``shape`` is the input image shape;
    the layer's input size must equal its product.
    """
    mods = dict((model.module if isinstance(model, Model) else model).named_modules())
    if layer is None:
        layer = next((n for n, m in mods.items() if isinstance(m, nn.Linear)), None)
        if layer is None:
            raise UserError("this network has no Linear layer")
    mod = mods.get(layer)
    if not isinstance(mod, nn.Linear):
        raise UserError(f"layer {layer!r} is not a Linear layer")
    c, h, w = shape
    if mod.in_features != c * h * w:
        raise UserError(f"layer {layer!r} reads {mod.in_features} values, not an image of shape {c}x{h}x{w} "
                        f"({c * h * w})")
    return mod.weight.detach().float().cpu().reshape(-1, c, h, w).clone()
