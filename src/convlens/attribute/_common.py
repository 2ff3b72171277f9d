"""What every attribution method shares: targets and their scores.

A target says what is explained, per image of the batch: a class (an index or a name; ``None`` means the
predicted class), a list of classes (one per image), a :class:`Unit` of any layer (a channel or one neuron,
the same for all images, or a list of units, one per image: a different channel and position for each), or a
callable on the model's output -- an :class:`OutputScore` such as :func:`margin` or :func:`class_sum`, or any
``fn(output) -> (N,)`` that scores each image from its own output row. Anything else (a slice, a float, a
nested list, a dict) is one clear :class:`~convlens.UserError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..core.taps import RuleReport, Tap, backward_rule
from ..errors import UserError
from ..models.model import Model

__all__ = ["Unit", "OutputScore", "margin", "class_sum", "TargetLike", "Resolved", "resolve_targets", "scores",
           "take", "tile", "describe", "to_map", "check_batch"]


@dataclass(frozen=True)
class Unit:
    """An intermediate unit as attribution target: channel ``channel`` of ``layer``, or one neuron of it.

    With ``y``/``x`` the objective is that neuron's activation (the paper's "set the gradient there to zero
    except one 1"); without, it is the channel's mean activation. For a flat layer (``N x C``) only ``channel``
    is used. A list of units, one per image, gives each image its own channel and position.
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


