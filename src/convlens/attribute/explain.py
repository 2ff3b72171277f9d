"""Explain one image: the maps of several saliency methods for one or more targets.

The recipe behind ``convlens saliency IMAGE`` and the tour's saliency sections: one call returns an
:class:`Explanation` that holds every map, the signed attributions of the colour methods, the explained classes
with their probabilities, the options used and the seconds each method took; ``show.attribution`` draws it and
``to_dict`` is its ``result.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.taps import RuleReport
from ..errors import UserError
from ..models.model import Model
from ._common import Unit, check_batch, resolve_targets, to_map
from .cam import guided_grad_cam
from .gradients import guided_backprop
from .methods import RANDOM_METHODS, saliency

__all__ = ["COLOUR", "MethodMap", "TargetMaps", "Explanation", "explain"]

COLOUR: dict[str, Callable[..., torch.Tensor]] = {"guided": guided_backprop, "guided_gradcam": guided_grad_cam}
"""Methods whose signed RGB attribution is shown in colour (the map is that attribution reduced)."""
RULES = {"deconvnet": "deconv", "guided": "guided", "guided_gradcam": "guided"}


@dataclass
class MethodMap:
    """One method's map ``(H, W)``, its signed attribution ``(3, H, W)`` for the :data:`COLOUR` methods,
    the seconds it took, the options it ran with and, for the backward-rule methods, how many rectifier calls the
    rule changed (``report``)."""

    map: torch.Tensor
    raw: torch.Tensor | None
    seconds: float
    options: dict[str, Any]
    report: RuleReport | None = None


@dataclass
class TargetMaps:
    """The maps of one target: a class (with its label and softmax probability) or a :class:`Unit`."""

    target: int | Unit
    label: str | None
    probability: float | None
    maps: dict[str, MethodMap] = field(default_factory=dict)

    def describe(self) -> str:
        if isinstance(self.target, Unit):
            return str(self.target)
        return f"{self.label} ({self.target}) p={self.probability:.3f}"


@dataclass
class Explanation:
    """Saliency maps of one photo ``image`` ``(1, 3, H, W)`` for each target, in the order asked."""

    image: torch.Tensor
    methods: list[str]
    targets: list[TargetMaps]

    def to_dict(self, files: Mapping[tuple[int, str], str] | None = None) -> dict[str, Any]:
        """The ``result.json`` entry: per target its class / unit and per method the seconds, shape and options
        (``files`` names the saved map of target ``i`` and method ``m`` as ``files[(i, m)]``). The first target's
        fields are repeated at the top level."""
        entries = []
        for i, t in enumerate(self.targets):
            head: dict[str, Any] = ({"unit": str(t.target)} if isinstance(t.target, Unit)
                                    else {"class": t.target, "label": t.label, "probability": t.probability})
            methods = {}
            for name, m in t.maps.items():
                methods[name] = {**({"map": files[(i, name)]} if files else {}), "seconds": round(m.seconds, 4),
                                 "shape": list(m.map.shape), **m.options,
                                 **({"report": m.report} if m.report is not None else {})}
            entries.append({**head, "methods": methods})
        first = entries[0]
        return {"targets": entries, "target": first.get("class", first.get("unit")), "label": first.get("label"),
                "probability": first.get("probability"), "methods": first["methods"]}


def explain(model: Model, x: torch.Tensor, methods: Sequence[str], target: int | str | Unit | None = None, *,
            compare: int = 1, options: Mapping[str, Mapping[str, Any]] | None = None,
            generator: torch.Generator | None = None,
            progress: Callable[[str, float], Any] | None = None) -> Explanation:
    """Saliency maps of ``methods`` (names of :data:`~convlens.attribute.METHODS`) for one photo ``x``
    ``(1, 3, H, W)``.

    ``target`` is a class (index or name; default the predicted class) or a :class:`Unit`; ``compare=k``
    explains the top ``k`` classes instead (the bias check: are the top-2 classes found in different places?).
    ``options`` gives per-method keyword arguments; ``generator`` drives SmoothGrad's noise and RISE's masks.
    The colour methods (:data:`COLOUR`) run once: their map is their attribution reduced as
    :func:`~convlens.attribute.saliency` would. One forward pass predicts (none for a unit); each method then
    costs what it costs alone. ``progress(method, seconds)`` is called after each map.
    """
    x = check_batch(x)
    if x.shape[0] != 1:
        raise UserError(f"explain takes one photo, got a batch of {x.shape[0]}")
    options = options or {}
    if compare < 1:
        raise UserError(f"compare must be at least 1 class, got {compare}")
    if isinstance(target, Unit):
        if compare > 1:
            raise UserError("a unit is one target: it cannot be combined with comparing classes")
        resolve_targets(model, x, target)  # validates the layer, channel and position
        targets = [TargetMaps(target, None, None)]
    else:
        if target is not None and compare > 1:
            raise UserError("give a class or compare the top classes, not both")
        with torch.no_grad():
            probs = model(x).float().softmax(-1)[0]
        classes = ([int(i) for i in probs.topk(compare).indices] if target is None
                   else [model.class_index(target)])
        targets = [TargetMaps(c, model.label(c), float(probs[c])) for c in classes]
    for t in targets:
        for name in methods:
            opts = dict(options.get(name, {}))
            used = {k: v for k, v in opts.items() if k not in ("generator", "report")}
            if name in RANDOM_METHODS and generator is not None:
                opts.setdefault("generator", generator)
            report = RuleReport(RULES[name]) if name in RULES else None
            if report is not None:
                opts["report"] = report
            start = time.perf_counter()
            if name in COLOUR:
                raw: torch.Tensor | None = COLOUR[name](model, x, t.target, **opts)[0].detach()
                m = to_map(raw[None])[0]  # type: ignore[index]
            else:
                raw, m = None, saliency(model, x, name, t.target, **opts)[0]
            seconds = time.perf_counter() - start
            t.maps[name] = MethodMap(m.detach(), raw, seconds, used, report)
            if progress is not None:
                progress(name, seconds)
    return Explanation(x.detach(), list(methods), targets)
