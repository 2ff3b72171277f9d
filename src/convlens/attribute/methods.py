"""One registry of saliency methods (name -> map function), shared by the library, the CLI and the metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import UserError, closest
from ..models.model import Model
from ._common import TargetLike, check_batch, to_map
from .cam import (
    ablation_cam,
    eigen_cam,
    grad_cam,
    grad_cam_pp,
    guided_grad_cam,
    hires_cam,
    layer_cam,
    score_cam,
    xgrad_cam,
)
from .gradients import deconvnet, guided_backprop, integrated_gradients, smoothgrad, vanilla_gradient
from .greedy import greedy_insertion
from .occlusion import occlusion
from .rise import rise

__all__ = ["METHODS", "CLASS_ONLY", "CAM_METHODS", "saliency", "edge_map", "random_map"]

MapFn = Callable[..., torch.Tensor]


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Image gradient magnitude (Sobel on the gray image), ``(N, H, W)`` -- a map that never looks at the model
    (the sanity baseline of Adebayo et al. 2018)."""
    x = check_batch(x)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device).view(1, 1, 3, 3)
    g = torch.nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = torch.nn.functional.conv2d(g, kx)
    gy = torch.nn.functional.conv2d(g, kx.transpose(-1, -2))
    return (gx * gx + gy * gy).sqrt()[:, 0]


def random_map(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random map ``(N, H, W)``: the floor any faithful method must clear."""
    x = check_batch(x)
    return torch.rand(x.shape[0], *x.shape[-2:], generator=generator).to(x.device, x.dtype)


def _gradient_map(fn: MapFn) -> MapFn:
    def run(model: Model, x: torch.Tensor, target: TargetLike = None, **kw: Any) -> torch.Tensor:
        return to_map(fn(model, x, target, **kw))
    run.__doc__ = fn.__doc__
    return run


METHODS: dict[str, MapFn] = {
    "gradient": _gradient_map(vanilla_gradient),
    "deconvnet": _gradient_map(deconvnet),
    "guided": _gradient_map(guided_backprop),
    "smoothgrad": _gradient_map(smoothgrad),
    "integrated": _gradient_map(integrated_gradients),
    "gradcam": grad_cam,
    "guided_gradcam": _gradient_map(guided_grad_cam),
    "occlusion": occlusion,
    "gradcampp": grad_cam_pp,
    "xgradcam": xgrad_cam,
    "hirescam": hires_cam,
    "layercam": layer_cam,
    "scorecam": score_cam,
    "ablationcam": ablation_cam,
    "eigencam": eigen_cam,
    "rise": rise,
    "greedy": greedy_insertion,  # its prior is a method of this registry
}
"""Saliency maps ``(N, H, W)`` by name; larger means more important for the target."""

CLASS_ONLY: tuple[str, ...] = ()  # every method now explains any target (class, unit, output score)
CAM_METHODS = ("gradcam", "guided_gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam",
               "ablationcam", "eigencam")
"""Methods that read one spatial layer (``layer=`` option: one name, several, or names separated by commas)."""
BASELINES = ("random", "edge")
RANDOM_METHODS = ("random", "smoothgrad", "rise")
"""Methods that draw random numbers (they take ``generator=``): their maps depend on the seed."""


def saliency(model: Model, x: torch.Tensor, method: str, target: TargetLike = None, **options: Any) -> torch.Tensor:
    """The saliency map ``(N, H, W)`` of ``method`` (a name of :data:`METHODS`, or ``random`` / ``edge``) for
    each image and its target; ``options`` go to the method (e.g. ``samples=``, ``window=``)."""
    if method == "random":
        return random_map(x, generator=options.get("generator"))
    if method == "edge":
        return edge_map(x)
    if method not in METHODS:
        hint = closest(method, list(METHODS) + list(BASELINES))
        raise UserError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}, random, edge"
                        + (f" (closest: {', '.join(hint)})" if hint else ""))
    return METHODS[method](model, x, target, **options)
