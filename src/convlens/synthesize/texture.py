"""Gram-matrix texture synthesis (Gatys, Ecker & Bethge 2015) and the style statistics style transfer reuses.

A texture is described by the Gram matrices of a few layers' feature maps: ``G = F Fᵀ`` with ``F`` the
``C x (HW)`` features, i.e. which channels fire together, wherever they fire. Synthesis starts from noise and
changes the pixels until the Gram matrices match those of the sample, so the output can have any size.

Default layers come from the model's layer index, not from a per-model list: the first activation at each
resolution level (stride 1, 2, 4, ... of the input). On VGG-19 this rule yields exactly Gatys' classic choice
``relu1_1 ... relu5_1`` (``features.1, 6, 11, 20, 29``); on other networks it yields the same kind of set.
``pre_activation=True`` takes the input of each activation instead (the tensor before ReLU / ReLU6), which
is what works best for textures on EfficientNet-Lite, whose ReLU6 clips away the strong responses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.objectives import Objective, Recorded, gram, gram_loss
from ..core.objectives import total_variation as tv_objective
from ..core.optimize import optimize
from ..core.params import PixelImage
from ..core.taps import Tap
from ..errors import UserError
from ..models.model import Model

__all__ = [
    "GramStyle",
    "GramTargets",
    "Regularity",
    "SpectrumMatch",
    "TextureRegularity",
    "TextureResult",
    "coarse_levels",
    "content_layer",
    "features",
    "gram",
    "gram_loss",
    "layer_sweep",
    "noise_image",
    "periodic_component",
    "regularity",
    "regularity_score",
    "style_layers",
    "sweep_sets",
    "synthesize_texture",
    "total_variation",
]

_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.ELU, nn.Mish, nn.Hardtanh)


# --- layers from the layer index -------------------------------------------------------------------------

def _activations(model: Model) -> list[tuple[str, float]]:
    """(name, stride) of every spatial activation module, in forward order."""
    out = []
    for info in model.layers.spatial():
        if isinstance(model.layers.modules[info.name], _ACTS) and not info.rf.whole:
            out.append((info.name, float(info.rf.stride[0])))
    if not out:  # activations called functionally (GoogLeNet, Inception) or custom modules: the stage outputs
        out = [(n, float(model.layers[n].rf.stride[0])) for n in model.layers.stages()
               if not model.layers[n].rf.whole]
    if not out:
        raise UserError(f"{model.name} has no activation modules with a spatial output; pass --layers")
    return out


def _levels(model: Model) -> list[list[str]]:
    """Activations grouped by resolution level (stride), shallow to deep."""
    levels: dict[float, list[str]] = {}
    for name, stride in _activations(model):
        levels.setdefault(stride, []).append(name)
    return [levels[s] for s in sorted(levels)]


def _pre(model: Model, name: str) -> str:
    """The layer whose output feeds activation ``name`` (the one just before it in forward order, same shape)."""
    names = model.layers.names()
    i = names.index(name)
    shape = model.layers[name].shape
    for j in range(i - 1, -1, -1):
        cand = names[j]
        if model.layers[cand].shape == shape and not name.startswith(cand + "."):
            return cand
    return name


def style_layers(model: Model, *, count: int = 5, pre_activation: bool = False) -> list[str]:
    """Default style / texture layers: the first activation at each of the ``count`` shallowest resolutions.

    On VGG-19 this is ``relu1_1 ... relu5_1`` (Gatys et al. 2016). ``pre_activation`` returns the tensors
    feeding those activations (convolution or normalisation outputs) instead.
    """
    names = [lv[0] for lv in _levels(model)][:count]
    return [_pre(model, n) for n in names] if pre_activation else names


def content_layer(model: Model) -> str:
    """Default content layer: the second activation of the fourth resolution level (VGG-19: ``relu4_2``)."""
    levels = _levels(model)
    level = levels[min(3, len(levels) - 1)]
    return level[min(1, len(level) - 1)]


def sweep_sets(model: Model, *, pre_activation: bool = False) -> list[list[str]]:
    """Growing layer sets for the shallow-to-deep figure: ``[l1], [l1, l2], ..., [l1..l5]``."""
    layers = style_layers(model, pre_activation=pre_activation)
    return [layers[: i + 1] for i in range(len(layers))]


# --- feature extraction ----------------------------------------------------------------------------------

def features(model: Model, x: torch.Tensor, layers: Sequence[str], *, grad: bool = False) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for the pixel batch ``x``, stopping the forward pass after the deepest one."""
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx, Tap(model, list(layers), stop=True, detach=not grad) as tap:
        tap.run(x)
        return {name: tap.outputs[name] for name in layers}


