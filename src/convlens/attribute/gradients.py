"""Gradient attributions: vanilla, DeconvNet, guided backprop, SmoothGrad, integrated gradients.

All take a pixel batch ``N x 3 x H x W`` in [0, 1] and one target per image (a class, or a :class:`Unit` of any
layer) and return raw attributions ``N x 3 x H x W`` with respect to the pixels (the model normalises inside).
:func:`~convlens.attribute.to_map` collapses them to ``N x H x W`` maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.taps import RuleReport
from ..models.model import Model
from ._common import TargetLike, check_batch, chunks, input_gradient, resolve_targets, take, tile

__all__ = ["deconvnet", "guided_backprop", "guided_units", "integrated_gradients", "smoothgrad", "vanilla_gradient"]


def vanilla_gradient(model: Model, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
    """Gradient of the unnormalised class score (or unit activation) w.r.t. the pixels (Simonyan et al. 2014).

    Returns ``(N, 3, H, W)``; its max of absolute values over colour channels is the paper's saliency map.
    ``target=None`` uses each image's predicted class. One forward and one backward pass.
    """
    x = check_batch(x)
    return input_gradient(model, x, resolve_targets(model, x, target))[0]


def guided_backprop(model: Model, x: torch.Tensor, target: TargetLike = None, *,
                    report: RuleReport | None = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): at every rectifier only positive gradient passes, and
    only where the forward input passed -- for ReLU, ReLU6, hardtanh exactly the paper's rule; for SiLU, GELU,
    Hardswish, Mish, the leaky and exponential units, Softplus and Hardsigmoid the positive part of the local
    slope times the positive part of the incoming gradient (see :mod:`convlens.core.taps`). Modules or
    functional, in-place or not, timm's own activation layers included.

    ``target`` may be a class per image or a :class:`Unit` -- a channel or one neuron of any layer, whose
    gradient is set to one and everything else to zero. Returns ``(N, 3, H, W)``. ``report`` (a
    :class:`~convlens.core.taps.RuleReport`) receives the number of rectifier calls changed; a network in which
    none was changed raises :class:`UserError` rather than return the plain gradient.
    """
    x = check_batch(x)
    return input_gradient(model, x, resolve_targets(model, x, target), rule="guided", report=report)[0]


def deconvnet(model: Model, x: torch.Tensor, target: TargetLike = None, *,
              report: RuleReport | None = None) -> torch.Tensor:
    """DeconvNet (Zeiler & Fergus 2014): rectifiers pass the positive part of the incoming gradient (times the
    slope of their passing part), whatever their forward input was. Targets and ``report`` as in
    :func:`guided_backprop`. Returns ``(N, 3, H, W)``."""
    x = check_batch(x)
    return input_gradient(model, x, resolve_targets(model, x, target), rule="deconv", report=report)[0]


def smoothgrad(model: Model, x: torch.Tensor, target: TargetLike = None, *, samples: int = 25,
               noise: float = 0.15, rule: str = "gradient", squared: bool = False, batch_size: int = 32,
               generator: torch.Generator | None = None, report: RuleReport | None = None) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies of each image.

    The noise is Gaussian with ``sigma = noise * (max - min)`` of each image (the paper's 10-20 %); ``rule``
    smooths guided backprop or DeconvNet instead; ``squared`` averages squared gradients (SmoothGrad-SQ).
    Noisy copies of all images run together in batches of ``batch_size``. Returns ``(N, 3, H, W)``.
    """
    if samples < 1:
        raise ValueError(f"smoothgrad needs at least 1 sample, got {samples}")
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    n = x.shape[0]
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp(min=1e-8).view(n, 1, 1, 1, 1)
    eps = torch.randn((samples, *x.shape), generator=generator, device="cpu").to(x.device, x.dtype)
    noisy = (x.unsqueeze(0) + noise * span.transpose(0, 1) * eps).flatten(0, 1)  # sample-major: (S*N, 3, H, W)
    tt = tile(t, samples)
    total = torch.zeros_like(x)
    for sl in chunks(noisy.shape[0], batch_size):
        g = input_gradient(model, noisy[sl], take(tt, sl), rule=rule, report=report)[0]
        if squared:
            g = g * g
        idx = torch.arange(sl.start, sl.stop, device=x.device) % n
        total.index_add_(0, idx, g)
    return total / samples


def _path(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``alpha`` on [0, 1] and their weights for the path integral (Captum's conventions)."""
    if method == "gausslegendre":
        xs, ws = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * (xs + 1)), list(0.5 * ws)
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("riemann_trapezoid needs at least 2 steps")
        return list(np.linspace(0, 1, steps)), [0.5 / (steps - 1)] + [1 / (steps - 1)] * (steps - 2) + [
            0.5 / (steps - 1)]
    if method in ("riemann_left", "riemann_right", "riemann_middle"):
        shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
        return [(i + shift) / steps for i in range(steps)], [1 / steps] * steps
    raise ValueError(f"method must be gausslegendre or riemann_{{left,right,middle,trapezoid}}, got {method!r}")


