"""Class and unit visualization by optimising the input, and multifaceted visualization.

Three presets, each a set of settings of :func:`~convlens.core.optimize.optimize`:

* ``simonyan`` -- Simonyan, Vedaldi & Zisserman 2014: gradient ascent on ``S_c(I) - lambda ||I||^2`` from the
  zero (mean) image, raw pixels. Reaches high probability on the model that made it, with adversarial noise.
* ``yosinski`` -- Yosinski et al. 2015: raw pixels with L2 decay, Gaussian blur and clipping of pixels with
  small norm / small contribution, plus a random roll (jitter) each step; L1-normalised gradient steps.
* ``lucid`` -- Olah, Mordvintsev & Schubert 2017 (Lucid): Fourier-space image with decorrelated colour and
  transformation robustness (pad, jitter, wide random scale and rotation, two transformed copies per step).
  The preset that gives images a person -- and other networks -- recognise.

Multifaceted visualization (Nguyen, Yosinski & Clune 2016) clusters a class's images by their penultimate
features and starts one visualization from each cluster's mean image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..core.objectives import Objective, channel, class_logit, l2, neuron
from ..core.optimize import OptimizeResult, optimize
from ..core.params import FourierImage, ImageParam, PixelImage
from ..core.taps import activations
from ..core.transforms import Blur, ClipContribution, ClipNorm, Decay, Jitter, PostStep, Transform, standard_transforms
from ..errors import UserError
from ..images import ImageLike
from ..models.model import Model

__all__ = ["Preset", "PRESETS", "preset", "visualize", "visualize_class", "visualize_unit", "multifaceted",
           "MultifacetedResult", "judge_probs", "kmeans", "penultimate_layer"]


@dataclass(frozen=True)
class Preset:
    """Settings of the loop that make one published recipe.

    Attributes:
        name: ``simonyan``, ``yosinski`` or ``lucid``.
        param: ``pixel`` or ``fft`` (Fourier + decorrelated colour).
        steps, lr, optimizer, copies: the loop's settings.
        l2: weight of the :func:`~convlens.core.objectives.l2` penalty (mean square around grey).
        decay, blur_sigma, blur_every, clip_norm, clip_contribution: Yosinski's post-step regularisers
            (percentiles for the clipping; 0 disables).
        pad, jitter, scale, degrees: transformation robustness (0 / (1, 1) disable).
    """

    name: str
    param: str = "pixel"
    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"
    copies: int = 1
    l2: float = 0.0
    decay: float = 0.0
    blur_sigma: float = 0.0
    blur_every: int = 4
    clip_norm: float = 0.0
    clip_contribution: float = 0.0
    pad: int = 0
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    degrees: float = 0.0

    def transforms(self) -> list[Transform]:
        if not (self.pad or self.degrees or self.scale != (1.0, 1.0)):
            return [Jitter(self.jitter)] if self.jitter else []  # DeepDream's roll: every pixel stays in view
        return standard_transforms(pad=self.pad, jitter_px=self.jitter, scale=self.scale, degrees=self.degrees)

    def post(self, center: float | torch.Tensor = 0.5) -> list[PostStep]:
        """Yosinski's post-step regularisers; decay and clipping pull towards ``center`` (grey, or an image)."""
        out: list[PostStep] = []
        if self.decay:
            out.append(Decay(self.decay, center))
        if self.blur_sigma:
            out.append(Blur(self.blur_sigma, self.blur_every))
        if self.clip_norm:
            out.append(ClipNorm(self.clip_norm, center))
        if self.clip_contribution:
            out.append(ClipContribution(self.clip_contribution, center))
        return out


PRESETS: dict[str, Preset] = {
    "simonyan": Preset("simonyan", param="pixel", steps=200, lr=0.01, l2=1.0),
    # L1-normalised steps (a step of lr in mean |pixel change|, whatever the gradient's scale), a light blur after
    # every step and a random roll by up to 16 px: Adam's per-pixel steps are mostly high frequencies that the
    # blur removes again, which left the images grey (std 8/255) and unrecognisable to other networks
    "yosinski": Preset("yosinski", param="pixel", steps=200, lr=0.02, optimizer="sgd-l1", decay=0.005,
                       blur_sigma=0.5, blur_every=1, clip_norm=10.0, clip_contribution=10.0, jitter=16),
    "lucid": Preset("lucid", param="fft", steps=192, lr=0.05, copies=2, pad=16, jitter=16, scale=(0.7, 1.3),
                    degrees=30.0),
}