class OutputScore:
    """A target computed from the model's output: ``fn(output) -> (N,)``, one score per image.

    ``fn`` must score each image from its own row of the output alone (it is run on sub-batches and on
    copies of the image); this is checked on every call with more than one image. ``name`` is how results
    and figures call it.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str | None = None) -> None:
        if not callable(fn):
            raise UserError(f"an output target must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "score"))

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.fn(output)

    def __repr__(self) -> str:
        return f"OutputScore({self.name})"

    def __str__(self) -> str:
        return self.name


def margin(a: int, b: int) -> OutputScore:
    """The logit margin ``logit[a] - logit[b]``: what makes the network say ``a`` rather than ``b``."""
    return OutputScore(lambda out: out[:, a] - out[:, b], name=f"margin({a}-{b})")


def class_sum(classes: Sequence[int], *, prob: bool = False) -> OutputScore:
    """The sum over a group of classes: of their logits, or (``prob=True``) of their softmax probabilities
    (e.g. "any dog": the probability mass of all dog breeds)."""
    idx = [int(c) for c in classes]
    if not idx:
        raise UserError("class_sum needs at least one class")

    def fn(out: torch.Tensor) -> torch.Tensor:
        sel = torch.tensor(idx, device=out.device)
        vals = out.float().softmax(-1).to(out.dtype) if prob else out
        return vals.index_select(1, sel).sum(1)
    return OutputScore(fn, name=f"{'p' if prob else 'logit'}_sum({','.join(map(str, idx))})")


TargetLike = (int | str | Sequence[int] | Sequence[str] | torch.Tensor | Unit | Sequence[Unit] | OutputScore
              | Callable[[torch.Tensor], torch.Tensor] | None)
Resolved = torch.Tensor | Unit | tuple | OutputScore  # classes (N,), one unit, one unit per image, a score


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


_KINDS = ("a class index or name, a list of them (one per image), a Unit (or one per image), "
          "an OutputScore / callable on the model's output, or None (the predicted class)")


def resolve_targets(model: Model, x: torch.Tensor, target: TargetLike) -> Resolved:
    """The target in resolved form, checked against the model and the batch.

    Classes become a long tensor ``(N,)`` (``None`` means each image's predicted class; names are looked up
    in the model's labels); a :class:`Unit` is checked (layer, channel, position) and returned; a list of
    units becomes a tuple of ``N`` units; a callable becomes an :class:`OutputScore`. Resolving a resolved
    target returns it unchanged. Anything else raises :class:`UserError`.
    """
    n = x.shape[0]
    if isinstance(target, Unit):
        _check_unit(model, target)
        return target
    if isinstance(target, OutputScore):
        return target
    if target is None:
        with torch.no_grad():
            return model(x).argmax(-1)
    if isinstance(target, (slice, dict, set, float, complex, bytes)) or target is Ellipsis or \
            isinstance(target, bool):
        raise UserError(f"unsupported target {target!r} ({type(target).__name__}): expected {_KINDS}")
    if isinstance(target, str):
        return torch.full((n,), model.class_index(target), dtype=torch.long, device=x.device)
    if isinstance(target, (list, tuple)) and target and all(isinstance(u, Unit) for u in target):
        units = tuple(target)
        if len(units) == 1 and n > 1:
            units = units * n
        if len(units) != n:
            raise UserError(f"expected one unit per image ({n}), got {len(units)}")
        for u in dict.fromkeys(units):
            _check_unit(model, u)
        return units
    if isinstance(target, (list, tuple)) and any(isinstance(u, Unit) for u in target):
        raise UserError(f"a list of targets must be all classes or all units, got {target!r}")
    if callable(target) and not isinstance(target, torch.Tensor):
        return OutputScore(target)
    if isinstance(target, (list, tuple)):
        if any(isinstance(c, (list, tuple, torch.Tensor)) for c in target):
            raise UserError("a list of targets gives one class per image; for several classes of one image use "
                            "convlens.attribute.class_sum([...]) (their sum) or margin(a, b)")
        if any(isinstance(c, str) for c in target):
            target = [model.class_index(c) for c in target]
        if any(isinstance(c, (float, bool, slice)) for c in target):
            raise UserError(f"class indices must be integers, got {target!r}")
    try:
        t = torch.as_tensor(target, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"unsupported target {target!r} ({type(target).__name__}): expected {_KINDS}") from None
    if (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool) and \
            (t.dtype == torch.bool or bool((t != t.round()).any())):
            raise UserError(f"class indices must be integers, got a {t.dtype} tensor")
    t = t.to(torch.long).flatten()
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise UserError(f"expected one target per image ({n}), got {t.numel()}")
    k = model.num_classes
    if k and ((t < 0) | (t >= k)).any():
        bad = int(t[(t < 0) | (t >= k)][0])
        raise UserError(f"class index {bad} out of range: this model has classes 0-{k - 1}")
    return t


def _check_unit(model: Model, unit: Unit) -> None:
    info = model.layers[unit.layer]  # unknown layer -> UserError with the closest names
    if not 0 <= unit.channel < info.channels:
        raise UserError(f"channel {unit.channel} out of range: {unit.layer} has channels 0-{info.channels - 1}")
    if (unit.y is None) != (unit.x is None):
        raise UserError(f"unit {unit}: give both y and x, or neither")
    if unit.y is not None and info.spatial:
        h, w = info.shape[1], info.shape[2]
        if not (0 <= unit.y < h and 0 <= (unit.x or 0) < w):
            raise UserError(f"position ({unit.y}, {unit.x}) out of range: {unit.layer} is {h}x{w} "
                            f"(at the model's input size)")


def unit_layers(target: Resolved) -> list[str]:
    """The layers a unit target reads (empty for class and output targets)."""
    if isinstance(target, Unit):
        return [target.layer]
    if isinstance(target, tuple):
        return list(dict.fromkeys(u.layer for u in target))
    return []


def _unit_value(a: torch.Tensor, u: Unit) -> torch.Tensor:
    """The objective of unit ``u`` for every image of the layer output ``a``: ``(B,)``."""
    if a.dim() == 2:
        return a[:, u.channel]
    if u.y is None:
        return a[:, u.channel].flatten(1).mean(1)
    if u.x is None or not (0 <= u.y < a.shape[2] and 0 <= u.x < a.shape[3]):
        raise UserError(f"position ({u.y}, {u.x}) out of range: {u.layer} is {a.shape[2]}x{a.shape[3]} "
                        f"at this input size")
    return a[:, u.channel, u.y, u.x]


def scores(model: Model, x: torch.Tensor, target: Resolved) -> torch.Tensor:
    """The objective per image ``(N,)``: the unnormalised class score (logit), the unit's activation, or the
    output score.

    A unit's forward pass stops at its layer (the deepest one, for a list of units), so the rest of the
    network is never run.
    """
    if isinstance(target, (Unit, tuple)):
        layers = unit_layers(target)
        with Tap(model, layers, stop=True) as tap:
            tap.run(x)
            outs = dict(tap.outputs)
        if isinstance(target, Unit):
            return _unit_value(outs[target.layer], target)
        if len(target) != x.shape[0]:
            raise ValueError(f"expected one unit per image ({x.shape[0]}), got {len(target)}")
        return torch.stack([_unit_value(outs[u.layer][i:i + 1], u)[0] for i, u in enumerate(target)])
    out = model(x)
    if isinstance(target, OutputScore):
        s = target(out)
        if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0],):
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise UserError(f"target {target.name!r} must return one score per image, shape ({x.shape[0]},), "
                            f"got {got}")
        if x.shape[0] > 1:
            with torch.no_grad():
                one = target(out.detach()[-1:])
            if not (isinstance(one, torch.Tensor) and one.shape == (1,) and torch.allclose(
                    one.float(), s.detach()[-1:].float(), rtol=1e-4, atol=1e-6)):
                raise UserError(f"target {target.name!r} must score each image from its own output row alone "
                                f"(it is run on sub-batches)")
        return s
    return out.gather(1, target.view(-1, 1).to(out.device))[:, 0]


def take(target: Resolved, index: slice | torch.Tensor | Sequence[int]) -> Resolved:
    """The targets of the images ``index`` of the batch (class tensors and unit lists are indexed; a single
    unit or an output score applies to every image unchanged)."""
    if isinstance(target, torch.Tensor):
        return target[index] if isinstance(index, slice) else target[torch.as_tensor(index, device=target.device)]
    if isinstance(target, tuple):
        if isinstance(index, slice):
            return target[index]
        return tuple(target[int(i)] for i in index)
    return target


def tile(target: Resolved, k: int) -> Resolved:
    """The targets of ``k`` sample-major copies of the batch (copy ``j`` of image ``i`` at ``j * N + i``)."""
    if isinstance(target, torch.Tensor):
        return target.repeat(k)
    if isinstance(target, tuple):
        return target * k
    return target


def describe(target: Resolved, i: int = 0) -> str | int:
    """What image ``i`` is explained for, for JSON and captions: a class index, a unit or a score's name."""
    if isinstance(target, torch.Tensor):
        return int(target[i])
    if isinstance(target, tuple):
        return str(target[i])
    return str(target)


def rule_context(rule: str, model: Model | None = None, *, strict: bool = True) -> contextlib.AbstractContextManager:
    """The backward-rule context (a no-op for the plain gradient, so vanilla pays no interception cost)."""
    return contextlib.nullcontext() if rule == "gradient" else backward_rule(rule, model, strict=strict)


def input_gradient(model: Model, x: torch.Tensor, target: Resolved, *, rule: str = "gradient",
                   create_graph: bool = False, report: RuleReport | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``d objective / d pixels`` ``(N, 3, H, W)`` under ``rule``, and the objective values ``(N,)``.

    Under ``guided`` / ``deconv`` a class score whose pass changed no rectifier raises :class:`UserError` (a
    unit below every rectifier is exempt: there the rule's answer is the gradient); ``report`` (if given)
    accumulates how many rectifier calls the rule changed."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), rule_context(rule, model, strict=not isinstance(target, (Unit, tuple))) as ctx:
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
