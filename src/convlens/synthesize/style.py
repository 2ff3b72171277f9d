"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016).

The output image is changed until its deep features match the content photo's at one layer and its Gram
matrices match the painting's at several layers, with a small total-variation term. Every term is
scale-free (divided by its target's magnitude), so one set of weights serves every layer, image and network.
Several styles are blended by mixing their Gram matrices with weights; ``style_scale`` resizes the painting
(bigger strokes); ``original_colors`` transfers luminance only and keeps the photo's chrominance (Gatys et al.
2017, "Controlling perceptual factors"); ``octaves`` runs coarse-to-fine; ``dream_weight`` adds a DeepDream term
(Mordvintsev et al. 2015) that amplifies whatever one layer sees.

The classic network is VGG-19 (``torchvision:vgg19``) with ``relu1_1 ... relu5_1`` for style and ``relu4_2``
for content; these are exactly what :func:`~convlens.synthesize.texture.style_layers` and
:func:`~convlens.synthesize.texture.content_layer` compute from its layer index. The embedded
EfficientNet-Lite0 works offline with the same rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.objectives import Objective, feature_match, layer_norm
from ..errors import UserError
from ..models.model import Model
from .dream import default_dream_layer
from .texture import (
    GramTargets,
    _resize_long,
    coarse_to_fine,
    content_layer,
    features,
    noise_image,
    style_layers,
    total_variation,
)

__all__ = [
    "StyleResult",
    "default_weights",
    "keep_colors",
    "match_luminance",
    "rgb_to_yuv",
    "style_objective",
    "style_transfer",
    "yuv_to_rgb",
]

# BT.601 YUV (the analogue-video one; luminance Y in [0, 1], U and V centred on 0)
_RGB2YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
_YUV2RGB = torch.linalg.inv(_RGB2YUV)


def rgb_to_yuv(x: torch.Tensor) -> torch.Tensor:
    """Pixel batch ``(N, 3, H, W)`` RGB -> YUV (BT.601)."""
    return torch.einsum("ij,njhw->nihw", _RGB2YUV.to(x), x)