def preset(name: str, **overrides: object) -> Preset:
    """The preset called ``name`` with some settings replaced, e.g. ``preset("lucid", steps=64)``."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


_preset_by_name = preset


def _param(p: Preset, model: Model, batch: int, size: tuple[int, int], init: torch.Tensor | None,
           gen: torch.Generator) -> ImageParam:
    if p.param == "fft":
        return FourierImage(init=init, size=size, batch=batch, generator=gen)
    if p.param == "pixel":
        if init is not None:
            return PixelImage(init=init, batch=batch)
        return PixelImage(size=size, batch=batch, fill=model.preprocess.mean)  # the zero of mean-subtracted input
    raise UserError(f"unknown parametrisation {p.param!r}; choose pixel or fft")


def visualize(model: Model, objective: Objective, *, preset: str | Preset = "lucid", batch: int = 1,
              size: int | tuple[int, int] | None = None, init: torch.Tensor | None = None, anchored: bool = False,
              seed: int = 0, progress: bool = False, snapshot_every: int = 0, **overrides: object) -> OptimizeResult:
    """Maximise ``objective`` over an image with one of the :data:`PRESETS` (``overrides`` replace its settings,
    e.g. ``steps=64`` or ``param="pixel"``).

    ``batch`` images are made at once (the objective may target each, e.g. ``class_logit([130, 9])``);
    ``init`` starts from given pixels ``(N, 3, H, W)`` instead of grey / random spectra; with ``anchored`` the
    decay and clipping pull towards ``init`` instead of grey (pixel presets). Returns the loop's
    :class:`~convlens.core.optimize.OptimizeResult`; ``values`` are the objective per image.
    """
    p = preset if isinstance(preset, Preset) else _preset_by_name(preset, **overrides)
    if isinstance(preset, Preset) and overrides:
        p = replace(p, **overrides)  # type: ignore[arg-type]
    hw = model.preprocess.size if size is None else ((size, size) if isinstance(size, int) else size)
    gen = torch.Generator().manual_seed(seed)
    param = _param(p, model, batch, hw, init, gen)
    regs = [p.l2 * l2(center=0.5)] if p.l2 else None
    center: float | torch.Tensor = 0.5
    if anchored and init is not None and isinstance(param, PixelImage):
        center = param.pixels.detach().clone().to(model.device)
    return optimize(model, objective, param, transforms=p.transforms(), regularizers=regs, post=p.post(center),
                    steps=p.steps, optimizer=p.optimizer, lr=p.lr, copies=p.copies, generator=gen,
                    progress=progress, snapshot_every=snapshot_every)


def visualize_class(model: Model, classes: int | str | Sequence[int | str], *, preset: str | Preset = "lucid",
                    **kwargs: object) -> OptimizeResult:
    """Images the model scores as ``classes`` (Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017).

    ``classes`` are indices or names (resolved by :meth:`Model.class_index`), one image per class, made in
    one batch. The objective is the pre-softmax score ``S_c``; ``values`` in the result are those scores.
    """
    items = [classes] if isinstance(classes, (int, str)) else list(classes)
    idx = [model.class_index(c) for c in items]
    return visualize(model, class_logit(idx), preset=preset, batch=len(idx), **kwargs)  # type: ignore[arg-type]


def visualize_unit(model: Model, layer: str, channels: int | Sequence[int], *, position: tuple[int, int] | None = None,
                   preset: str | Preset = "lucid", **kwargs: object) -> OptimizeResult:
    """Images that excite channels of ``layer`` (their mean over positions), or with ``position=(y, x)`` one
    neuron of each channel -- the feature visualizations of Olah et al. 2017. One image per channel."""
    model.layer(layer)  # unknown layer -> UserError with the closest names
    chans = [channels] if isinstance(channels, int) else list(channels)
    info = model.layers.get(layer)
    if info is not None:
        bad = [c for c in chans if not 0 <= c < info.channels]
        if bad:
            raise UserError(f"channel {bad[0]} out of range: {layer!r} has channels 0-{info.channels - 1}")
    obj = channel(layer, chans) if position is None else neuron(layer, chans, *position)
    return visualize(model, obj, preset=preset, batch=len(chans), **kwargs)  # type: ignore[arg-type]


# -- judging ------------------------------------------------------------------------------------------------

def quantize(images: torch.Tensor) -> torch.Tensor:
    """What an 8-bit PNG of the images holds, as pixels again."""
    return (images.detach().clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def judge_probs(judge: Model, images: torch.Tensor, classes: Sequence[int]) -> list[float]:
    """p(class) under ``judge`` for each 8-bit-quantised image, resized to the judge's input (no crop).

    A network that did not make the image is a fair test of recognisability: the model's own probability is
    reached by adversarial noise too.
    """
    x = judge.preprocess.resize_tensor(quantize(images).to(judge.device))
    probs = judge(x).float().softmax(-1)
    return [float(probs[i, c]) for i, c in enumerate(classes)]


# -- multifaceted -------------------------------------------------------------------------------------------

def kmeans(x: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ on rows of ``x`` ``(M, D)``: returns (assignments ``(M,)``, centres ``(k, D)``)."""
    if not 1 <= k <= x.shape[0]:
        raise UserError(f"k={k} clusters need at least {k} images; got {x.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    x = x.float().cpu()
    centres = [x[int(torch.randint(x.shape[0], (), generator=gen))]]
    for _ in range(1, k):
        d = torch.cdist(x, torch.stack(centres)).min(1).values.pow(2)
        centres.append(x[int(torch.multinomial(d / d.sum() if d.sum() > 0 else torch.ones_like(d), 1,
                                               generator=gen))])
    c = torch.stack(centres)
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iters):
        assign_new = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[assign_new == j]
            if len(members):
                c[j] = members.mean(0)
        if torch.equal(assign_new, assign):
            break
        assign = assign_new
    return assign, c


