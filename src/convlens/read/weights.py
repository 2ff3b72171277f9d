"""Parameters as pictures: convolution filters and the templates of a linear classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..models import Model

__all__ = [
    "Filters",
    "conv_filters",
    "first_conv_layer",
    "first_linear_layer",
    "is_conv",
    "is_linear",
    "linear_templates",
    "template_shape",
]


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


def _type_name(mod: nn.Module) -> str:
    """``Conv2d`` / ``Linear`` for the torch modules and for their TorchScript copies (a ``RecursiveScriptModule``
    keeps the class name as ``original_name``)."""
    return str(getattr(mod, "original_name", "") or type(mod).__name__)


def is_conv(mod: nn.Module) -> bool:
    """A 2-D convolution, eager or TorchScript."""
    w = getattr(mod, "weight", None)
    return (isinstance(mod, nn.Conv2d) or _type_name(mod) == "Conv2d") and isinstance(w, torch.Tensor) and w.dim() == 4


def _weight(mod: nn.Module) -> torch.Tensor:
    """The ``weight`` tensor of a layer that :func:`is_conv` or :func:`is_linear` accepted."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor):  # unreachable after is_conv / is_linear: both check it
        raise TypeError(f"layer {_type_name(mod)} has no weight tensor")
    return w


def is_linear(mod: nn.Module) -> bool:
    """Any layer with linear weights ``(out, in)``: ``nn.Linear``, its TorchScript copy, or a user's own module
    with a 2-D ``weight`` (e.g. a scripted custom classifier)."""
    w = getattr(mod, "weight", None)
    return isinstance(mod, nn.Linear) or (isinstance(w, torch.Tensor) and w.dim() == 2 and
                                          _type_name(mod) not in ("Embedding", "EmbeddingBag"))


def _modules(model: Model | nn.Module) -> dict[str, nn.Module]:
    return dict((model.module if isinstance(model, Model) else model).named_modules())


def first_conv_layer(model: Model | nn.Module) -> str | None:
    """The first convolution reading a 3-channel input (else the first convolution), by module order; works on
    TorchScript modules, which cannot be traced by the layer index."""
    convs = [(n, m) for n, m in _modules(model).items() if n and is_conv(m)]
    rgb = [n for n, m in convs if int(_weight(m).shape[1]) * int(getattr(m, "groups", 1)) == 3]
    return rgb[0] if rgb else (convs[0][0] if convs else None)


def first_linear_layer(model: Model | nn.Module) -> str | None:
    """The first layer with linear weights, by module order."""
    return next((n for n, m in _modules(model).items() if n and is_linear(m)), None)


def _conv(model: Model | nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    mods = _modules(model)
    name: str | None
    if layer is None:
        if isinstance(model, Model) and not isinstance(model.module, torch.jit.ScriptModule):
            name = model.layers.first_conv()
        else:
            name = first_conv_layer(model)
        if name is None:
            raise UserError("this network has no convolution" + (
                "; it has linear weights: use `--layer " + str(first_linear_layer(model)) + "` to draw them as "
                "templates" if first_linear_layer(model) else ""))
    elif isinstance(model, Model):
        name = layer
        model.layer(name)  # unknown -> the closest names
    else:
        name = layer
        if name not in mods or not name:
            raise UserError(f"unknown layer {layer!r}")
    mod = mods[name]
    if not is_conv(mod):
        raise UserError(f"layer {name!r} is a {_type_name(mod)}, not a Conv2d; pick a convolution "
                        "(see `convlens layers MODEL`)")
    return name, mod


def conv_filters(model: Model | nn.Module, layer: str | None = None) -> Filters:
    """The filters of convolution ``layer`` (default: the first one reading the RGB image) as a :class:`Filters`.

    Following Krizhevsky et al. (2012) and Zeiler & Fergus (2014): first-layer filters are shown as colour
    images, deeper ones kernel by kernel, since only the first layer's inputs are pixels.
    """
    name, conv = _conv(model, layer)
    w = _weight(conv).detach().float().cpu().clone()
    groups = int(getattr(conv, "groups", 1))
    in_channels = int(w.shape[1]) * groups
    if in_channels == 3 and groups == 1:
        kind = "rgb"
    elif groups > 1 and groups == in_channels:
        kind = "depthwise"
    else:
        kind = "kernels"
    return Filters(name, w, kind, groups)


def template_shape(in_features: int, size: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """The image shape a linear layer of ``in_features`` inputs most plausibly reads: ``3 x size`` when that fits
    (the model's own input size), else a square RGB, else a square grey image; ``None`` when none fits."""
    if size is not None and 3 * size[0] * size[1] == in_features:
        return (3, int(size[0]), int(size[1]))
    for c in (3, 1):
        if in_features % c == 0:
            k = round((in_features // c) ** 0.5)
            if k > 1 and k * k * c == in_features:
                return (c, k, k)
    return None


def linear_templates(model: Model | nn.Module, layer: str | None = None, *,
                     shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Each row of a linear layer whose input is an image, reshaped to that image: ``(classes, C, H, W)``.

    A linear classifier on raw pixels (the lecture's CIFAR-10 templates) scores a class by the dot product of the
    image with the row; drawn as a picture the row is the class's "template". Any layer with linear weights
    ``(out, in)`` qualifies -- ``nn.Linear``, its TorchScript copy, or a custom module with a 2-D ``weight``.
    ``shape`` is the input image shape ``(C, H, W)`` (default: :func:`template_shape` of the layer's input
    size); its product must equal the layer's input size.
    """
    mods = _modules(model)
    if layer is None:
        layer = first_linear_layer(model)
        if layer is None:
            raise UserError("this network has no layer with linear weights")
    if layer not in mods:
        if isinstance(model, Model):
            model.layer(layer)  # unknown -> the closest names
        raise UserError(f"unknown layer {layer!r}")
    mod = mods[layer]
    if not is_linear(mod):
        raise UserError(f"layer {layer!r} is a {_type_name(mod)}, not a layer with linear weights (out, in)")
    weight = _weight(mod)
    n_in = int(weight.shape[1])
    if shape is None:
        size = model.preprocess.size if isinstance(model, Model) else None
        guess = template_shape(n_in, size)
        if guess is None:
            raise UserError(f"layer {layer!r} reads {n_in} values, which is no square image; give its shape CxHxW "
                            "(--template-shape)")
        shape = guess
    c, h, w = shape
    if n_in != c * h * w:
        raise UserError(f"layer {layer!r} reads {n_in} values, not an image of shape {c}x{h}x{w} ({c * h * w})")
    return weight.detach().float().cpu().reshape(-1, c, h, w).clone()