def yuv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`rgb_to_yuv`."""
    return torch.einsum("ij,njhw->nihw", _YUV2RGB.to(x), x)


def keep_colors(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of ``stylized`` with the chrominance (U, V) of ``content`` (resized to match), clipped to [0, 1]."""
    if content.shape[-2:] != stylized.shape[-2:]:
        content = F.interpolate(content, size=stylized.shape[-2:], mode="bilinear", align_corners=False)
    y = rgb_to_yuv(stylized)[:, :1]
    uv = rgb_to_yuv(content)[:, 1:]
    return yuv_to_rgb(torch.cat([y, uv], 1)).clamp(0, 1)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance as a grey image, shifted and scaled to the content luminance's mean and std."""
    ys, yc = rgb_to_yuv(style)[:, :1], rgb_to_yuv(content)[:, :1]
    y = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def _grey(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_yuv(x)[:, :1].clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def default_weights(model: Model) -> tuple[float, float]:
    """Default ``(style_weight, tv_weight)`` of the scale-free losses (content weight 1).

    Tuned by looking at tubingen x starry_night / the_scream at 256 px on EfficientNet-Lite0; the same
    values serve VGG-19 because every term is divided by its target's magnitude.
    """
    return 3.0, 0.2


@dataclass
class StyleResult:
    """A stylised image ``(1, 3, H, W)`` in [0, 1] with its final scale-free losses, steps and seconds.

    ``content_loss`` is ``|F - F_c|^2 / |F_c|^2`` at the content layer, ``style_loss`` the layer-averaged Gram
    distance ``|G - G_s|^2 / |G_s|^2`` (0 = the painting's statistics), ``tv_loss`` the mean absolute
    neighbour difference; all unweighted. ``history`` is the weighted total per function evaluation.
    """

    image: torch.Tensor
    content_loss: float
    style_loss: float
    tv_loss: float
    steps: int
    seconds: float
    content_layer: str
    style_layers: list[str]
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """The numbers of ``result.json``: losses, steps, seconds, layers and size (width, height)."""
        return {"content_loss": self.content_loss, "style_loss": self.style_loss, "tv_loss": self.tv_loss,
                "steps": self.steps, "seconds": round(self.seconds, 3), "content_layer": self.content_layer,
                "style_layers": self.style_layers, "size": [self.image.shape[-1], self.image.shape[-2]]}


def style_objective(model: Model, content: torch.Tensor, targets: GramTargets, content_layer: str, *,
                    content_weight: float = 1.0, style_weight: float = 3.0, dream_weight: float = 0.0,
                    dream_layer: str | None = None) -> Objective:
    """``content_weight * feature_match + style_weight * gram_style [- dream_weight * layer_norm]`` (minimised).

    Built from the core objectives; every term is scale-free: the content term is the relative feature error,
    the style term the relative Gram error, and the DeepDream term is divided by its value on the content and
    weighted in units of ``style_weight``.
    """
    fc = features(model, content, [content_layer])[content_layer]
    obj: Objective = content_weight * feature_match(content_layer, fc) + style_weight * targets.objective()
    if dream_weight:
        dl = dream_layer or content_layer
        ref = float(0.5 * features(model, content, [dl])[dl].float().pow(2).sum().clamp_min(1e-12))
        # in units of the style term: --dream 1 pushes as hard as the painting's statistics pull
        obj = obj - (dream_weight * style_weight / ref) * layer_norm(dl)
    return obj


def style_transfer(model: Model, content: torch.Tensor, styles: Sequence[torch.Tensor], *,
                   style_weights: Sequence[float] | None = None, content_weight: float = 1.0,
                   style_weight: float | None = None, tv_weight: float | None = None, style_scale: float = 1.0,
                   init: str = "content", original_colors: bool = False, size: int | None = 256,
                   steps: int = 200, octaves: int = 1, style_layers_: Sequence[str] | None = None,
                   content_layer_: str | None = None, pre_activation: bool = False, dream_weight: float = 0.0,
                   dream_layer: str | None = None, seed: int = 0,
                   callback: Callable[[int, float], None] | None = None) -> StyleResult:
    """Render ``content`` in the style of ``styles`` (Gatys, Ecker & Bethge 2016), by L-BFGS on the pixels.

    Args:
        model: the loss network (VGG-19 is the classic; the embedded EfficientNet-Lite0 works offline).
        content: pixel image ``(1, 3, H, W)`` in [0, 1].
        styles: one or more pixel images; several are blended through their Gram matrices.
        style_weights: blend weights of the styles (normalised to sum to 1; default equal).
        content_weight, style_weight, tv_weight: weights of the scale-free terms.
        style_scale: the style image's longer side is ``style_scale * size`` (bigger = larger strokes); above 1
            one more coarse level runs first, at ``1 / style_scale`` of the size with the painting at scale 1,
            so the strokes come out ``style_scale`` times larger.
        init: ``"content"`` (default: sharp buildings, the painting's palette and strokes) or ``"noise"``
            (stronger stylisation, but stray false colours with the clamped-pixel L-BFGS).
        original_colors: transfer luminance only and keep the content's chrominance.
        size: longer side of the output (``None`` keeps the content's size).
        steps: L-BFGS function evaluations in all (split over the levels, most at the finest).
        octaves: coarse-to-fine levels; each starts from the previous result upsampled.
        style_layers_, content_layer_: override the defaults computed from the layer index.
        pre_activation: take the style features before the activations.
        dream_weight, dream_layer: add a DeepDream term on ``dream_layer`` (default: DeepDream's own layer,
            :func:`~convlens.synthesize.dream.default_dream_layer`; not the content layer, where the content term
            pulls straight back and any weight below 1 only scales the features by ``1 / (1 - weight)``).
        seed: noise seed.

    Returns:
        :class:`StyleResult` with the image and its final unweighted content, style and TV losses.
    """
    started = time.perf_counter()
    sw, tw = default_weights(model)
    style_weight = sw if style_weight is None else style_weight
    tv_weight = tw if tv_weight is None else tv_weight
    if init not in ("noise", "content"):
        raise UserError(f"init must be 'noise' or 'content', got {init!r}")
    if octaves < 1 or steps < 1:
        raise UserError("steps and octaves must be at least 1")
    if style_scale <= 0:
        raise UserError(f"style scale must be positive, got {style_scale}")
    dev = model.device
    content = content.to(dev).float()
    if size:
        content = _resize_long(content, size)
    slayers = list(style_layers_) if style_layers_ else style_layers(model, pre_activation=pre_activation)
    clayer = content_layer_ or content_layer(model)
    for name in [*slayers, clayer] + ([dream_layer] if dream_layer else []):
        model.layers[name]
    dlayer = dream_layer or default_dream_layer(model)
    style_imgs = [s.to(dev).float() for s in styles]  # resized per level below
    full_content = content
    if original_colors:
        style_imgs = [match_luminance(s, content) for s in style_imgs]
        content = _grey(content)

    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    # coarse-to-fine: 1/2^k of the output size; each level starts from the previous result upsampled, and
    # the finest level gets the most steps (half of them with two levels, and so on). A style scale above 1 puts
    # one more level in front, at 1/style_scale of the first, where the painting is as large as that level's
    # image (scale 1): the strokes it paints there come out style_scale times larger once upsampled, which the
    # network cannot be asked for directly (a magnified painting only looks blurred to it).
    levels: list[tuple[float, float]] = [(2.0 ** (octaves - 1 - i), style_scale) for i in range(octaves)]
    if style_scale > 1:
        levels.insert(0, (levels[0][0] * style_scale, 1.0))
    rel = {f: r for f, r in levels}  # the painting's scale relative to each level's image
    level: dict[str, Any] = {}  # the current level's content and Gram targets
    latest: list[torch.Tensor | None] = [None]  # the image of the last finished step, kept for Ctrl-C
    finished = [0]  # steps finished in all (the callback's count), for what an interrupted run reports

    def objective_at(hw: tuple[int, int], f: float) -> Objective:
        level["content"] = c_l = (F.interpolate(content, size=hw, mode="bilinear", align_corners=False,
                                                antialias=True) if f > 1 else content)
        s_l = [_resize_long(s, max(16, round(max(hw) * rel[f]))) for s in style_imgs]
        level["targets"] = GramTargets.from_images(model, s_l, slayers, weights=style_weights)
        return style_objective(model, c_l, level["targets"], clayer, content_weight=content_weight,
                               style_weight=style_weight, dream_weight=dream_weight, dream_layer=dlayer)

    def step(i: int, img: torch.Tensor, loss: float) -> None:
        latest[0], finished[0] = img, i
        if callback is not None:
            callback(i, loss)

    try:
        x = coarse_to_fine(model, (int(content.shape[-2]), int(content.shape[-1])), [f for f, _ in levels],
                           objective_at, lambda hw: noise_image(level["content"], hw, gen) if init == "noise"
                           else level["content"], steps=steps, tv_weight=tv_weight, seed=seed, history=history,
                           callback=step)
    except KeyboardInterrupt:  # hand back what was finished: the last step's image at the output size
        from ..interrupts import Interrupted

        img = latest[0]
        if img is None:  # not one step finished: nothing worth keeping
            raise
        img = F.interpolate(img[:1].float(), size=content.shape[-2:], mode="bilinear", align_corners=False)
        img = keep_colors(img.clamp(0, 1), full_content) if original_colors else img.clamp(0, 1)
        nan = float("nan")
        raise Interrupted(StyleResult(img.detach().cpu(), nan, nan, nan, max(len(history), finished[0]),
                                      time.perf_counter() - started,
                                      clayer, slayers, history)) from None
    targets = level["targets"]
    with torch.no_grad():
        feats = features(model, x, list(dict.fromkeys([*slayers, clayer])))
        fc = features(model, content, [clayer])[clayer].float()
        c_loss = float((feats[clayer].float() - fc).pow(2).sum() / fc.pow(2).sum().clamp_min(1e-12))
        s_loss = float(targets.loss(feats).sum())
        tv_loss = float(total_variation(x).sum())
    out = keep_colors(x, full_content) if original_colors else x
    return StyleResult(out.detach().cpu(), c_loss, s_loss, tv_loss, len(history), time.perf_counter() - started,
                       clayer, slayers, history)
