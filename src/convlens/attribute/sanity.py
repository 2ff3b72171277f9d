"""Sanity checks for saliency maps (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A map that explains the model must change when the model does. Two tests, for any method of
:data:`~convlens.attribute.METHODS`:

* **cascading model-parameter randomisation** -- a copy of the network has its parameter groups re-drawn at
  random one after another, from the output layer down to the input; after each step the maps are recomputed
  and compared with the trained model's maps;
* **label randomisation** (the paper's data randomisation test) -- a copy of the network is trained to
  predict random labels for the given images; its maps for those labels are compared with the trained
  model's maps for its own predictions.

Similarity per image is the Spearman rank correlation of the two maps (of their absolute values by default,
as in the paper's figures) and the SSIM of the maps scaled to [0, 1]. A method that passes falls towards 0 as
the top layers are randomised; the paper's finding is that guided backprop (and guided Grad-CAM) barely move --
they reconstruct the image more than they explain the model -- while the gradient and Grad-CAM do.
The user's model is never touched: every randomisation or training happens on a deep copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.model import Model
from ._common import TargetLike, check_batch, resolve_targets
from .methods import saliency

__all__ = ["SanityCheck", "randomization_groups", "randomize", "cascading_randomization", "label_randomization",
           "rank_correlation", "ssim"]


@dataclass
class SanityCheck:
    """Similarity between a method's maps on the trained model and on randomised copies.

    ``steps`` names the models compared: ``"trained"`` first, then each cascading step by the parameter group
    randomised last (all groups above it are random too), or ``"random labels"``. ``spearman[method]`` and
    ``ssim[method]`` are ``(len(steps), N)`` arrays (row 0 compares the trained model with itself: 1).
    ``maps[method]`` holds the maps ``(len(steps), N, H, W)``; ``parameters`` records what was done (seed,
    groups, the share of random labels the copy fitted) and ``constant_trained_maps``: per method, how many
    images have a constant map on the trained model (nothing to compare: their similarities say nothing).
    """

    test: str
    methods: list[str]
    steps: list[str]
    spearman: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    maps: dict[str, torch.Tensor] = field(repr=False)
    targets: list[Any] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    def mean(self, method: str, metric: str = "spearman") -> np.ndarray:
        """Mean over images per step ``(len(steps),)``."""
        return getattr(self, metric)[method].mean(1)

    def to_dict(self) -> dict[str, Any]:
        """The numbers (means per step and per image) for ``result.json``."""
        return {"test": self.test, "steps": self.steps, "targets": self.targets, "parameters": self.parameters,
                "methods": {m: {"spearman_mean": [round(float(v), 4) for v in self.mean(m)],
                                "ssim_mean": [round(float(v), 4) for v in self.mean(m, "ssim")],
                                "spearman": np.round(self.spearman[m], 4).tolist(),
                                "ssim": np.round(self.ssim[m], 4).tolist()} for m in self.methods}}


# --- similarity ----------------------------------------------------------------------------------------------

def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation per image of maps ``(N, H, W)`` (ties share their mean rank); two equal maps: 1
    (constant ones too), a constant map against a different one shares no ranking: 0."""
    from scipy.stats import rankdata

    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        ra = rankdata(a[i].detach().double().cpu().numpy().ravel())
        rb = rankdata(b[i].detach().double().cpu().numpy().ravel())
        if torch.equal(a[i], b[i]):
            out[i] = 1.0
            continue
        if ra.std() == 0 or rb.std() == 0:
            continue
        out[i] = float(np.corrcoef(ra, rb)[0, 1])
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def ssim(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Structural similarity (Wang et al. 2004, scikit-image) per image of maps ``(N, H, W)`` scaled to [0, 1]."""
    from skimage.metrics import structural_similarity

    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        x = _unit(a[i].detach().double().cpu().numpy())
        y = _unit(b[i].detach().double().cpu().numpy())
        out[i] = float(structural_similarity(x, y, data_range=1.0))
    return out


# --- randomising a copy ---------------------------------------------------------------------------------------

def randomization_groups(model: Model) -> list[str]:
    """Parameter groups for cascading randomisation, from the output down to the input.

    The network's top-level children that hold parameters, with containers (``nn.Sequential``,
    ``nn.ModuleList``) opened one level -- ``classifier, bn2, conv_head, blocks.6, ..., blocks.0, bn1,
    conv_stem`` on EfficientNet-Lite0, ``fc, layer4.1, layer4.0, ..., conv1`` on a ResNet.
    """
    groups = []
    for name, child in model.module.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            groups += [f"{name}.{n}" for n, c in child.named_children() if any(True for _ in c.parameters())]
        elif any(True for _ in child.parameters()):
            groups.append(name)
    if not groups:
        raise UserError("this model has no parameters to randomise")
    order = {n: i for i, n in enumerate(model.layers.names())}  # the order the forward pass runs them
    groups.sort(key=lambda n: order.get(n, -1))
    return groups[::-1]


def randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` in place: weights from ``N(0, s)``, biases and normalisation scales
    from ``N(m, s)``, with ``m, s`` the mean and standard deviation of the trained tensor (its scale survives,
    its content does not). Buffers (BatchNorm running statistics) are kept."""
    with torch.no_grad():
        for p in module.parameters():
            flat = p.detach().double().flatten()
            s = float(flat.std()) if flat.numel() > 1 else 0.0
            s = s if math.isfinite(s) and s > 0 else float(flat.abs().mean()) or 1e-2
            m = 0.0 if p.dim() > 1 else float(flat.mean())
            p.copy_((torch.randn(p.shape, generator=generator, dtype=torch.float64) * s + m).to(p.dtype))