@dataclass
class GramTargets:
    """Target Gram matrices per layer, possibly a weighted blend of several style images (Gatys et al. 2016)."""

    grams: dict[str, torch.Tensor]
    layer_weights: dict[str, float]

    @classmethod
    def from_images(cls, model: Model, images: Sequence[torch.Tensor], layers: Sequence[str], *,
                    weights: Sequence[float] | None = None, layer_weights: Sequence[float] | None = None
                    ) -> GramTargets:
        """Grams of each pixel image ``(1, 3, H, W)`` blended by ``weights`` (normalised to sum to 1)."""
        if not images:
            raise UserError("need at least one style image")
        w = list(weights) if weights is not None else [1.0] * len(images)
        if len(w) != len(images):
            raise UserError(f"got {len(w)} style weights for {len(images)} style images")
        if any(v < 0 for v in w) or sum(w) <= 0:
            raise UserError(f"style weights must be >= 0 with a positive sum, got {w}")
        w = [v / sum(w) for v in w]
        grams: dict[str, torch.Tensor] = {}
        for img, wi in zip(images, w):
            feats = features(model, img, layers)
            for name in layers:
                g = gram(feats[name].float())[0] * wi
                grams[name] = grams[name] + g if name in grams else g
        lw = list(layer_weights) if layer_weights is not None else [1.0 / len(layers)] * len(layers)
        return cls(grams, dict(zip(layers, lw)))

    def loss(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum over layers of the scale-free Gram distance, one value per image ``(N,)``."""
        total = None
        for name, target in self.grams.items():
            term = gram_loss(gram(feats[name].float()), target) * self.layer_weights[name]
            total = term if total is None else total + term
        assert total is not None
        return total

    def objective(self) -> GramStyle:
        """These targets as an objective of the core loop (:mod:`convlens.core.objectives`)."""
        return GramStyle(self)


class GramStyle(Objective):
    """Scale-free Gram loss ``sum_l w_l |G_l(x) - A_l|^2 / |A_l|^2`` as a core objective (minimise it).

    The core's :func:`~convlens.core.objectives.gram_match` keeps the paper's absolute scale, which makes
    deep layers with large activations dominate; dividing by the target's magnitude lets one weight serve
    every layer, image and network.
    """

    def __init__(self, targets: GramTargets) -> None:
        self.targets = targets
        self.layers = tuple(targets.grams)

    def __call__(self, rec: Recorded) -> torch.Tensor:
        return self.targets.loss({name: rec.act(name) for name in self.layers})

    def __repr__(self) -> str:
        return f"gram_style({list(self.layers)})"


class SpectrumMatch(Objective):
    """Scale-free distance of the image's Fourier amplitude, channel by channel, to a target's,
    ``|(|X| - A)|^2 / |A|^2``, one value per image (minimise it): the spectrum constraint of Liu, Gousseau & Xia
    (2016), which keeps the periods of regular textures (brick rows, mortar lines) that Gram statistics alone lose.

    The target ``A`` is the amplitude of each channel of the sample's periodic component
    (:func:`periodic_component`, Moisan 2011; mean removed), resampled in cycles per pixel to the size of each
    image it is compared with, so the output can have any size. Matching the three channels, not only their
    mean, also asks for the sample's colour at each frequency: on a grey sample the colour speckle that the
    Grams leave at high frequencies costs as much as wrong luminance.
    """

    uses_image = True

    def __init__(self, sample: torch.Tensor) -> None:
        g = periodic_component(sample.float())
        self.shifted = torch.fft.fftshift(torch.fft.fft2(g - g.mean((-2, -1), keepdim=True)).abs(), dim=(-2, -1))
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def target(self, h: int, w: int) -> torch.Tensor:
        """The sample's amplitude spectra on the frequency grid of an ``h x w`` image (unshifted, ``(C, h, w)``)."""
        if (h, w) not in self._cache:
            sh, sw = self.shifted.shape[-2:]
            fy = torch.fft.fftfreq(h, device=self.shifted.device)
            fx = torch.fft.fftfreq(w, device=self.shifted.device)
            # index of frequency f in the shifted sample spectrum: f * n + n // 2; to grid_sample's [-1, 1]
            uy = (fy * sh + sh // 2) / max(sh - 1, 1) * 2 - 1
            ux = (fx * sw + sw // 2) / max(sw - 1, 1) * 2 - 1
            grid = torch.stack(torch.broadcast_tensors(ux[None, :], uy[:, None]), -1)[None]
            a = F.grid_sample(self.shifted, grid, mode="bilinear", padding_mode="border", align_corners=True)
            self._cache[(h, w)] = a[0] * math.sqrt(h * w / (sh * sw))  # amplitude grows as sqrt(pixels)
        return self._cache[(h, w)]

    def __call__(self, rec: Recorded) -> torch.Tensor:
        assert rec.image is not None
        g = rec.image.float()
        amp = torch.fft.fft2(g - g.mean((-2, -1), keepdim=True)).abs()
        a = self.target(*g.shape[-2:])
        return (amp - a).pow(2).flatten(1).sum(1) / a.pow(2).sum().clamp_min(1e-12)

    def __repr__(self) -> str:
        return f"spectrum_match({tuple(self.shifted.shape[-2:])})"


def periodic_component(g: torch.Tensor) -> torch.Tensor:
    """The periodic component of images ``(..., H, W)`` (Moisan 2011, "Periodic plus smooth image decomposition").

    The DFT treats an image as one tile of a periodic plane, so the jump between its opposite edges puts a bright
    cross on the frequency axes of its spectrum. Removing the smooth component, the solution of a Poisson
    equation driven by those jumps, removes the cross and keeps the texture; a synthesis matched to the raw
    spectrum would recreate the jump with a dark (or light) strip along one edge."""
    v = torch.zeros_like(g)
    dy, dx = g[..., -1, :] - g[..., 0, :], g[..., :, -1] - g[..., :, 0]
    v[..., 0, :] += dy
    v[..., -1, :] -= dy
    v[..., :, 0] += dx
    v[..., :, -1] -= dx
    h, w = g.shape[-2:]
    cy = torch.cos(2 * math.pi * torch.arange(h, dtype=g.dtype, device=g.device) / h)[:, None]
    cx = torch.cos(2 * math.pi * torch.arange(w, dtype=g.dtype, device=g.device) / w)[None]
    den = 2 * cy + 2 * cx - 4
    den[0, 0] = 1.0
    smooth_hat = torch.fft.fft2(v) / den
    smooth_hat[..., 0, 0] = 0
    return g - torch.fft.ifft2(smooth_hat).real


# --- texture synthesis -----------------------------------------------------------------------------------

@dataclass
class TextureResult:
    """A synthesised texture ``(1, 3, H, W)`` in [0, 1], the layers used, the final style loss, steps and seconds;
    ``sample`` is the sample as it was measured (resized to ``sample_size``) and ``regularity`` compares the
    dominant periods of the two (:func:`regularity`, :func:`regularity_score`)."""

    image: torch.Tensor
    layers: list[str]
    style_loss: float
    tv_loss: float
    steps: int
    seconds: float
    sample: torch.Tensor
    regularity: TextureRegularity
    history: list[float] = field(default_factory=list)
    octaves: int = 1

    def to_dict(self) -> dict[str, object]:
        """The numbers of ``result.json``: layers, losses, steps, seconds, size (width, height), coarse-to-fine
        levels used, regularity."""
        return {"layers": self.layers, "style_loss": self.style_loss, "tv_loss": self.tv_loss, "steps": self.steps,
                "octaves": self.octaves,
                "seconds": round(self.seconds, 3), "size": [self.image.shape[-1], self.image.shape[-2]],
                "regularity": self.regularity.to_dict()}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean neighbour-difference magnitude, one value per image ``(N,)``: the core's ``total_variation(beta=1)``."""
    return tv_objective(beta=1.0)(Recorded(image=x))


def noise_image(like: torch.Tensor, size: tuple[int, int], gen: torch.Generator, *, amount: float = 0.25,
                cell: int = 8, grey: bool = False) -> torch.Tensor:
    """Smooth random start ``(1, 3, H, W)``: the mean colour of ``like`` plus noise drawn at 1/``cell`` resolution.

    Pixel-level noise partly survives under networks whose stem has stride 2 (it is nearly invisible to them),
    so the noise is made low-frequency. ``grey`` draws the same noise for the three channels (no false colours
    to remove: colour comes from the mean and from what the Grams ask for).
    """
    h, w = size
    noise = torch.randn(1, 1 if grey else 3, max(2, h // cell), max(2, w // cell), generator=gen)
    up = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    return (like.mean((2, 3), keepdim=True).cpu() + amount * up).clamp(0, 1)


def synthesize_texture(model: Model, sample: torch.Tensor, *, size: tuple[int, int] | None = None,
                       layers: Sequence[str] | None = None, steps: int = 300, tv_weight: float = 0.05,
                       seed: int = 0, sample_size: int | None = 256, spectrum_weight: float = 1.0,
                       octaves: int = 2, callback=None) -> TextureResult:
    """Synthesise a texture from noise whose Gram statistics match ``sample`` (Gatys, Ecker & Bethge 2015).

    Runs the core loop (:func:`convlens.core.optimize`) with L-BFGS on raw pixels; the objective is the Gram
    distance plus ``spectrum_weight`` times the spectrum constraint.

    Args:
        model: the network whose features describe the texture.
        sample: pixel image ``(1, 3, h, w)`` in [0, 1].
        size: output ``(H, W)``; any size, larger than the sample included (default: the sample's).
        layers: layers whose Grams are matched (default: :func:`style_layers` before the activations).
        steps: L-BFGS steps in all (split over the levels).
        tv_weight: a small total-variation weight against the checkerboard of stride-2 padding.
        sample_size: resize the sample's longer side to this before measuring it (``None`` keeps it).
        spectrum_weight: weight of :class:`SpectrumMatch`, the sample's Fourier amplitude (Liu, Gousseau & Xia
            2016), which keeps the periods of regular textures (brick rows, mortar lines); 0 = Gram matrices only.
        octaves: at most this many coarse-to-fine levels (:func:`coarse_levels` caps it by the sample's size)
            at 1/2^k of the size, sample and output alike; each starts from the
            previous result upsampled, and the finest gets the most steps (2 levels: a third, then two thirds).
            Large structures first: at half size the deep layers see whole bricks, so the faces and their rows
            form there, and the full-size level sharpens the mortar lines (1 level alone leaves vertical streaks).
        callback: ``callback(step, loss)`` after every step.

    Returns:
        :class:`TextureResult`; ``style_loss`` is the scale-free Gram distance (0 = identical statistics).
    """
    started = time.perf_counter()
    if octaves < 1 or steps < 1:
        raise UserError("steps and octaves must be at least 1")
    sample = sample.to(model.device).float()
    if sample_size:
        sample = _resize_long(sample, sample_size)
    layers = list(layers) if layers else style_layers(model, pre_activation=True)
    for name in layers:
        model.layers[name]
    gen = torch.Generator().manual_seed(seed)
    level: dict[str, Any] = {}  # the current level's sample and Gram targets
    octaves = min(octaves, coarse_levels(model, sample, layers))

    def objective_at(hw: tuple[int, int], f: float) -> Objective:
        level["sample"] = s_l = _resize_long(sample, max(16, round(max(sample.shape[-2:]) / f)))
        level["targets"] = GramTargets.from_images(model, [s_l], layers)
        objective: Objective = level["targets"].objective()
        return objective + spectrum_weight * SpectrumMatch(s_l) if spectrum_weight else objective

    history: list[float] = []
    x = coarse_to_fine(model, size or (int(sample.shape[-2]), int(sample.shape[-1])),
                       [2.0 ** (octaves - 1 - i) for i in range(octaves)], objective_at,
                       lambda hw: noise_image(level["sample"], hw, gen, cell=4, grey=True), steps=steps,
                       tv_weight=tv_weight, seed=seed, history=history, upsample="bicubic",
                       callback=None if callback is None else (lambda i, img, loss: callback(i, loss)))
    with torch.no_grad():
        s = float(level["targets"].loss(features(model, x, layers)).sum())
        tv = float(total_variation(x).sum())
    x, measured = x.cpu(), sample.cpu()
    reg = TextureRegularity(regularity(measured), regularity(x), regularity_score(measured, x))
    return TextureResult(x, layers, s, tv, len(history), time.perf_counter() - started, measured, reg, history,
                         octaves)


def coarse_levels(model: Model, sample: torch.Tensor, layers: Sequence[str]) -> int:
    """How many coarse-to-fine levels ``sample`` allows: halving stops before the deepest layer of ``layers`` sees
    fewer than 4 x 4 positions of the sample's shorter side (at 128 px on a stride-32 network the half level would
    shrink 9-px bricks to 4.5 px, below what the shallow layers resolve, and the coarse start then hurts)."""
    stride = max(float(model.layers[name].rf.stride[0]) for name in layers)
    return max(1, 1 + math.floor(math.log2(min(sample.shape[-2:]) / (4 * stride))))


def coarse_to_fine(model: Model, size: tuple[int, int], factors: Sequence[float],
                   objective_at: Callable[[tuple[int, int], float], Objective],
                   start: Callable[[tuple[int, int]], torch.Tensor], *, steps: int, tv_weight: float, seed: int = 0,
                   history: list[float] | None = None, upsample: str = "bilinear",
                   callback: Callable[[int, torch.Tensor, float], None] | None = None) -> torch.Tensor:
    """The pixel loop of texture synthesis and style transfer: L-BFGS on raw pixels (plus ``tv_weight`` times the
    total variation) at ``size / f`` for each ``f`` of ``factors``, coarse to fine.

    ``objective_at(hw, f)`` builds a level's objective (its targets are measured at that level's scale);
    ``start(hw)`` is the first level's image, later levels start from the previous result upsampled
    (``upsample`` mode). Of ``steps`` in all, each level gets half as many as the next finer one. ``history``
    (if given) is extended by every step's loss as the levels finish; ``callback(step, image, loss)`` counts
    steps over all levels. Returns the last level's image ``(1, 3, H, W)``.
    """
    shares = [2.0 ** -(len(factors) - 1 - i) for i in range(len(factors))]
    history = [] if history is None else history
    x: torch.Tensor | None = None
    for i, f in enumerate(factors):
        hw = (max(16, round(size[0] / f)), max(16, round(size[1] / f)))
        objective = objective_at(hw, f)
        x = start(hw) if x is None else F.interpolate(x, size=hw, mode=upsample, align_corners=False).clamp(0, 1)
        done = len(history)

        def cb(step: int, img: torch.Tensor, loss: float, done: int = done) -> None:
            if callback is not None:
                callback(done + step, img, loss)

        res = optimize(model, objective, PixelImage(x), regularizers=[tv_weight * tv_objective(beta=1.0)],
                       steps=max(1, round(steps * shares[i] / sum(shares))), optimizer="lbfgs", maximize=False,
                       seed=seed, callback=cb)
        history += res.losses
        x = res.images[:1]
    assert x is not None
    return x


def layer_sweep(model: Model, sample: torch.Tensor, *, size: tuple[int, int] | None = None, steps: int = 200,
                seed: int = 0, pre_activation: bool = True, layers: Sequence[str] | None = None,
                spectrum_weight: float = 0.0, octaves: int = 1, **kw) -> list[TextureResult]:
    """Textures from growing layer sets, shallow to deep (Gatys et al. 2015, Fig. 2): small structures from the
    first layers alone, larger and more object-like ones as deeper layers join. The sets are the prefixes of
    ``layers`` (default: :func:`sweep_sets`). Gram matrices only and one scale by default (``spectrum_weight=0``,
    ``octaves=1``): the sweep shows what the layers capture, which the spectrum constraint and the coarse level
    would mask."""
    sets = [list(layers[: i + 1]) for i in range(len(layers))] if layers else sweep_sets(
        model, pre_activation=pre_activation)
    return [synthesize_texture(model, sample, size=size, layers=s, steps=steps, seed=seed,
                               spectrum_weight=spectrum_weight, octaves=octaves, **kw) for s in sets]


def _resize_long(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = side / max(h, w)
    if math.isclose(scale, 1.0):
        return x
    nh, nw = max(16, round(h * scale)), max(16, round(w * scale))
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


# --- regularity: the dominant period of the 2-D power spectrum -------------------------------------------

@dataclass
class Regularity:
    """The dominant spatial frequency of a grey image's power spectrum and how strongly it stands out.

    ``frequency`` is ``(fy, fx)`` in cycles per pixel (``fy >= 0``), ``period`` its wavelength ``1 / |f|`` in
    pixels (e.g. the brick rows' spacing), ``angle`` the direction of ``f`` in degrees (90 = horizontal stripes),
    ``peak_share`` the fraction of the non-DC power within ``band`` cycles/pixel of ``±f``.
    """

    frequency: tuple[float, float]
    period: float
    angle: float
    peak_share: float

    def to_dict(self) -> dict[str, object]:
        return {"frequency": [round(v, 5) for v in self.frequency], "period": round(self.period, 2),
                "angle": round(self.angle, 1), "peak_share": round(self.peak_share, 5)}


@dataclass
class TextureRegularity:
    """The sample's and the synthesis's dominant period and the :func:`regularity_score` of the synthesis."""

    sample: Regularity
    synthesis: Regularity
    score: float

    def to_dict(self) -> dict[str, object]:
        return {"sample": self.sample.to_dict(), "synthesis": self.synthesis.to_dict(), "score": round(self.score, 4)}


def _power(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hann-windowed power spectrum of the grey image of ``(1, 3, H, W)``; its frequency grids (cycles/pixel)."""
    # luma, as a viewer sees it (the spectrum constraint matches the channels instead): the
    # measure stays independent of what the constraint matches
    g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[0].double() if x.shape[1] == 3 else x[0, 0].double()
    h, w = g.shape
    win = torch.hann_window(h, periodic=False, dtype=g.dtype)[:, None] * torch.hann_window(w, periodic=False,
                                                                                           dtype=g.dtype)[None]
    p = torch.fft.fft2((g - g.mean()) * win).abs().pow(2)
    fy = torch.fft.fftfreq(h, dtype=g.dtype)[:, None].expand(h, w)
    fx = torch.fft.fftfreq(w, dtype=g.dtype)[None].expand(h, w)
    return p, fy, fx


def _share(p: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, f: tuple[float, float], band: float) -> float:
    near = ((fy - f[0]).pow(2) + (fx - f[1]).pow(2) <= band ** 2) | ((fy + f[0]).pow(2) + (fx + f[1]).pow(2)
                                                                     <= band ** 2)
    return float(p[near].sum() / p.sum().clamp_min(1e-30))


def _band(image: torch.Tensor, band: float | None) -> float:
    """The peak neighbourhood's radius: ``band``, or 0.01 cycles per pixel but at least 1.5 frequency bins."""
    return band if band is not None else max(0.01, 1.5 / min(image.shape[-2:]))


def regularity(image: torch.Tensor, *, min_period: float = 3.0, max_period: float | None = None,
               band: float | None = None) -> Regularity:
    """The dominant period of ``image`` ``(1, 3, H, W)``: the strongest peak of its grey, Hann-windowed 2-D power
    spectrum between periods ``min_period`` and ``max_period`` (default: a quarter of the shorter side) pixels.

    Regular textures (brick rows, mortar lines, weaves) have a sharp peak there; Gram statistics alone tend to
    lose it (Liu, Gousseau & Xia 2016). ``band`` is the radius, in cycles per pixel, of the peak's neighbourhood
    whose power share :class:`Regularity` reports (default: 0.01, at least 1.5 frequency bins of ``image``).
    """
    band = _band(image, band)
    p, fy, fx = _power(image)
    r = (fy.pow(2) + fx.pow(2)).sqrt()
    lo = 1.0 / (max_period or min(image.shape[-2:]) / 4)
    q = torch.where((r >= lo) & (r <= 1.0 / min_period), p, torch.zeros_like(p))
    i = int(q.argmax())
    f = (float(fy.flatten()[i]), float(fx.flatten()[i]))
    if f[0] < 0 or (f[0] == 0 and f[1] < 0):
        f = (-f[0], -f[1])
    share = _share(p, fy, fx, f, band)
    return Regularity(f, 1.0 / float(r.flatten()[i]), math.degrees(math.atan2(f[0], f[1])), share)


def regularity_score(source: torch.Tensor, synthesis: torch.Tensor, *, band: float | None = None, **kw) -> float:
    """How much of ``synthesis``'s power sits at ``source``'s dominant frequency, relative to the source itself:
    1 = as regular as the source along its dominant period, 0 = none of it. Both ``(1, 3, H, W)``, any sizes
    (frequencies are in cycles per pixel; one ``band`` for both, by default the source's)."""
    band = _band(source, band)
    src = regularity(source, band=band, **kw)
    p, fy, fx = _power(synthesis)
    return _share(p, fy, fx, src.frequency, band) / max(src.peak_share, 1e-12)
