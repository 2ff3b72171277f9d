"""Objectives: small named scores on what a forward pass recorded, composing with ``+``, ``-`` and scalar ``*``.

An objective is evaluated on a :class:`Recorded` -- the activations a :class:`~convlens.core.taps.Tap` recorded
at the layers the objective names, the logits (only when some term needs them) and the pixel image -- and
returns one value per image, shape ``(N,)``. Sums keep their terms, so ``repr`` reads like the formula::

    >>> class_logit(130) - 0.05 * total_variation(beta=2)
    class_logit(130) - 0.05*total_variation(beta=2)

Batch targets: ``class_logit([130, 9])`` scores image 0 for class 130 and image 1 for class 9; likewise
``channel``, ``neuron``. Targets (``feature_match``, ``gram_match``) are broadcast over the batch when they have
batch size 1, or matched image by image.

Whether a value is maximised (class / unit visualization, DeepDream) or minimised (inversion, texture, style)
is the loop's ``maximize`` flag; regularisers (:func:`l2`, :func:`total_variation`, :func:`alpha_norm`) are
penalties and are always added to what is minimised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Objective", "Recorded", "Sum", "class_logit", "class_logprob", "channel", "neuron", "layer_norm",
           "layer_guide", "feature_match", "gram", "gram_loss", "gram_match", "l2", "total_variation", "alpha_norm",
           "ClassLogit", "ClassLogprob", "Channel", "Neuron", "LayerNorm", "LayerGuide", "FeatureMatch",
           "GramMatch", "L2", "TotalVariation", "AlphaNorm"]


@dataclass
class Recorded:
    """What one forward pass left for the objectives.

    Attributes:
        acts: layer name -> activation ``(N, C, H, W)`` (or ``(N, D)``), with gradient history.
        logits: class scores ``(N, K)`` or ``None`` when no term asked for them (the pass stopped early).
        image: the pixel image ``(N, 3, H, W)`` in [0, 1] the regularisers see (before per-step transforms).
    """

    acts: Mapping[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    image: torch.Tensor | None = None

    def act(self, layer: str) -> torch.Tensor:
        if layer not in self.acts:
            raise KeyError(f"layer {layer!r} was not recorded (recorded: {sorted(self.acts)})")
        return self.acts[layer]


def _up(x: torch.Tensor) -> torch.Tensor:
    """Half precision up to float32 for reductions; float32 / float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _fmt(x: float) -> str:
    return f"{x:g}"


class Objective:
    """Base class: a score per image. Subclasses set ``layers``/``uses_logits`` and implement ``__call__``."""

    layers: tuple[str, ...] = ()
    uses_logits: bool = False
    uses_image: bool = False

    def __call__(self, rec: Recorded) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- algebra --------------------------------------------------------------------------------------------
    def _terms(self) -> list[tuple[float, Objective]]:
        return [(1.0, self)]

    def __add__(self, other: object) -> Sum:
        if isinstance(other, (int, float)) and other == 0:
            return Sum(self._terms())
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(self._terms() + other._terms())

    __radd__ = __add__  # so that sum([...]) works

    def __neg__(self) -> Sum:
        return Sum([(-w, t) for w, t in self._terms()])

    def __sub__(self, other: object) -> Sum:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, k: object) -> Sum:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return Sum([(w * float(k), t) for w, t in self._terms()])

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> Sum:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return self * (1.0 / float(k))


class Sum(Objective):
    """A weighted sum of objectives (what ``+``, ``-`` and ``*`` build)."""

    def __init__(self, terms: Sequence[tuple[float, Objective]]) -> None:
        self.terms = list(terms)
        self.layers = tuple(dict.fromkeys(name for _, t in self.terms for name in t.layers))
        self.uses_logits = any(t.uses_logits for _, t in self.terms)
        self.uses_image = any(t.uses_image for _, t in self.terms)

    def _terms(self) -> list[tuple[float, Objective]]:
        return list(self.terms)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        total: torch.Tensor | float = 0.0
        for w, t in self.terms:
            total = total + w * t(rec)
        return total  # type: ignore[return-value]

    def __repr__(self) -> str:
        out = ""
        for i, (w, t) in enumerate(self.terms):
            sign = "-" if w < 0 else "+"
            mag = abs(w)
            body = repr(t) if mag == 1 else f"{_fmt(mag)}*{t!r}"
            out += (("-" + body) if sign == "-" else body) if i == 0 else f" {sign} {body}"
        return out or "0"


