"""Gradient attacks in pixel space: FGSM, iterative FGSM (BIM) and PGD with a random start, L-inf or L2.

Each attack is one tight loop: a forward and backward pass on the images that are not yet fooled, a signed
(L-inf) or normalised (L2) step, and :func:`~convlens.adversarial.ball.project` back onto the eps-ball and the
[0, 1] box. An image stops moving at the first step at which it is fooled (``early_stop``), which saves the work
of the remaining steps and never turns a success back into a failure. :func:`evaluate_attack` runs an attack over
many images and reports what the attack libraries report: clean and robust accuracy, success rate (also after an
8-bit PNG round trip), mean norms and time per image, optionally the transfer rate to a second network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.model import Model
from .ball import check_norm, norms, project, quantize

__all__ = [
    "ATTACKS",
    "AttackReport",
    "TransferReport",
    "attack",
    "evaluate_attack",
    "fgsm",
    "ifgsm",
    "pgd",
    "transfer",
]


def _loss_grad(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, gradient)`` of the attack loss: CE to raise (untargeted) or the negative CE (targeted)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        if targeted:
            loss = -loss
        (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad


def _step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return alpha * grad.sign()
    n = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
    return alpha * grad / n


def _reached(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    shape, dev = x.shape, x.device
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, dtype=x.dtype).to(dev) * 2 - 1
        return project(x + eps * noise, x, eps, norm)
    direction = torch.randn(shape, generator=generator, dtype=x.dtype).to(dev)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    radius = torch.rand(shape[0], generator=generator, dtype=x.dtype).to(dev).view(-1, 1, 1, 1)
    return project(x + eps * radius * direction, x, eps, norm)


def _iterate(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
             eps: float | None, alpha: float, steps: int, norm: str, targeted: bool, start: torch.Tensor,
             early_stop: bool, reached: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             record: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
             final_check: bool = False) -> torch.Tensor:
    """The one iterative attack loop (I-FGSM, PGD and :func:`~convlens.adversarial.fool` are settings of it).

    Each step computes the attack loss's gradient on the still-active images, drops those that ``reached`` their
    goal (default: misclassified, or classified as the target when ``targeted``) when ``early_stop``, and moves
    the rest by ``alpha`` projected onto the eps-ball (``eps=None``: only the [0, 1] box). ``record(step,
    active, logits)`` sees every evaluation; ``final_check`` evaluates once more after the last step.
    """
    goal = reached or (lambda logits, ya: _reached(logits, ya, targeted))
    adv = start.clone()
    active = torch.arange(x.shape[0], device=x.device)
    for step in range(steps):
        if active.numel() == 0:
            break
        xa, x0, ya = adv[active], x[active], y[active]
        logits, grad = _loss_grad(model, xa, ya, targeted)
        if record is not None:
            record(step, active, logits)
        if early_stop:
            keep = ~goal(logits, ya)
            active, xa, x0, grad = active[keep], xa[keep], x0[keep], grad[keep]
            if active.numel() == 0:
                break
        adv[active] = project(xa + _step(grad, alpha, norm), x0, eps, norm)
    else:
        if final_check and active.numel() and record is not None:
            with torch.no_grad():
                record(steps, active, model(adv[active]))
    return adv


def _check(x: torch.Tensor, y: torch.Tensor | int, eps: float, steps: int = 1) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"expected pixels in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    if eps <= 0:
        raise UserError(f"eps must be positive, got {eps}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if isinstance(y, int):
        y = torch.full((x.shape[0],), y, dtype=torch.long)
    y = torch.as_tensor(y, dtype=torch.long).to(x.device)
    if y.shape != (x.shape[0],):
        raise ValueError(f"expected {x.shape[0]} labels, got shape {tuple(y.shape)}")
    return y


def fgsm(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor | int, *,
         eps: float = 8 / 255, norm: str = "linf", targeted: bool = False) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow, Shlens & Szegedy 2015): one step ``x + eps * sign(grad)``.

    ``y`` holds the true labels (untargeted: move away from them) or the target classes (``targeted``: move
    towards them, ``x - eps * sign(grad CE(target))``). With ``norm="l2"`` the step is ``eps * grad / ||grad||``
    (the fast gradient method). Returns the adversarial pixel batch ``Nx3xHxW``, inside the eps-ball and [0, 1].
    """
    y = _check(x, y, eps)
    check_norm(norm)
    _, grad = _loss_grad(model, x, y, targeted)
    return project(x + _step(grad, eps, norm), x, eps, norm)


def ifgsm(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor | int, *,
          eps: float = 8 / 255, alpha: float | None = None, steps: int = 10, norm: str = "linf",
          targeted: bool = False, early_stop: bool = True) -> torch.Tensor:
    """Iterative FGSM / basic iterative method (Kurakin, Goodfellow & Bengio 2017), starting from the clean image.

    ``steps`` steps of size ``alpha`` (default ``eps / 4``), each projected onto the eps-ball and [0, 1]. With
    ``early_stop`` an image stops at the first step at which it is misclassified (targeted: classified as its
    target). Returns the adversarial batch.
    """
    y = _check(x, y, eps, steps)
    check_norm(norm)
    return _iterate(model, x, y, eps=eps, alpha=alpha or eps / 4, steps=steps, norm=norm, targeted=targeted,
                    start=x.detach().clone(), early_stop=early_stop)