def penultimate_layer(model: Model) -> str:
    """The layer feeding the classifier (its input is the penultimate code): the last spatial layer before it."""
    names = [info.name for info in model.layers]
    last = model.layers.classifier()
    if last and last in names:
        i = names.index(last)
        for name in reversed(names[:i]):
            if name and not name.startswith(last):
                return name
    raise UserError("cannot find the penultimate layer; give layer=")


@dataclass
class MultifacetedResult:
    """One visualization per facet of a class (Nguyen et al. 2016).

    Attributes:
        result: the loop's result; ``result.images`` ``(k, 3, H, W)`` are the facets, ordered by cluster size.
        starts: the images the facets started from ``(k, 3, H, W)``: each the mean of the ``nearest`` members
            closest to its cluster's centre, with the contrast of one member.
        assignments: cluster of each input image ``(M,)`` (same order as the images given).
        targets: the class each facet maximises (all ``target``, or each facet's own class for ``target=None``).
        sizes: images per facet.
        layer: the layer whose features were clustered.
        facet_distance: mean cosine distance ``1 - cos`` between the facets' pooled features at ``layer``
            (over all pairs of facets): how different the facets are to the network; ``None`` for one facet.
        restart_distance: the same distance between each facet and its restarts (same start, other seeds),
            averaged; ``None`` without restarts. Facets are distinct when ``facet_distance`` is well above it.
        restarts: the restarts' results, one per extra seed.
    """

    result: OptimizeResult
    starts: torch.Tensor
    assignments: torch.Tensor
    targets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    layer: str = ""
    facet_distance: float | None = None
    restart_distance: float | None = None
    restarts: list[OptimizeResult] = field(default_factory=list)