def _index(target: int | Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    """Targets as a LongTensor of length ``n`` (one int broadcast, or one per image)."""
    if isinstance(target, int):
        return torch.full((n,), target, dtype=torch.long, device=device)
    idx = torch.as_tensor(list(target), dtype=torch.long, device=device)
    if len(idx) != n:
        raise ValueError(f"{len(idx)} targets for a batch of {n} images")
    return idx


def _pick(a: torch.Tensor, idx: torch.Tensor, layer: str) -> torch.Tensor:
    """Channel ``idx[i]`` of image ``i``: ``(N, H, W)`` (or ``(N,)`` for flat layers)."""
    c = a.shape[1]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= c):
        from ..errors import UserError
        raise UserError(f"channel {int(idx.max()) if int(idx.max()) >= c else int(idx.min())} out of range: "
                        f"{layer!r} has channels 0-{c - 1}")
    return a[torch.arange(a.shape[0], device=a.device), idx]


def _targets_repr(t: int | Sequence[int]) -> str:
    return str(t) if isinstance(t, int) else "[" + ", ".join(map(str, t)) + "]"


def _norm_target(t: int | Sequence[int]) -> int | tuple[int, ...]:
    return int(t) if isinstance(t, int) else tuple(int(i) for i in t)


# -- class scores -----------------------------------------------------------------------------------------

