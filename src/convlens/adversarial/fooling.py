"""The lecture's fooling image: nudge a photo until the network calls it something else, and stop right there.

Szegedy et al. (2014) and Goodfellow et al. (2015) showed that an imperceptible change turns any photo into any
class. :func:`fool` starts from the image and ascends the target class's log-probability (its score minus the
log-sum-exp of all scores) with small signed steps, each projected onto the eps-ball and the [0, 1] box, and stops
each image at the first step at which the network predicts the target with the requested confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.objectives import Recorded, class_logprob
from ..errors import UserError
from ..models.model import Model, Prediction
from .attacks import _iterate
from .ball import check_norm, norms

__all__ = ["FoolResult", "fool"]


@dataclass
class FoolResult:
    """A batch of fooling images.

    ``adversarial`` ``(N,3,H,W)`` in [0, 1]; ``original``: the clean top class and its probability per image;
    ``target``: the target class and its probability on the fooled image; ``steps`` ``(N,)``: gradient steps taken
    before the target was first reached (``max_steps`` when it never was); ``success`` ``(N,)``; ``linf`` / ``l2``
    ``(N,)``: perturbation sizes in pixel units; ``history`` ``(steps+1, N)``: the target probability before each
    step (NaN after an image stopped).
    """

    adversarial: torch.Tensor = field(repr=False)
    original: list[Prediction]
    target: list[Prediction]
    steps: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    history: torch.Tensor = field(repr=False)

    def summary(self, i: int = 0) -> dict[str, object]:
        """The numbers ``result.json`` holds under ``fool`` for image ``i``."""
        o, t = self.original[i], self.target[i]
        return {"original": {"index": o.index, "label": o.label, "prob": o.prob},
                "target": {"index": t.index, "label": t.label, "prob": t.prob},
                "linf": float(self.linf[i]), "l2": float(self.l2[i]), "steps": int(self.steps[i]),
                "success": bool(self.success[i])}


def fool(model: Model, x: torch.Tensor, target: int | torch.Tensor, *, eps: float | None = 8 / 255,
         alpha: float = 0.5 / 255, max_steps: int = 100, confidence: float = 0.5,
         norm: str = "linf") -> FoolResult:
    """Make the network see ``target`` in each image with as small a change as the steps allow.

    Args:
        model: the network; ``x`` a pixel batch ``Nx3xHxW`` in [0, 1]; ``target`` a class index or ``(N,)``.
        eps: radius of the allowed change in pixel units (``None``: unbounded, only the [0, 1] box).
        alpha: step size (L-inf: per-pixel change per step; L2: the step's norm).
        max_steps: give up after this many steps.
        confidence: the target probability that counts as fooled (the target must also be the top class).

    An image stops at the *first* step at which it reaches the target, so its change is no larger than needed
    for that step size. Returns a :class:`FoolResult`.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
    check_norm(norm)
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1, got {confidence}")
    if max_steps < 0:
        raise UserError(f"max_steps must be >= 0, got {max_steps}")
    if eps is not None and eps <= 0:
        raise UserError(f"eps must be positive, got {eps}")
    n = x.shape[0]
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).expand(n).clone()
    x = x.detach()
    with torch.no_grad():
        p0 = model(x).float().softmax(1)
    original = [Prediction(int(i), model.label(int(i)), float(p0[k, i])) for k, i in enumerate(p0.argmax(1))]

    steps = torch.full((n,), max_steps, dtype=torch.long)
    success = torch.zeros(n, dtype=torch.bool)
    history = torch.full((max_steps + 1, n), float("nan"))

    def goal(logits: torch.Tensor, ta: torch.Tensor) -> torch.Tensor:
        logp = class_logprob(ta.tolist())(Recorded(logits=logits.float()))  # the core's objective
        return (logits.argmax(1) == ta) & (logp.exp() >= confidence)

    def record(step: int, active: torch.Tensor, logits: torch.Tensor) -> None:
        ta = t[active]
        logp = class_logprob(ta.tolist())(Recorded(logits=logits.float()))
        history[step, active.cpu()] = logp.exp().cpu()
        done = active[(logits.argmax(1) == ta) & (logp.exp() >= confidence)].cpu()
        steps[done] = step
        success[done] = True

    # ascending log p(target) is descending the targeted attack's cross-entropy: the attack loop, stopped at the goal
    adv = _iterate(model, x, t, eps=eps, alpha=alpha, steps=max_steps, norm=norm, targeted=True, start=x.clone(),
                   early_stop=True, reached=goal, record=record, final_check=True)
    with torch.no_grad():
        p1 = model(adv).float().softmax(1)
    targets = [Prediction(int(c), model.label(int(c)), float(p1[k, c])) for k, c in enumerate(t)]
    linf, l2 = norms(adv, x)
    return FoolResult(adversarial=adv, original=original, target=targets, steps=steps, success=success,
                      linf=linf.float(), l2=l2.float(), history=history[: int(steps.max()) + 1])
