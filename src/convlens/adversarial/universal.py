"""Universal adversarial perturbations: one image-agnostic pattern that fools a network on most photos.

Moosavi-Dezfooli et al. (2017) found a single small pattern ``v`` with ``||v|| <= eps`` such that
``f(x + v) != f(x)`` for most natural images ``x``, building it one image at a time with DeepFool. We build it
with the batched stochastic-gradient variant (Shafahi et al. 2020, "Universal adversarial training"): sign-gradient
ascent on the mean clipped cross-entropy of whole mini-batches with respect to ``v``, projected onto the eps-ball
after every step. A mini-batch of 32 images costs one forward and one backward pass, instead of DeepFool's many
per-class gradients per image. The fooling rate is always measured on images the pattern was not built on.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.model import Model
from .ball import check_norm, project

__all__ = ["UniversalResult", "check_disjoint", "fooling_rate", "universal_perturbation"]


@dataclass
class UniversalResult:
    """A universal perturbation and how it was found.

    ``perturbation`` ``(3,H,W)`` in pixel units, ``||v|| <= eps``; ``train_fooling_rate``: the fraction of the
    construction images whose top class ``x + v`` changes (``None`` if not measured); ``history``: that rate on
    each mini-batch as it was seen; ``epochs``, ``steps`` and ``seconds`` of construction.
    """

    perturbation: torch.Tensor = field(repr=False)
    eps: float
    norm: str
    train_images: int
    train_fooling_rate: float | None
    epochs: int
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list, repr=False)


def _apply(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (x + v).clamp(0, 1)


@torch.no_grad()
def _predict(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int,
             v: torch.Tensor | None = None) -> torch.Tensor:
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        out.append(model(_apply(xb, v) if v is not None else xb).argmax(1))
    return torch.cat(out)


def fooling_rate(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor, *,
                 batch_size: int = 32) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The fraction of images whose top class changes when ``v`` is added (Moosavi-Dezfooli et al. 2017).

    ``x`` ``(N,3,H,W)`` pixels, ``v`` ``(3,H,W)``; ``x + v`` is clipped to [0, 1]. Returns
    ``(rate, clean_pred (N,), perturbed_pred (N,))``.
    """
    clean = _predict(model, x, batch_size)
    pert = _predict(model, x, batch_size, v.to(x.device))
    return float((clean != pert).float().mean()), clean, pert


def universal_perturbation(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                           eps: float = 10 / 255, norm: str = "linf", epochs: int = 10, batch_size: int = 32,
                           step: float | None = None, clip_loss: float | None = None, dominant: bool = False,
                           target_rate: float | None = None,
                           generator: torch.Generator | None = None,
                           progress: Callable[[int], None] | None = None) -> UniversalResult:
    """Build one perturbation ``v`` (``||v|| <= eps``) that changes the top class of as many images as it can.

    Args:
        model: the network; ``x`` the construction images ``(N,3,H,W)`` in [0, 1] (never the held-out ones).
        eps: the radius in pixel units (``10/255`` as in the paper); ``norm`` ``linf`` or ``l2``.
        epochs: passes over ``x`` (shuffled with ``generator``); ``batch_size`` images per step.
        step: the first step size (default ``eps / 2``), decayed to ``eps / 100`` along a cosine over all steps.
        clip_loss: if given, each image's cross-entropy is clipped at this value so images already fooled do not
            dominate (Shafahi et al. 2020); by default the plain mean cross-entropy is ascended, which generalised
            better to held-out photos here (0.64 vs 0.45 held-out fooling after 6 epochs on the shared photos).
        dominant: after the first epoch, aim every image at the class the pattern already sends most images to
            (universal perturbations tend to develop such a dominant label; Moosavi-Dezfooli et al. 2017).
        target_rate: stop early once the fooling rate over the last epoch's batches reaches this.

    The labels are the model's own clean predictions. Returns a :class:`UniversalResult`; measure the fooling rate
    on other images with :func:`fooling_rate`.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
    if eps <= 0:
        raise UserError(f"eps must be positive, got {eps}")
    if epochs < 1 or batch_size < 1:
        raise UserError("epochs and batch_size must be at least 1")
    check_norm(norm)
    t0 = time.perf_counter()
    labels = _predict(model, x, batch_size)
    n = x.shape[0]
    v = torch.zeros_like(x[0:1])
    lr0 = step if step is not None else eps / 2
    total = epochs * -(-n // batch_size)
    history: list[float] = []
    steps = 0
    epoch = 0
    zero = torch.zeros_like(x[0:1])
    target: int | None = None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator).to(x.device)
        fooled_epoch = 0
        seen = []
        for i in range(0, n, batch_size):
            sel = order[i:i + batch_size]
            xb, yb = x[sel], labels[sel]
            lr = eps / 100 + (lr0 - eps / 100) * 0.5 * (1 + math.cos(math.pi * steps / total))
            vv = v.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = model(_apply(xb, vv)).float()
                if target is None:
                    loss = F.cross_entropy(logits, yb, reduction="none")
                    loss = (loss if clip_loss is None else loss.clamp(max=clip_loss)).mean()
                else:  # pull towards the dominant class (descend its cross-entropy, no push once it is won)
                    tb = torch.full_like(yb, target)
                    loss = -F.cross_entropy(logits, tb, reduction="none").clamp(min=0.05).mean()
                (g,) = torch.autograd.grad(loss, vv)
            seen.append(logits.detach().argmax(1))
            fooled = int((seen[-1] != yb).sum())
            fooled_epoch += fooled
            history.append(fooled / sel.numel())
            if norm == "linf":
                v = v + lr * g.sign()
            else:
                v = v + lr * g / g.norm().clamp_min(1e-12)
            v = project(v, zero, eps, norm, box=False)  # the pattern may be negative; x + v is clipped
            steps += 1
            if progress is not None:
                progress(int(sel.numel()))
        if dominant and target is None:
            target = int(torch.cat(seen).mode().values)
        if target_rate is not None and fooled_epoch / n >= target_rate:
            break
    v = v[0].detach()
    rate = float((_predict(model, x, batch_size, v) != labels).float().mean())
    seconds = time.perf_counter() - t0
    return UniversalResult(perturbation=v, eps=eps, norm=norm, train_images=n, train_fooling_rate=rate,
                           epochs=epoch, steps=steps, seconds=seconds, history=history)


def _digest(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def check_disjoint(train: torch.Tensor, holdout: torch.Tensor) -> None:
    """Raise :class:`UserError` if any held-out image is pixel-for-pixel one of the construction images."""
    seen = {_digest(im) for im in train}
    dup = [i for i, im in enumerate(holdout) if _digest(im) in seen]
    if dup:
        raise UserError(f"{len(dup)} held-out image(s) are also construction images (first: #{dup[0]}); the "
                        f"fooling rate must be measured on images the perturbation was not built on")