class ClassLogit(Objective):
    uses_logits = True

    def __init__(self, target: int | Sequence[int]) -> None:
        self.target = _norm_target(target)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.logits is not None
        idx = _index(self.target, rec.logits.shape[0], rec.logits.device)
        return rec.logits.gather(1, idx[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"class_logit({_targets_repr(self.target)})"


class ClassLogprob(ClassLogit):
    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.logits is not None
        idx = _index(self.target, rec.logits.shape[0], rec.logits.device)
        return _up(rec.logits).log_softmax(-1).gather(1, idx[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"class_logprob({_targets_repr(self.target)})"


def class_logit(target: int | Sequence[int]) -> ClassLogit:
    """The unnormalised class score S_c (Simonyan et al. 2014), one class or one class per image."""
    return ClassLogit(target)


def class_logprob(target: int | Sequence[int]) -> ClassLogprob:
    """log p(c | x) = S_c - logsumexp(S): pushes the class up *and* the others down."""
    return ClassLogprob(target)


# -- units ------------------------------------------------------------------------------------------------

class Channel(Objective):
    def __init__(self, layer: str, target: int | Sequence[int]) -> None:
        self.layers = (layer,)
        self.layer = layer
        self.target = _norm_target(target)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        a = rec.act(self.layer)
        idx = _index(self.target, a.shape[0], a.device)
        picked = _pick(a, idx, self.layer)
        return picked.reshape(a.shape[0], -1).mean(1)

    def __repr__(self) -> str:
        return f"channel({self.layer!r}, {_targets_repr(self.target)})"


class Neuron(Objective):
    def __init__(self, layer: str, target: int | Sequence[int], y: int | None = None, x: int | None = None) -> None:
        self.layers = (layer,)
        self.layer = layer
        self.target = _norm_target(target)
        self.y, self.x = y, x

    def __call__(self, rec: Recorded) -> torch.Tensor:
        a = rec.act(self.layer)
        idx = _index(self.target, a.shape[0], a.device)
        picked = _pick(a, idx, self.layer)  # (N, H, W) or (N,)
        if picked.dim() == 1:
            return picked
        h, w = picked.shape[-2:]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"neuron position ({y}, {x}) outside the {h}x{w} map of {self.layer!r}")
        return picked[:, y, x]

    def __repr__(self) -> str:
        pos = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"neuron({self.layer!r}, {_targets_repr(self.target)}{pos})"


def channel(layer: str, target: int | Sequence[int]) -> Channel:
    """Mean activation of channel ``target`` of ``layer`` over all positions (a "unit" visualization)."""
    return Channel(layer, target)


def neuron(layer: str, target: int | Sequence[int], y: int | None = None, x: int | None = None) -> Neuron:
    """Activation of channel ``target`` at one position ``(y, x)`` of ``layer`` (default: the centre)."""
    return Neuron(layer, target, y, x)


# -- DeepDream --------------------------------------------------------------------------------------------

class LayerNorm(Objective):
    def __init__(self, layer: str) -> None:
        self.layers = (layer,)
        self.layer = layer

    def __call__(self, rec: Recorded) -> torch.Tensor:
        a = rec.act(self.layer)
        return 0.5 * _up(a).pow(2).reshape(a.shape[0], -1).sum(1)

    def __repr__(self) -> str:
        return f"layer_norm({self.layer!r})"


def layer_norm(layer: str) -> LayerNorm:
    """DeepDream's objective (Mordvintsev et al. 2015): ``0.5 * ||a||^2`` of a layer, so the gradient at the
    layer is the activation itself, exactly as ``objective_L2`` in the original notebook."""
    return LayerNorm(layer)


class LayerGuide(Objective):
    def __init__(self, layer: str, guide: torch.Tensor) -> None:
        self.layers = (layer,)
        self.layer = layer
        g = guide.detach()
        if g.dim() == 4:
            g = g[0]
        self.guide = g.reshape(g.shape[0], -1)  # (C, M)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        a = rec.act(self.layer)
        x = a.reshape(a.shape[0], a.shape[1], -1)  # (N, C, P)
        g = self.guide.to(x)
        with torch.no_grad():
            best = torch.einsum("ncp,cm->npm", x, g).argmax(-1)  # (N, P) best-matching guide vector
        matched = g[:, best]  # (C, N, P)
        return (x * matched.permute(1, 0, 2)).sum((1, 2))

    def __repr__(self) -> str:
        return f"layer_guide({self.layer!r}, guide={tuple(self.guide.shape)})"


def layer_guide(layer: str, guide: torch.Tensor) -> LayerGuide:
    """Guided DeepDream (Mordvintsev et al. 2015): for each position, the dot product of its activation
    vector with the best-matching activation vector of a guide image's features ``guide`` (``C x H' x W'``)."""
    return LayerGuide(layer, guide)


# -- matching a target (inversion, texture, style) ----------------------------------------------------------

def _batch_target(t: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    t = t.to(device=like.device, dtype=like.dtype)
    if t.dim() == like.dim() - 1:
        t = t[None]
    if t.shape[0] not in (1, n):
        raise ValueError(f"target batch {t.shape[0]} does not fit a batch of {n} images")
    return t


class FeatureMatch(Objective):
    def __init__(self, layer: str, target: torch.Tensor) -> None:
        self.layers = (layer,)
        self.layer = layer
        self.target = target.detach()

    def __call__(self, rec: Recorded) -> torch.Tensor:
        a = rec.act(self.layer)
        t = _batch_target(self.target, a.shape[0], a)
        if t.shape[1:] != a.shape[1:]:
            raise ValueError(f"target shape {tuple(t.shape[1:])} != activation shape {tuple(a.shape[1:])} "
                             f"at {self.layer!r} (images of a different size?)")
        diff = (a - t).reshape(a.shape[0], -1).pow(2).sum(1)
        norm = t.reshape(t.shape[0], -1).pow(2).sum(1).clamp_min(1e-12)
        return diff / norm

    def __repr__(self) -> str:
        return f"feature_match({self.layer!r}, target={tuple(self.target.shape)})"


def feature_match(layer: str, target: torch.Tensor) -> FeatureMatch:
    """Relative feature error ``||Phi(x) - Phi_0||^2 / ||Phi_0||^2`` at ``layer`` (Mahendran & Vedaldi 2015).

    ``target`` is the code ``Phi_0`` (``C x H x W`` or ``N x C x H x W``), e.g. from
    :func:`~convlens.core.taps.activations`. 0 means a perfect match; minimise it.
    """
    return FeatureMatch(layer, target)


GRAM_NORMS = ("mean", "size", "none")
GRAM_SCALES = ("target", "gatys", "sum")


def gram(features: torch.Tensor, *, normalize: str = "mean") -> torch.Tensor:
    """Gram matrices of feature maps ``(N, C, H, W)`` (or one ``C x H x W``) -> ``(N, C, C)`` (Gatys et al. 2015).

    ``G[c, d] = sum_p F[c, p] F[d, p]`` over the ``M = H*W`` positions. ``normalize``: ``"mean"`` (default)
    divides by ``M``, so a sample and a larger output are comparable; ``"size"`` divides by ``C*M`` as well, so
    layers of different width are too; ``"none"`` keeps the plain sum (the paper's ``G``, whose loss carries
    the ``1/(4 N^2 M^2)`` factor instead, see :func:`gram_loss`). This is the one Gram of the package: texture
    synthesis, style transfer and :func:`gram_match` all use it. Grams of different images can be blended as
    plain weighted sums, ``0.7 * gram(a) + 0.3 * gram(b)``.
    """
    if features.dim() == 3:
        features = features[None]
    if features.dim() != 4:
        raise ValueError(f"expected features (N, C, H, W), got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    f = _up(features.reshape(n, c, h * w))
    g = f @ f.transpose(1, 2)
    if normalize == "mean":
        return g / (h * w)
    if normalize == "size":
        return g / (c * h * w)
    if normalize == "none":
        return g
    raise ValueError(f"normalize must be one of {GRAM_NORMS}, got {normalize!r}")


def gram_loss(g: torch.Tensor, target: torch.Tensor, *, scale: str = "target", m: int | None = None) -> torch.Tensor:
    """Distance between Gram matrices ``(N, C, C)`` and a target ``(C, C)`` or ``(N, C, C)``, one value per image.

    ``scale="target"`` (default) divides the squared error by the target's squared norm, so every layer and
    every image contribute on the same scale (0 = identical statistics, 1 = as far as predicting zero).
    ``scale="gatys"`` is the paper's ``1/(4 N^2 M^2) sum (G - A)^2`` for un-normalised Grams of ``M`` positions;
    ``scale="sum"`` the plain squared Frobenius distance ``sum (G - A)^2``. The one Gram loss of the package.
    """
    diff = (g - target).pow(2).flatten(1).sum(1)
    if scale == "target":
        return diff / target.pow(2).flatten(-2).sum(-1).clamp_min(1e-12)
    if scale == "gatys":
        c = g.shape[-1]
        return diff / (4.0 * c * c * float(m or 1) ** 2)
    if scale == "sum":
        return diff
    raise ValueError(f"scale must be one of {GRAM_SCALES}, got {scale!r}")


class GramMatch(Objective):
    def __init__(self, targets: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None, *,
                 normalize: str = "mean", scale: str = "sum") -> None:
        if normalize not in GRAM_NORMS or scale not in GRAM_SCALES:
            raise ValueError(f"normalize must be one of {GRAM_NORMS} and scale one of {GRAM_SCALES}")
        self.normalize, self.scale = normalize, scale
        self.targets = {k: v.detach() for k, v in targets.items()}
        self.weights = {k: float((weights or {}).get(k, 1.0)) for k in self.targets}
        unknown = set(weights or {}) - set(self.targets)
        if unknown:
            raise ValueError(f"weights for layers without a target Gram: {sorted(unknown)}")
        self.layers = tuple(self.targets)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        total: torch.Tensor | float = 0.0
        for layer, target in self.targets.items():
            a = rec.act(layer)
            g = gram(a, normalize=self.normalize)
            t = _batch_target(target, g.shape[0], g)
            total = total + self.weights[layer] * gram_loss(g, t, scale=self.scale, m=a.shape[-1] * a.shape[-2])
        return total  # type: ignore[return-value]

    def __repr__(self) -> str:
        parts = ", ".join(f"{k!r}: {_fmt(w)}" for k, w in self.weights.items())
        return f"gram_match({{{parts}}})"


def gram_match(layers: str | Mapping[str, torch.Tensor], target: torch.Tensor | None = None, *,
               weights: Mapping[str, float] | None = None, normalize: str = "mean",
               scale: str = "sum") -> GramMatch:
    """Style / texture loss (Gatys et al. 2015): ``sum_l w_l ||G_l(x) - A_l||_F^2`` with ``G`` from :func:`gram`.

    ``normalize`` is :func:`gram`'s (the targets must be made with the same one) and ``scale`` is
    :func:`gram_loss`'s (``"sum"``: the plain squared distance; ``"target"``: the scale-free one texture and
    style synthesis use).

    Call as ``gram_match("blocks.2", A)`` for one layer, or ``gram_match({"blocks.1": A1, "blocks.3": A3},
    weights={"blocks.1": 1.0, "blocks.3": 0.5})`` for several with per-layer weights (default 1). A target may
    be any blend of Grams (a weighted sum of :func:`gram` outputs), of shape ``C x C`` (shared by the batch)
    or ``N x C x C`` (one per image). 0 means matched; minimise it.
    """
    if isinstance(layers, str):
        if target is None:
            raise ValueError("gram_match(layer, target): give the target Gram matrix")
        return GramMatch({layers: target}, weights, normalize=normalize, scale=scale)
    if target is not None:
        raise ValueError("give either a {layer: target} mapping or one layer and its target, not both")
    return GramMatch(layers, weights, normalize=normalize, scale=scale)


# -- image priors (regularisers: penalties, always added to what is minimised) ---------------------------------

class L2(Objective):
    uses_image = True

    def __init__(self, center: float = 0.5) -> None:
        self.center = float(center)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.image is not None
        x = rec.image - self.center
        return x.pow(2).reshape(x.shape[0], -1).mean(1)

    def __repr__(self) -> str:
        return "l2()" if self.center == 0.5 else f"l2(center={_fmt(self.center)})"


def l2(center: float = 0.5) -> L2:
    """Mean squared pixel value around ``center`` (Simonyan et al. 2014's ``||I||^2`` on the mean-subtracted
    image; 0.5 is mid-grey). A penalty: larger means further from grey."""
    return L2(center)


class TotalVariation(Objective):
    uses_image = True

    def __init__(self, beta: float = 2.0) -> None:
        self.beta = float(beta)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.image is not None
        x = rec.image
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        sq = dx.pow(2) + dy.pow(2)
        v = sq if self.beta == 2 else (sq + 1e-8).pow(self.beta / 2)
        return v.reshape(x.shape[0], -1).mean(1)

    def __repr__(self) -> str:
        return f"total_variation(beta={_fmt(self.beta)})"


def total_variation(beta: float = 2.0) -> TotalVariation:
    """Total variation ``mean_ij ((x_{i,j+1}-x_ij)^2 + (x_{i+1,j}-x_ij)^2)^(beta/2)`` (Mahendran & Vedaldi 2015):
    small for smooth images; ``beta`` < 2 allows sharper edges. A penalty."""
    return TotalVariation(beta)


class AlphaNorm(Objective):
    uses_image = True

    def __init__(self, alpha: float = 6.0, center: float = 0.5) -> None:
        self.alpha = float(alpha)
        self.center = float(center)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.image is not None
        x = (rec.image - self.center).abs()
        return x.pow(self.alpha).reshape(x.shape[0], -1).mean(1)

    def __repr__(self) -> str:
        return f"alpha_norm(alpha={_fmt(self.alpha)})"


def alpha_norm(alpha: float = 6.0, center: float = 0.5) -> AlphaNorm:
    """Mean ``|x - center|^alpha`` over pixels (Mahendran & Vedaldi 2015's alpha-norm prior; a large ``alpha``
    keeps pixels in range without bounding them hard). A penalty."""
    return AlphaNorm(alpha, center)