def pgd(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor | int, *,
        eps: float = 8 / 255, alpha: float | None = None, steps: int = 10, norm: str = "linf",
        targeted: bool = False, early_stop: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent with a uniform random start in the eps-ball (Madry et al. 2018).

    Like :func:`ifgsm` but starting from a random point of the ball (``generator`` makes it reproducible);
    ``alpha`` defaults to ``eps / 4``. Returns the adversarial batch.
    """
    y = _check(x, y, eps, steps)
    check_norm(norm)
    start = _random_start(x.detach(), eps, norm, generator)
    return _iterate(model, x, y, eps=eps, alpha=alpha or eps / 4, steps=steps, norm=norm, targeted=targeted,
                    start=start, early_stop=early_stop)


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {"fgsm": fgsm, "ifgsm": ifgsm, "pgd": pgd}


def attack(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor | int, *,
           method: str = "pgd", eps: float = 8 / 255, alpha: float | None = None, steps: int = 10,
           norm: str = "linf", targeted: bool = False, generator: torch.Generator | None = None,
           early_stop: bool = True) -> torch.Tensor:
    """Run one of :data:`ATTACKS` (``fgsm``, ``ifgsm``, ``pgd``) by name with the shared options."""
    if method not in ATTACKS:
        raise UserError(f"unknown attack {method!r}; choose one of {', '.join(ATTACKS)}")
    if method == "fgsm":
        return fgsm(model, x, y, eps=eps, norm=norm, targeted=targeted)
    if method == "ifgsm":
        return ifgsm(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=targeted,
                     early_stop=early_stop)
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=targeted,
               early_stop=early_stop, generator=generator)


@dataclass
class TransferReport:
    """How many adversarial images made against one network also fool another (Szegedy et al. 2014).

    ``transfer_rate``: among images both networks classify correctly and the attack fooled on the source,
    the fraction the second network also gets wrong (targeted: classifies as the target). ``clean_accuracy`` and
    ``robust_accuracy`` are the second network's on the clean and adversarial images.
    """

    model: str
    n: int
    clean_accuracy: float | None
    robust_accuracy: float | None
    transfer_rate: float | None


@dataclass
class AttackReport:
    """The numbers of one attack over many images.

    ``clean_accuracy``/``robust_accuracy``: top-1 accuracy on the clean / adversarial images (``None`` when the
    labels are the model's own predictions). ``success_rate``: among correctly classified images, the fraction
    the attack fooled (targeted: sent to the target); ``success_rate_after_png`` the same after saving the
    adversarial images as 8-bit PNGs and reading them back. ``mean_linf``/``mean_l2``: mean perturbation size in
    pixel units over the attacked images. ``seconds_per_image``: attack time only.
    Per-image tensors: ``adversarial`` ``(N,3,H,W)``, ``clean_pred``, ``adv_pred``, ``png_pred``, ``labels`` ``(N,)``;
    ``clean_prob`` / ``adv_prob``: the model's probability of its own answer on the clean / adversarial image;
    ``attacked``: the images that were attacked (correct, and not already of the target class); ``fooled``: those
    of them the attack fooled (targeted: sent to the target).
    """

    n: int
    clean_accuracy: float | None
    robust_accuracy: float | None
    success_rate: float | None
    success_rate_after_png: float | None
    mean_linf: float
    mean_l2: float
    seconds_per_image: float
    adversarial: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    clean_pred: torch.Tensor = field(repr=False)
    adv_pred: torch.Tensor = field(repr=False)
    png_pred: torch.Tensor = field(repr=False)
    clean_prob: torch.Tensor = field(repr=False)
    adv_prob: torch.Tensor = field(repr=False)
    attacked: torch.Tensor = field(repr=False)
    fooled: torch.Tensor = field(repr=False)
    targets: torch.Tensor | None = field(default=None, repr=False)
    transfer: TransferReport | None = None

    def summary(self) -> dict[str, float | int | None]:
        """The numbers ``result.json`` holds under ``attack``."""
        return {k: getattr(self, k) for k in ("n", "clean_accuracy", "robust_accuracy", "success_rate",
                                               "success_rate_after_png", "mean_linf", "mean_l2",
                                               "seconds_per_image")}


@torch.no_grad()
def _predict(model: Model | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def _classify(model: Model, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's answers ``(N,)`` and its probability of each."""
    prob, pred = torch.cat([model(x[i:i + batch_size]).softmax(1) for i in range(0, x.shape[0], batch_size)]).max(1)
    return pred, prob


def _rate(hit: torch.Tensor, among: torch.Tensor) -> float | None:
    n = int(among.sum())
    return float((hit & among).sum()) / n if n else None


def evaluate_attack(model: Model, x: torch.Tensor, labels: torch.Tensor | None = None, *, method: str = "pgd",
                    eps: float = 8 / 255, alpha: float | None = None, steps: int = 10, norm: str = "linf",
                    target: int | None = None, batch_size: int = 32, generator: torch.Generator | None = None,
                    early_stop: bool = True, transfer_to: Model | None = None,
                    progress: Callable[[int], None] | None = None) -> AttackReport:
    """Attack every image of a pixel batch and measure the attack the way torchattacks / ART / Foolbox do.

    ``labels`` are the true classes ``(N,)``; without them the model's clean predictions stand in (and the
    accuracies are ``None``). ``target`` turns the attack into a targeted one towards that class. Only correctly
    classified images are attacked (the others count as neither success nor failure). ``transfer_to`` evaluates
    the same adversarial images on a second network (resized to its input size). ``progress(k)`` is called after
    each batch with the number of images done. Returns an :class:`AttackReport`.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a pixel batch Nx3xHxW, got shape {tuple(x.shape)}")
    clean_pred, clean_prob = _classify(model, x, batch_size)
    have_labels = labels is not None
    y = torch.as_tensor(labels, dtype=torch.long).to(x.device) if have_labels else clean_pred.clone()
    correct = clean_pred == y
    targeted = target is not None
    goal = torch.full_like(y, int(target)) if targeted else y  # type: ignore[arg-type]
    if targeted:
        correct &= y != goal  # an image already of the target class cannot be "sent" there
    adv = x.detach().clone()
    idx = correct.nonzero().flatten()
    t0 = time.perf_counter()
    for i in range(0, idx.numel(), batch_size):
        sel = idx[i:i + batch_size]
        adv[sel] = attack(model, x[sel], goal[sel], method=method, eps=eps, alpha=alpha, steps=steps, norm=norm,
                          targeted=targeted, generator=generator, early_stop=early_stop)
        if progress is not None:
            progress(int(sel.numel()))
    seconds = time.perf_counter() - t0
    adv_pred, adv_prob = _classify(model, adv, batch_size)
    png_pred = _predict(model, quantize(adv), batch_size)

    def fooled(pred: torch.Tensor) -> torch.Tensor:
        return pred == goal if targeted else pred != y

    linf, l2 = norms(adv[idx], x[idx]) if idx.numel() else (torch.zeros(1), torch.zeros(1))
    report = AttackReport(
        n=int(x.shape[0]),
        clean_accuracy=float((clean_pred == y).float().mean()) if have_labels else None,
        robust_accuracy=float((adv_pred == y).float().mean()) if have_labels else None,
        success_rate=_rate(fooled(adv_pred), correct),
        success_rate_after_png=_rate(fooled(png_pred), correct),
        mean_linf=float(linf.mean()), mean_l2=float(l2.mean()),
        seconds_per_image=seconds / max(1, idx.numel()),
        adversarial=adv, labels=y, clean_pred=clean_pred, adv_pred=adv_pred, png_pred=png_pred,
        clean_prob=clean_prob, adv_prob=adv_prob, attacked=correct, fooled=fooled(adv_pred) & correct,
        targets=goal if targeted else None)
    if transfer_to is not None:
        report.transfer = transfer(transfer_to, x, adv, y, fooled_on_source=fooled(adv_pred) & correct,
                                   target=target, batch_size=batch_size, have_labels=have_labels)
    return report


def transfer(model: Model, x: torch.Tensor, adv: torch.Tensor, labels: torch.Tensor, *,
             fooled_on_source: torch.Tensor, target: int | None = None, batch_size: int = 32,
             have_labels: bool = True) -> TransferReport:
    """Evaluate adversarial images made against one network on ``model`` (Szegedy et al. 2014; Papernot 2016).

    Images are resized to ``model``'s input size (the clean ones the same way, so both see the same pipeline).
    Returns a :class:`TransferReport`; ``transfer_rate`` is measured among images that ``model`` classifies
    correctly when clean and that fooled the source network.
    """
    size = model.preprocess.size
    xs = model.preprocess.resize_tensor(x) if tuple(x.shape[-2:]) != tuple(size) else x
    advs = model.preprocess.resize_tensor(adv) if tuple(adv.shape[-2:]) != tuple(size) else adv
    clean = _predict(model, xs.to(model.device), batch_size).to(labels.device)
    advp = _predict(model, advs.to(model.device), batch_size).to(labels.device)
    ok = (clean == labels) & fooled_on_source
    hit = advp == target if target is not None else advp != labels
    return TransferReport(model=model.name, n=int(x.shape[0]),
                          clean_accuracy=float((clean == labels).float().mean()) if have_labels else None,
                          robust_accuracy=float((advp == labels).float().mean()) if have_labels else None,
                          transfer_rate=_rate(hit, ok))