def _copy(model: Model) -> Model:
    module = copy.deepcopy(model.module)
    clone = Model(module, model.preprocess, labels=model.labels, name=f"{model.name}-copy", owned=True)
    clone._layers = model._layers  # the same architecture: the same layer index (names, shapes, fields)
    return clone


def _options(method: str, options: dict[str, dict[str, Any]] | None, seed: int) -> dict[str, Any]:
    opts = dict((options or {}).get(method, {}))
    if method == "smoothgrad":
        opts.setdefault("samples", 10)
        opts["generator"] = torch.Generator().manual_seed(seed)  # the same noise for every model compared
    if method == "integrated":
        opts.setdefault("steps", 16)
    return opts


def _maps(model: Model, x: torch.Tensor, methods: Sequence[str], target: Any,
          options: dict[str, dict[str, Any]] | None, seed: int, absolute: bool) -> dict[str, torch.Tensor]:
    out = {}
    for m in methods:
        v = saliency(model, x, m, target, **_options(m, options, seed)).detach()
        out[m] = v.abs() if absolute else v
    return out


def _compare(test: str, methods: list[str], steps: list[str], maps: list[dict[str, torch.Tensor]],
             targets: list[Any], parameters: dict[str, Any]) -> SanityCheck:
    rho = {m: np.stack([rank_correlation(maps[0][m], s[m]) for s in maps]) for m in methods}
    flat = {m: maps[0][m].flatten(1) for m in methods}
    parameters["constant_trained_maps"] = {m: int((f.amax(1) == f.amin(1)).sum()) for m, f in flat.items()
                                           if bool((f.amax(1) == f.amin(1)).any())}
    sim = {m: np.stack([ssim(maps[0][m], s[m]) for s in maps]) for m in methods}
    return SanityCheck(test, methods, steps, rho, sim, {m: torch.stack([s[m] for s in maps]) for m in methods},
                       targets, parameters)


def _targets_json(t: Any) -> list[Any]:
    return t.tolist() if isinstance(t, torch.Tensor) else [str(t)]


