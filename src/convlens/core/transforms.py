"""Per-step transforms: the robustness tricks that keep optimised images from becoming adversarial noise.

Two kinds, both small named classes with a readable ``repr``:

* **Differentiable transforms** (``x -> x'``, applied to the image before the network sees it, every step):
  :class:`Pad`, :class:`Jitter`, :class:`RandomScale`, :class:`RandomRotate`. The gradient flows back through
  them, so a jitter is undone on the gradient automatically -- the same as DeepDream's "roll, step, roll back"
  (Mordvintsev et al. 2015), and transformation robustness (Olah et al. 2017) when drawn at random.
* **Post-step operations** on raw pixels (:class:`~convlens.core.params.PixelImage` only), run after the
  optimiser step: :class:`Blur` every k steps, :class:`Decay`, :class:`ClipNorm`, :class:`ClipContribution`
  -- Yosinski et al. 2015's regularisers.

Randomness always comes from the ``torch.Generator`` the loop passes in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "jitter", "unjitter", "PostStep", "Blur",
           "Decay", "ClipNorm", "ClipContribution", "gaussian_blur", "standard_transforms"]


def _uniform(lo: float, hi: float, gen: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _randint(lo: int, hi: int, gen: torch.Generator | None) -> int:
    """Integer in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


class Transform:
    """A differentiable image transform ``(N, 3, H, W) -> (N, 3, H', W')`` drawn at random each call."""

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def jitter(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Roll the image by ``(dy, dx)`` pixels (wrapping around), as DeepDream does before each step."""
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def unjitter(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The exact inverse of :func:`jitter`."""
    return torch.roll(x, shifts=(-dy, -dx), dims=(-2, -1))


class Jitter(Transform):
    """Random shift by up to ``pixels`` in each direction.

    ``mode="roll"`` wraps around (DeepDream; the gradient is un-rolled by autograd); ``mode="crop"`` crops the
    image by ``pixels`` at a random offset (Lucid's jitter; output is ``2*pixels`` smaller).
    """

    def __init__(self, pixels: int, mode: str = "roll") -> None:
        if mode not in ("roll", "crop"):
            raise ValueError(f"mode must be 'roll' or 'crop', got {mode!r}")
        self.pixels = int(pixels)
        self.mode = mode

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        p = self.pixels
        if p <= 0:
            return x
        if self.mode == "roll":
            return jitter(x, _randint(-p, p, gen), _randint(-p, p, gen))
        h, w = x.shape[-2:]
        oy, ox = _randint(0, 2 * p, gen), _randint(0, 2 * p, gen)
        return x[..., oy:oy + h - 2 * p, ox:ox + w - 2 * p]

    def __repr__(self) -> str:
        return f"Jitter({self.pixels})" if self.mode == "roll" else f"Jitter({self.pixels}, mode='crop')"


class Pad(Transform):
    """Pad by ``pixels`` on each side (``mode`` ``constant`` with ``value``, or ``reflect``), so that jitter and
    rotation do not always cut the same border."""

    def __init__(self, pixels: int, mode: str = "constant", value: float = 0.5) -> None:
        self.pixels, self.mode, self.value = int(pixels), mode, float(value)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        p = self.pixels
        if self.mode == "constant":
            return F.pad(x, (p, p, p, p), mode="constant", value=self.value)
        return F.pad(x, (p, p, p, p), mode=self.mode)

    def __repr__(self) -> str:
        return f"Pad({self.pixels}, mode={self.mode!r})"


class RandomScale(Transform):
    """Resize by a factor drawn uniformly from ``[low, high]`` (bilinear)."""

    def __init__(self, low: float = 0.9, high: float = 1.1) -> None:
        self.low, self.high = float(low), float(high)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        s = _uniform(self.low, self.high, gen)
        h, w = x.shape[-2:]
        size = (max(8, round(h * s)), max(8, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def __repr__(self) -> str:
        return f"RandomScale({self.low:g}, {self.high:g})"


class RandomRotate(Transform):
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]`` (bilinear, border pixels repeated)."""

    def __init__(self, degrees: float = 10.0) -> None:
        self.degrees = float(degrees)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        a = math.radians(_uniform(-self.degrees, self.degrees, gen))
        c, s = math.cos(a), math.sin(a)
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta[None].expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __repr__(self) -> str:
        return f"RandomRotate({self.degrees:g})"


def standard_transforms(*, pad: int = 16, jitter_px: int = 16, scale: tuple[float, float] = (0.7, 1.3),
                        degrees: float = 30.0) -> list[Transform]:
    """Transformation robustness (Olah et al. 2017): pad, jitter, random scale, random rotation, fine jitter."""
    return [Pad(pad), Jitter(jitter_px, mode="crop"), RandomScale(*scale), RandomRotate(degrees),
            Jitter(max(1, jitter_px // 4), mode="crop")]


# -- post-step operations on raw pixels (Yosinski et al. 2015) ---------------------------------------------------

class PostStep:
    """An in-place edit of the pixels after an optimiser step: ``op(pixels, grad, step)``."""

    every: int = 1

    def __call__(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> None:  # pragma: no cover
        raise NotImplementedError


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with reflected borders (radius ``ceil(3 sigma)``)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    y = F.pad(x, (r, r, 0, 0), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=mode)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Blur(PostStep):
    """Gaussian blur with ``sigma`` every ``every`` steps (Yosinski et al. 2015: removes high frequencies)."""

    def __init__(self, sigma: float = 0.5, every: int = 4) -> None:
        self.sigma, self.every = float(sigma), int(every)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> None:
        if self.every > 0 and (step + 1) % self.every == 0:
            pixels.copy_(gaussian_blur(pixels, self.sigma))

    def __repr__(self) -> str:
        return f"Blur(sigma={self.sigma:g}, every={self.every})"


class Decay(PostStep):
    """Shrink towards ``center`` by ``rate`` each step (Yosinski et al.'s L2 decay). ``center`` is a grey level or
    an image ``(N, 3, H, W)`` (e.g. a multifaceted start, so the decay keeps its colours and layout)."""

    def __init__(self, rate: float = 0.01, center: float | torch.Tensor = 0.5) -> None:
        self.rate, self.center = float(rate), _center(center)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> None:
        pixels.sub_(self.center).mul_(1 - self.rate).add_(self.center)

    def __repr__(self) -> str:
        return f"Decay({self.rate:g})" if isinstance(self.center, float) else f"Decay({self.rate:g}, center=image)"


def _center(center: float | torch.Tensor) -> float | torch.Tensor:
    return center.detach() if isinstance(center, torch.Tensor) else float(center)


def _reset(pixels: torch.Tensor, mask: torch.Tensor, center: float | torch.Tensor) -> None:
    """Set ``pixels`` under ``mask`` ``(N, 1, H, W)`` to ``center`` (a grey level or an image)."""
    if isinstance(center, float):
        pixels.masked_fill_(mask.expand_as(pixels), center)
    else:
        pixels.copy_(torch.where(mask, center.to(pixels), pixels))


def _below_percentile(score: torch.Tensor, pct: float) -> torch.Tensor:
    """Mask ``(N, 1, H, W)`` of positions whose score is below the per-image ``pct`` percentile."""
    flat = score.reshape(score.shape[0], -1)
    thresh = torch.quantile(flat.float(), pct / 100.0, dim=1).view(-1, 1, 1, 1)
    return score <= thresh


class ClipNorm(PostStep):
    """Set pixels whose colour norm ``||x - center||`` is below the ``percentile`` to ``center`` (Yosinski)."""

    def __init__(self, percentile: float = 20.0, center: float | torch.Tensor = 0.5) -> None:
        self.percentile, self.center = float(percentile), _center(center)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> None:
        if self.percentile <= 0:
            return
        norm = (pixels - self.center).norm(dim=1, keepdim=True)
        _reset(pixels, _below_percentile(norm, self.percentile), self.center)

    def __repr__(self) -> str:
        return f"ClipNorm({self.percentile:g})"


class ClipContribution(PostStep):
    """Set pixels with a small contribution ``|sum_c (x_c - center) * g_c|`` to the objective (below the
    ``percentile``) to ``center`` (Yosinski et al. 2015)."""

    def __init__(self, percentile: float = 20.0, center: float | torch.Tensor = 0.5) -> None:
        self.percentile, self.center = float(percentile), _center(center)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> None:
        if self.percentile <= 0 or grad is None:
            return
        contrib = ((pixels - self.center) * grad).sum(1, keepdim=True).abs()
        _reset(pixels, _below_percentile(contrib, self.percentile), self.center)

    def __repr__(self) -> str:
        return f"ClipContribution({self.percentile:g})"


def _check_sequence(items: Sequence[object], kind: type, what: str) -> None:
    for it in items:
        if not isinstance(it, kind):
            raise TypeError(f"{what} must be {kind.__name__} instances, got {type(it).__name__}")
