"""The one loop behind all pixel optimisation: class / unit visualization, DeepDream, inversion, texture, style.

``optimize(model, objective, param, transforms=..., regularizers=..., steps=..., optimizer=...)`` repeats:
render the image from its parametrisation, draw ``copies`` randomly transformed versions, run the network as far
as the objective needs (a :class:`~convlens.core.taps.Tap` stops early when no logits are asked for), score,
back-propagate to the parameters and step; then the parametrisation's own clamp and the post-step operations
(blur, clipping) run. Octaves (coarse-to-fine, DeepDream) resize the parametrisation between rounds of steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from typing_extensions import Self

from ..models.model import Model
from .objectives import Objective, Recorded
from .params import ImageParam, PixelImage
from .taps import Tap
from .transforms import PostStep, Transform

__all__ = ["optimize", "OptimizeResult", "L1SGD", "OPTIMIZERS", "evaluate"]

OPTIMIZERS = ("adam", "sgd", "sgd-l1", "lbfgs")
_DEFAULT_LR = {"adam": 0.05, "sgd": 1.0, "sgd-l1": 1.5 / 255, "lbfgs": 1.0}


@dataclass
class OptimizeResult:
    """What :func:`optimize` returns.

    Attributes:
        images: the final pixel images ``(N, 3, H, W)`` in [0, 1] (detached, on the model's device).
        losses: the minimised loss (``-objective`` when maximising, plus regularisers) at every step.
        values: the objective alone (no regularisers) per image ``(N,)`` on the final, untransformed images.
        seconds: wall time of the loop.
        steps: optimiser steps taken (over all octaves).
        snapshots: images every ``snapshot_every`` steps, on the CPU (for an animation).
        objective: ``repr`` of the objective (and regularisers), for the record.
    """

    images: torch.Tensor
    losses: list[float]
    values: torch.Tensor
    seconds: float
    steps: int
    snapshots: list[torch.Tensor] = field(default_factory=list)
    objective: str = ""

    @property
    def image(self) -> torch.Tensor:
        """The first image ``(3, H, W)``."""
        return self.images[0]


class L1SGD(torch.optim.Optimizer):
    """Gradient descent with L1-normalised steps: ``x -= lr * g / mean|g|`` per image (DeepDream's update,
    Mordvintsev et al. 2015: the step size is in pixel units, whatever the gradient's scale)."""

    def __init__(self, params: object, lr: float = 1.5 / 255) -> None:
        super().__init__(params, {"lr": lr})  # type: ignore[arg-type]

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._apply()
        return loss

    def _apply(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                dims = tuple(range(1, g.dim())) if g.dim() > 1 else (0,)
                scale = g.abs().mean(dim=dims, keepdim=True).clamp_min(1e-12)
                p.sub_(group["lr"] * g / scale)


_LBFGS_CHUNK = 10


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-l1":
        return L1SGD(params, lr=lr)
    if name == "lbfgs":
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe")
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _as_objective(regularizers: Objective | Sequence[Objective] | None) -> Objective | None:
    if regularizers is None:
        return None
    if isinstance(regularizers, Objective):
        return regularizers
    regs = list(regularizers)
    return sum(regs[1:], regs[0]) if regs else None  # type: ignore[return-value]


class _Scorer:
    """Runs the network on transformed copies and scores them; one tap for the whole optimisation."""

    def __init__(self, model: Model | nn.Module, objective: Objective, reg: Objective | None) -> None:
        self.model = model
        self.objective = objective
        self.reg = reg
        layers = tuple(dict.fromkeys(objective.layers + (reg.layers if reg else ())))
        self.logits = objective.uses_logits or bool(reg and reg.uses_logits)
        self.layers = layers
        self.tap = Tap(model, layers, stop=not self.logits) if layers else None

    def __enter__(self) -> Self:
        if self.tap is not None:
            self.tap.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tap is not None:
            self.tap.__exit__(*exc)

    def _run(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if self.tap is None:
            return {}, self.model(x) if self.logits else None
        out = self.tap.run(x)
        return dict(self.tap.outputs), out

    def score(self, image: torch.Tensor, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Objective per image averaged over the views ``(N,)``, and the regulariser per image (or ``None``)."""
        n = image.shape[0]
        recs: list[Recorded] = []
        if len(views) > 1 and all(v.shape == views[0].shape for v in views):
            acts, logits = self._run(torch.cat(views))
            for k in range(len(views)):
                sl = slice(k * n, (k + 1) * n)
                recs.append(Recorded({name: a[sl] for name, a in acts.items()},
                                     None if logits is None else logits[sl], image))
        else:
            for v in views:
                acts, logits = self._run(v)
                recs.append(Recorded(acts, logits, image))
        value = sum(self.objective(r) for r in recs) / len(recs)
        reg = None
        if self.reg is not None:
            reg = sum(self.reg(r) for r in recs) / len(recs)
        return value, reg  # type: ignore[return-value]


def evaluate(model: Model | nn.Module, objective: Objective, images: torch.Tensor) -> torch.Tensor:
    """The objective per image ``(N,)`` for pixel images ``(N, 3, H, W)``, without gradients."""
    with torch.no_grad(), _Scorer(model, objective, None) as scorer:
        value, _ = scorer.score(images, [images])
    return value.detach()


def _device(model: Model | nn.Module) -> torch.device:
    if isinstance(model, Model):
        return model.device
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def optimize(model: Model | nn.Module, objective: Objective, param: ImageParam | None = None, *,
             transforms: Sequence[Transform] = (), regularizers: Objective | Sequence[Objective] | None = None,
             post: Sequence[PostStep] = (), steps: int = 256, optimizer: str = "adam", lr: float | None = None,
             lr_end: float | None = None, copies: int = 1, octaves: int = 1, octave_scale: float = 1.4, maximize: bool = True,
             generator: torch.Generator | None = None, seed: int = 0, progress: bool = False,
             snapshot_every: int = 0, callback: Callable[[int, torch.Tensor, float], None] | None = None,
             ) -> OptimizeResult:
    """Optimise an image (its parametrisation ``param``) to maximise (or minimise) ``objective``.

    The loop of Simonyan et al. 2014 (gradient ascent on the input), Yosinski et al. 2015 (with ``post``
    blur / decay / clipping), Mordvintsev et al. 2015 (DeepDream: ``optimizer="sgd-l1"``, jitter, octaves),
    Mahendran & Vedaldi 2015 (inversion, ``maximize=False``), Olah et al. 2017 (Fourier parametrisation with
    random transforms) and Gatys et al. 2015 (``optimizer="lbfgs"``).

    Args:
        model: a :class:`Model` (pixel-space input) or any ``nn.Module``.
        objective: what to push; see :mod:`convlens.core.objectives`.
        param: the image parametrisation (default: a mid-grey :class:`PixelImage` of the model's input size).
        transforms: differentiable transforms applied, in order, to each of ``copies`` views every step.
        regularizers: penalties on the image (always minimised), e.g. ``[0.05 * total_variation()]``.
        post: in-place operations on raw pixels after each step (needs a :class:`PixelImage`).
        steps: optimiser steps per octave.
        optimizer: ``adam``, ``sgd``, ``sgd-l1`` (DeepDream's normalised step) or ``lbfgs`` (deterministic
            objectives only: no random transforms).
        lr: step size (default 0.05 for Adam, 1.5/255 for ``sgd-l1``, 1 for L-BFGS and SGD).
        lr_end: if given, the step size decays geometrically from ``lr`` to ``lr_end`` over each octave's steps.
        copies: transformed views per step whose scores are averaged (transformation robustness).
        octaves: number of scales, coarse to fine; the image is ``octave_scale`` times larger at each, ending at
            the parametrisation's own size.
        maximize: ``True`` to maximise the objective, ``False`` to minimise it.
        generator / seed: randomness of the transforms (``seed`` used when no generator is given).
        progress: show a tqdm progress bar.
        snapshot_every: keep a CPU copy of the images every N steps (0: none).
        callback: ``callback(step, images, loss)`` after every step (e.g. to save what is finished).

    Returns:
        :class:`OptimizeResult` with the images, the per-step loss, the final objective value per image and the
        wall time. The model's weights are never changed and no hook is left behind.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if copies < 1 or octaves < 1:
        raise ValueError("copies and octaves must be >= 1")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    device = _device(model)
    if param is None:
        size = model.preprocess.size if isinstance(model, Model) else (224, 224)
        param = PixelImage(size=size)
    param = param.to(device)
    if post and not isinstance(param, PixelImage):
        raise ValueError("post-step operations (blur, clipping) need a PixelImage parametrisation")
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    lr = _DEFAULT_LR[optimizer] if lr is None else float(lr)
    if lr_end is not None and not 0 < lr_end <= lr:
        raise ValueError(f"lr_end must be in (0, lr={lr:g}], got {lr_end}")
    reg = _as_objective(regularizers)
    sign = -1.0 if maximize else 1.0

    final = param.size()
    sizes = [final] if octaves == 1 else [
        (max(8, round(final[0] / octave_scale ** (octaves - 1 - i))), max(8, round(final[1] / octave_scale ** (
            octaves - 1 - i)))) for i in range(octaves)]

    losses: list[float] = []
    snaps: list[torch.Tensor] = []
    total = steps * len(sizes)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="optimize", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    step_no = 0
    try:
        with _Scorer(model, objective, reg) as scorer:
            for size in sizes:
                if param.size() != tuple(size):
                    param.resize(size)
                    param = param.to(device)
                params = [p for p in param.parameters() if p.requires_grad]
                opt = _make_optimizer(optimizer, params, lr)
                done = 0
                while done < steps:
                    # L-BFGS runs several iterations per call so its line search reuses evaluations (a call of one
                    # iteration re-evaluates the starting point every time: twice the forward passes)
                    n = min(_LBFGS_CHUNK, steps - done) if optimizer == "lbfgs" else 1
                    if optimizer == "lbfgs":
                        opt.param_groups[0]["max_iter"] = n
                        opt.param_groups[0]["max_eval"] = n * 5 // 4 + 1
                    if lr_end is not None:
                        opt.param_groups[0]["lr"] = lr * (lr_end / lr) ** (done / max(1, steps - 1))
                    done += n
                    evals: list[float] = []  # the loss at every evaluation of this call

                    def closure(opt: torch.optim.Optimizer = opt, param: ImageParam = param,
                                evals: list[float] = evals) -> torch.Tensor:
                        opt.zero_grad(set_to_none=True)
                        image = param()
                        views = []
                        for _k in range(copies):
                            v = image
                            for t in transforms:
                                v = t(v, gen)
                            views.append(v)
                        value, penalty = scorer.score(image, views)
                        loss = sign * value.sum()
                        if penalty is not None:
                            loss = loss + penalty.sum()
                        loss.backward()
                        for group in opt.param_groups:  # L-BFGS views each gradient flat: channels_last
                            for p in group["params"]:    # gradients (some networks give them) need a copy
                                if p.grad is not None and not p.grad.is_contiguous():
                                    p.grad = p.grad.contiguous()
                        evals.append(float(loss.detach()))
                        return loss

                    good = [p.detach().clone() for p in params] if optimizer == "lbfgs" else []
                    opt.step(closure)  # type: ignore[arg-type]
                    if good and not all(bool(torch.isfinite(p).all()) for p in params):
                        # L-BFGS diverged (a line search that ran off to inf, then NaN, seen on tiny networks):
                        # keep the last finite image and end this scale there
                        with torch.no_grad():
                            for p, g in zip(params, good):
                                p.copy_(g)
                        break
                    loss_value = evals[-1]
                    if post:
                        pix: torch.Tensor = param.pixels  # type: ignore[union-attr,assignment]
                        for op in post:
                            op(pix.data, pix.grad, step_no)
                    param.after_step()
                    # one value per step; an L-BFGS call of n iterations gives the last n of its evaluations
                    losses += evals[-n:] if len(evals) >= n else evals + [loss_value] * (n - len(evals))
                    step_no += n
                    if snapshot_every and step_no // snapshot_every > (step_no - n) // snapshot_every:
                        with torch.no_grad():
                            snaps.append(param().detach().cpu().clone())
                    if callback is not None:
                        with torch.no_grad():
                            callback(step_no, param().detach(), loss_value)
                    if bar is not None:
                        bar.update(n)
                        if step_no % 10 < n:
                            bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        images = param().detach().clone()
    values = evaluate(model, objective, images)
    desc = repr(objective) if reg is None else f"{objective!r}; penalty {reg!r}"
    return OptimizeResult(images=images, losses=losses, values=values, seconds=seconds, steps=step_no,
                          snapshots=snaps, objective=desc)