def integrated_gradients(model: Model, x: torch.Tensor, target: TargetLike = None, *,
                         baseline: torch.Tensor | float = 0.0, steps: int = 50, method: str = "gausslegendre",
                         batch_size: int = 64) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017): ``(x - baseline)`` times the gradient averaged along
    the straight path from ``baseline`` (default black) to ``x``.

    ``steps`` points by ``method`` (Gauss-Legendre by default, as Captum); all path points of all images run
    in batches of ``batch_size``. Returns ``(N, 3, H, W)``; its sum over pixels approximates
    ``score(x) - score(baseline)`` (completeness).
    """
    if steps < 1:
        raise ValueError(f"integrated gradients needs at least 1 step, got {steps}")
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    n = x.shape[0]
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    alphas, weights = _path(method, steps)
    a = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    points = (base.unsqueeze(0) + a * (x - base).unsqueeze(0)).flatten(0, 1)  # step-major: (S*N, 3, H, W)
    tt = tile(t, steps)
    grads = torch.empty_like(points)
    for sl in chunks(points.shape[0], batch_size):
        grads[sl] = input_gradient(model, points[sl], take(tt, sl))[0]
    total = (grads.view(steps, n, *x.shape[1:]) * w).sum(0)
    return total * (x - base)


def guided_units(model: Model, layer: str, pixels: torch.Tensor, channels: Sequence[int], ys: Sequence[int],
                 xs: Sequence[int], *, rule: str = "guided") -> torch.Tensor:
    """Guided-backprop image (Springenberg et al. 2015) of one unit per image, all in ONE forward/backward pass:
    ``d act[b, c_b, y_b, x_b] / d pixels[b]``.

    ``pixels`` is ``(B, 3, H, W)`` (repeat a photo to ask for several of its units); images of a batch are
    independent in eval mode, so the summed objective gives each image its own unit's gradient. The one call behind
    ``saliency --unit``, ``top-patches --guided``, the microscope and the tour. Returns ``(B, 3, H, W)``.

    When ``layer`` ends in a rectifier (a ReLU6 output, a Conv-BN-ReLU block) the gradient is taken of the unit's
    pre-activation, the input of that last rectifier: a ReLU6 unit saturated at 6 (the typical top unit) has zero
    derivative through its own clamp, which used to make every guided tile blank grey. ``rule="gradient"`` gives
    the plain gradient of the same unit (whether the unit responds to its pixels at all).
    """
    from ..core.taps import Tap, backward_rule
    from ..read.scan import last_rectifier

    x = pixels.detach().clone().to(model.device).requires_grad_(True)
    b = torch.arange(len(channels))
    rect = last_rectifier(model, layer)
    pre: list[torch.Tensor] = []
    handle = None
    if rect is not None:
        handle = rect.register_forward_pre_hook(lambda m, a: pre.append(a[0].clone()) if not pre else None)
    try:
        with torch.enable_grad(), backward_rule(rule, model, strict=False), \
                Tap(model, layer, stop=True) as tap:
            tap.run(x)
            a = pre[0] if pre and pre[0].shape == tap.outputs[layer].shape else tap.outputs[layer]
            if a.dim() == 2:
                a = a[:, :, None, None]
            sel = a[b, torch.as_tensor(list(channels)), torch.as_tensor(list(ys)), torch.as_tensor(list(xs))]
            (grad,) = torch.autograd.grad(sel.sum(), x)
    finally:
        if handle is not None:
            handle.remove()
    return grad.detach()
