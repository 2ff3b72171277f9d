"""What every attribution method shares: targets (a class per image, or a unit of a layer) and their scores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Union

import torch

from ..core.taps import RuleReport, Tap, backward_rule
from ..errors import UserError
from ..models.model import Model

__all__ = ["Unit", "TargetLike", "resolve_targets", "scores", "to_map", "check_batch"]


@dataclass(frozen=True)
class Unit:
    """An intermediate unit as attribution target: channel ``channel`` of ``layer``, or one neuron of it.

    With ``y``/``x`` the objective is that neuron's activation (the paper's "set the gradient there to zero
    except one 1"); without, it is the channel's mean activation. For a flat layer (``N x C``) only ``channel``
    is used.
    """

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def __str__(self) -> str:
        pos = f":{self.y}:{self.x}" if self.y is not None else ""
        return f"{self.layer}:{self.channel}{pos}"

    @classmethod
    def parse(cls, text: str) -> Unit:
        """``"blocks.3:17"`` (a channel) or ``"blocks.3:17:5:9"`` (the neuron at y=5, x=9)."""
        parts = text.rsplit(":", 3) if text.count(":") >= 3 else text.rsplit(":", 1)
        try:
            if len(parts) == 4:
                return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))
            if len(parts) == 2:
                return cls(parts[0], int(parts[1]))
        except ValueError:
            pass
        raise UserError(f"cannot read unit {text!r}: expected LAYER:CHANNEL or LAYER:CHANNEL:Y:X")


TargetLike = Union[int, Sequence[int], torch.Tensor, Unit, None]


def check_batch(x: torch.Tensor) -> torch.Tensor:
    """Validate a pixel batch ``N x 3 x H x W`` (a single ``3 x H x W`` image is promoted to a batch of one)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a float tensor N x 3 x H x W in [0, 1], got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a pixel batch N x 3 x H x W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [0, 1], got {x.dtype}")
    return x


def resolve_targets(model: Model, x: torch.Tensor, target: TargetLike) -> torch.Tensor | Unit:
    """Class indices ``(N,)`` (``None`` means each image's predicted class), or the :class:`Unit` unchanged."""
    if isinstance(target, Unit):
        _check_unit(model, target)
        return target
    n = x.shape[0]
    if target is None:
        with torch.no_grad():
            return model(x).argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).flatten()
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"expected one target per image ({n}), got {t.numel()}")
    k = model.num_classes
    if k and ((t < 0) | (t >= k)).any():
        bad = int(t[(t < 0) | (t >= k)][0])
        raise UserError(f"class index {bad} out of range: this model has classes 0-{k - 1}")
    return t


def _check_unit(model: Model, unit: Unit) -> None:
    info = model.layers[unit.layer]  # unknown layer -> UserError with the closest names
    if not 0 <= unit.channel < info.channels:
        raise UserError(f"channel {unit.channel} out of range: {unit.layer} has channels 0-{info.channels - 1}")
    if unit.y is not None and info.spatial:
        h, w = info.shape[1], info.shape[2]
        if not (0 <= unit.y < h and 0 <= (unit.x or 0) < w):
            raise UserError(f"position ({unit.y}, {unit.x}) out of range: {unit.layer} is {h}x{w} "
                            f"(at the model's input size)")


def scores(model: Model, x: torch.Tensor, target: torch.Tensor | Unit) -> torch.Tensor:
    """The objective per image ``(N,)``: the unnormalised class score (logit), or the unit's activation.

    A unit's forward pass stops at its layer, so the rest of the network is never run.
    """
    if isinstance(target, Unit):
        with Tap(model, target.layer, stop=True) as tap:
            tap.run(x)
            a = tap.outputs[target.layer]
        if a.dim() == 2:
            return a[:, target.channel]
        if target.y is None:
            return a[:, target.channel].flatten(1).mean(1)
        return a[:, target.channel, target.y, target.x]
    logits = model(x)
    return logits.gather(1, target.view(-1, 1).to(logits.device))[:, 0]


def rule_context(rule: str, model: Model | None = None, *, strict: bool = True) -> contextlib.AbstractContextManager:
    """The backward-rule context (a no-op for the plain gradient, so vanilla pays no interception cost)."""
    return contextlib.nullcontext() if rule == "gradient" else backward_rule(rule, model, strict=strict)


def input_gradient(model: Model, x: torch.Tensor, target: torch.Tensor | Unit, *, rule: str = "gradient",
                   create_graph: bool = False, report: RuleReport | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``d objective / d pixels`` ``(N, 3, H, W)`` under ``rule``, and the objective values ``(N,)``.

    Under ``guided`` / ``deconv`` a class score whose pass changed no rectifier raises :class:`UserError` (a
    unit below every rectifier is exempt: there the rule's answer is the gradient); ``report`` (if given)
    accumulates how many rectifier calls the rule changed."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), rule_context(rule, model, strict=not isinstance(target, Unit)) as ctx:
        s = scores(model, xg, target)
        (g,) = torch.autograd.grad(s.sum(), xg, create_graph=create_graph)
    if report is not None and ctx is not None:
        report.merge(ctx.report)
    return g, s.detach()


def to_map(attribution: torch.Tensor, reduce: str = "maxabs") -> torch.Tensor:
    """Collapse ``(N, 3, H, W)`` attributions to maps ``(N, H, W)``: ``maxabs`` (Simonyan et al. 2014),
    ``abssum``, ``sum`` or ``positive`` (sum, clipped at 0)."""
    if attribution.dim() == 3:
        return attribution
    if reduce == "maxabs":
        return attribution.abs().amax(1)
    if reduce == "abssum":
        return attribution.abs().sum(1)
    if reduce == "sum":
        return attribution.sum(1)
    if reduce == "positive":
        return attribution.sum(1).clamp(min=0)
    raise ValueError(f"reduce must be maxabs, abssum, sum or positive, got {reduce!r}")


def chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))