def _codes(model: Model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Unit-length pooled features at ``layer`` ``(N, C)`` of pixel images ``(N, 3, H, W)``, 16 at a time."""
    feats = []
    for start in range(0, x.shape[0], 16):
        a = activations(model, x[start:start + 16].to(model.device), layer)[layer]
        feats.append(a.flatten(2).mean(2) if a.dim() == 4 else a.flatten(1))
    f = torch.cat(feats).float().cpu()
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _start_image(photos: torch.Tensor) -> torch.Tensor:
    """The mean of ``photos`` ``(M, 3, H, W)`` with one photo's contrast: averaging M different photos shrinks the
    spatial spread of the mean by up to sqrt(M) (a grey blur), so its deviations from its average colour are scaled
    back to the photos' mean spatial standard deviation (one gain for all channels, so hues stay)."""
    mean = photos.mean(0)
    avg = mean.mean((1, 2), keepdim=True)
    gain = photos.std((2, 3), correction=0).mean() / (mean - avg).pow(2).mean().sqrt().clamp_min(1e-6)
    return (avg + (mean - avg) * gain).clamp(0, 1)


def multifaceted(model: Model, target: int | str | None, images: Sequence[ImageLike] | torch.Tensor, *, k: int = 4,
                 layer: str | None = None, nearest: int = 15, restarts: int = 0, preset: str | Preset = "lucid",
                 size: int | tuple[int, int] | None = None, anchored: bool = True, seed: int = 0, progress: bool = False,
                 **overrides: object) -> MultifacetedResult:
    """Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016).

    The images are clustered (k-means) by their pooled features at ``layer`` (default: the penultimate layer);
    the mean of the ``nearest`` images closest to each cluster's centre (the paper's 15), its contrast scaled
    back to that of one photo (a plain mean of different photos is a grey blur), starts one
    visualization of class ``target``, so the facets (e.g. a whole animal, a head close-up, a group) come out
    separately. ``images`` are files / PIL images or a pixel batch -- photos of the class, or of a wider concept
    (all dog breeds). With ``target=None`` each facet targets its own class: the one the model gives the start's
    photos most (largest mean softmax probability over them) -- for a concept that spans classes, what the
    paper's one class is for photos of one class. ``restarts`` extra seeds per facet measure how much of the difference
    between facets is only the randomness of the loop (``restart_distance``). ``size`` resizes the starts
    (default: the model's input); ``preset`` and ``overrides`` set the loop as in :func:`visualize`.
    """
    if isinstance(images, torch.Tensor):
        x = images.to(model.device)
    else:
        if not images:
            raise UserError("multifaceted visualization needs images of the class")
        x = model.load(list(images))
    layer = layer or penultimate_layer(model)
    f = _codes(model, x, layer)
    assign, centres = kmeans(f, k, seed=seed)
    order = sorted(range(k), key=lambda j: -int((assign == j).sum()))
    starts, targets = [], []
    for j in order:
        idx = (assign == j).nonzero().flatten()
        near = idx[(f[idx] - centres[j]).norm(dim=1).argsort()[:max(1, nearest)]].to(x.device)
        starts.append(_start_image(x[near]))
        if target is None:
            with torch.no_grad():
                targets.append(int(model(x[near]).float().softmax(-1).mean(0).argmax()))
        else:
            targets.append(model.class_index(target))
    start = torch.stack(starts).cpu()
    if size is not None:
        hw = (size, size) if isinstance(size, int) else size
        start = torch.nn.functional.interpolate(start, size=hw, mode="bilinear", align_corners=False, antialias=True)
    runs = [visualize(model, class_logit(targets), preset=preset, batch=k, init=start.clamp(0.02, 0.98),
                      anchored=anchored, seed=seed + r, progress=progress, **overrides)  # type: ignore[arg-type]
            for r in range(restarts + 1)]
    codes = [_codes(model, run.images, layer) for run in runs]
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
    facet_d = float(sum(1 - codes[0][a] @ codes[0][b] for a, b in pairs) / len(pairs)) if pairs else None
    restart_d = (float(sum(1 - (codes[0] * c).sum(1).mean() for c in codes[1:]) / restarts) if restarts else None)
    remap = torch.empty(k, dtype=torch.long)
    for new, old in enumerate(order):
        remap[old] = new
    return MultifacetedResult(runs[0], start, remap[assign], targets, [int((assign == j).sum()) for j in order],
                              layer, facet_d, restart_d, runs[1:])