def cascading_randomization(model: Model, x: torch.Tensor, methods: Sequence[str] = ("gradient", "guided",
                                                                                  "gradcam"),
                            target: TargetLike = None, *, groups: Sequence[str] | None = None, seed: int = 0,
                            absolute: bool = True, options: dict[str, dict[str, Any]] | None = None
                            ) -> SanityCheck:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, sec. 3.1).

    On a deep copy of the network the parameter groups (default :func:`randomization_groups`: output first)
    are re-drawn one after another (:func:`randomize`, seeded by ``seed``); after each, every method's maps of
    ``x`` for ``target`` (resolved once, on the trained model: the same class throughout) are compared with
    the trained model's. ``options`` per method go to :func:`~convlens.attribute.saliency`; SmoothGrad uses the
    same noise for every model. Returns a :class:`SanityCheck` with ``len(groups) + 1`` steps.
    """
    x = check_batch(x)
    methods = list(methods)
    t = resolve_targets(model, x, target)
    groups = list(groups) if groups is not None else randomization_groups(model)
    mods = dict(model.module.named_modules())
    for g in groups:
        if g not in mods or not g:
            from ..errors import closest
            raise UserError(f"unknown parameter group {g!r}; closest: {', '.join(closest(g, mods))}")
    maps = [_maps(model, x, methods, t, options, seed, absolute)]
    clone = _copy(model)
    cmods = dict(clone.module.named_modules())
    gen = torch.Generator().manual_seed(seed)
    for g in groups:
        randomize(cmods[g], gen)
        maps.append(_maps(clone, x, methods, t, options, seed, absolute))
    return _compare("cascading randomization", methods, ["trained", *groups], maps, _targets_json(t),
                    {"groups": groups, "seed": seed, "absolute": absolute})


def label_randomization(model: Model, x: torch.Tensor, methods: Sequence[str] = ("gradient", "guided",
                                                                              "gradcam"),
                        *, seed: int = 0, steps: int = 100, lr: float = 1e-3, absolute: bool = True,
                        options: dict[str, dict[str, Any]] | None = None) -> SanityCheck:
    """Label randomisation (Adebayo et al. 2018, sec. 3.2, "data randomization test"), on the given images.

    A deep copy of the network (normalisation statistics frozen, every parameter trainable) is trained with
    Adam (``lr``) for at most ``steps`` steps to predict a random label for each image of ``x`` (drawn with
    ``seed``, never the model's own prediction), until it predicts all of them. Its maps for the random labels
    are compared with the trained model's maps for its predictions. ``parameters["fitted"]`` is the share of
    images whose random label the copy predicts in the end (a map can only be blamed if the copy learnt them).
    Returns a :class:`SanityCheck` with the steps ``["trained", "random labels"]``.
    """
    x = check_batch(x)
    methods = list(methods)
    with torch.no_grad():
        pred = model(x).argmax(-1)
    k = model.num_classes or int(model(x[:1]).shape[-1])
    if k < 2:
        raise UserError("label randomisation needs a classifier with at least two classes")
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, k, (x.shape[0],), generator=gen).to(pred.device)
    labels = (pred + shift) % k  # a random class, never the predicted one
    clone = _copy(model)
    params = list(clone.module.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    done = 0
    for done in range(1, steps + 1):
        opt.zero_grad()
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(clone(x), labels)
            loss.backward()
        opt.step()
        with torch.no_grad():
            if bool((clone(x).argmax(-1) == labels).all()):
                break
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        fitted = float((clone(x).argmax(-1) == labels).float().mean())
    maps = [_maps(model, x, methods, pred, options, seed, absolute),
            _maps(clone, x, methods, labels, options, seed, absolute)]
    return _compare("label randomization", methods, ["trained", "random labels"], maps, pred.tolist(),
                    {"seed": seed, "random_labels": labels.tolist(), "fitted": fitted, "train_steps": done,
                     "lr": lr, "absolute": absolute})
