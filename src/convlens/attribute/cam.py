"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017) on any spatial layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.taps import RuleReport
from ..errors import UserError
from ..models.model import Model
from ._common import TargetLike, check_batch, resolve_targets, scores
from .gradients import guided_backprop

__all__ = ["grad_cam", "guided_grad_cam"]


def _layer_and_grad(model: Model, x: torch.Tensor, target: torch.Tensor, layer: str) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """Activation of ``layer`` and ``d score / d activation``; the backward pass stops at the layer."""
    module = model.layer(layer)
    box: dict[str, torch.Tensor] = {}

    def hook(mod: torch.nn.Module, inp: object, out: object) -> object:
        if "a" in box or not isinstance(out, torch.Tensor):
            return None
        leaf = out.detach().requires_grad_(True)
        box["a"] = leaf
        return leaf.clone()  # downstream in-place ops modify the copy; gradients still reach the leaf

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            s = scores(model, x, target)
            if "a" not in box:
                raise ValueError(f"layer {layer!r} did not produce a tensor in the forward pass")
            (g,) = torch.autograd.grad(s.sum(), box["a"])
    finally:
        handle.remove()
    return box["a"].detach(), g


def grad_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
             upsample: bool = True) -> torch.Tensor:
    """Grad-CAM: ``relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``d score / d A_k`` at ``layer``
    (default: the last layer with a spatial map, ``model.layers.last_spatial()``).

    Returns ``(N, H, W)`` at the input's resolution (bilinear upsampling; ``upsample=False`` keeps the layer's
    resolution), unnormalised: the values are in the units of the class score.
    """
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    if not isinstance(t, torch.Tensor):
        raise ValueError("grad_cam needs class targets")
    layer = layer or model.layers.last_spatial()
    model.layer(layer)  # an unknown name: one line with the closest names
    if layer in model.layers and not model.layers[layer].spatial:
        raise UserError(f"Grad-CAM needs a layer with a spatial map; {layer!r} has output shape "
                        f"{tuple(model.layers[layer].shape)} (see `convlens layers --spatial-only`)")
    a, g = _layer_and_grad(model, x, t, layer)
    if a.dim() != 4:
        raise UserError(f"layer {layer!r} has no spatial map (output shape {tuple(a.shape[1:])})")
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    if upsample:
        cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam


def guided_grad_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *,
                    layer: str | None = None, report: RuleReport | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop ``(N, 3, H, W)`` multiplied by the upsampled Grad-CAM map
    (Selvaraju et al. 2017) -- class-discriminative and high-resolution. Returns ``(N, 3, H, W)``;
    ``report`` as in :func:`~convlens.attribute.guided_backprop`."""
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    return guided_backprop(model, x, t, report=report) * grad_cam(model, x, t, layer=layer)[:, None]
