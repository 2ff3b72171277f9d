"""Image parametrisations: ``nn.Module``s whose ``forward()`` returns the pixel batch ``(N, 3, H, W)`` in [0, 1].

The optimisation loop changes the module's parameters, never the image directly, so how an image is
represented -- raw pixels, or a Fourier spectrum with decorrelated colour (Olah et al. 2017, Lucid) -- is one
swappable piece. Each parametrisation can ``resize`` itself (for coarse-to-fine octaves) and, for pixels,
exposes ``pixels`` so per-step operations (blur, clipping) can edit the image in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageParam", "PixelImage", "FourierImage", "pixel_image", "fourier_image", "COLOR_CORRELATION"]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    down = size[0] < x.shape[-2]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=down)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageParam(nn.Module):
    """Base class: ``forward()`` -> pixels ``(N, 3, H, W)`` in [0, 1]; ``resize(size)`` for octaves."""

    def size(self) -> tuple[int, int]:  # type: ignore[override]
        raise NotImplementedError

    def resize(self, size: tuple[int, int]) -> None:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called by the loop after each optimiser step (pixels clamp themselves to [0, 1])."""


class PixelImage(ImageParam):
    """Raw pixels, clamped to [0, 1] after every step (as DeepDream clips to the valid range).

    Args:
        init: a pixel batch ``(N, 3, H, W)`` or ``(3, H, W)`` to start from; or ``None`` for a constant / noise.
        size: ``(H, W)`` when ``init`` is ``None``.
        batch: number of images when ``init`` is ``None``.
        fill: start value (``0.5`` = mid-grey; give the model's mean for "zeros" in mean-subtracted space).
        noise: standard deviation of Gaussian noise added to the start.
        octave_mode: how :meth:`resize` carries the image to a new scale: ``"image"`` upsamples the current
            image; ``"detail"`` (DeepDream) re-reads ``init`` at the new size and adds the upsampled *change*
            made so far, so the photo stays sharp while the dream details grow.
        generator: for the noise.
    """

    reference: torch.Tensor | None
    pixels: nn.Parameter

    def __init__(self, init: torch.Tensor | None = None, *, size: int | tuple[int, int] = 224, batch: int = 1,
                 fill: float | tuple[float, float, float] = 0.5, noise: float = 0.0,
                 octave_mode: str = "image", generator: torch.Generator | None = None) -> None:
        super().__init__()
        if octave_mode not in ("image", "detail"):
            raise ValueError(f"octave_mode must be 'image' or 'detail', got {octave_mode!r}")
        if init is not None:
            x = init.detach().float().clone()
            if x.dim() == 3:
                x = x[None]
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"init must be (N, 3, H, W) or (3, H, W), got {tuple(init.shape)}")
            if batch > 1 and x.shape[0] == 1:
                x = x.repeat(batch, 1, 1, 1)
        else:
            h, w = _size(size)
            fill_t = torch.as_tensor(fill, dtype=torch.float32).reshape(1, -1, 1, 1)
            x = fill_t.expand(batch, 3, h, w).clone()
        if noise:
            x = x + noise * torch.randn(x.shape, generator=generator).to(x)
        self.register_buffer("reference", x.clone() if octave_mode == "detail" else None, persistent=False)
        self._start_size = tuple(x.shape[-2:])
        self.octave_mode = octave_mode
        self.pixels = nn.Parameter(x.clamp(0, 1))

    def forward(self) -> torch.Tensor:
        return self.pixels

    def size(self) -> tuple[int, int]:  # type: ignore[override]
        return (int(self.pixels.shape[-2]), int(self.pixels.shape[-1]))

    @torch.no_grad()
    def resize(self, size: tuple[int, int]) -> None:
        size = _size(size)
        x = self.pixels.detach()
        if self.octave_mode == "detail" and self.reference is not None:
            ref: torch.Tensor = self.reference
            detail = x - _resize(ref, self.size())
            new = _resize(ref, size) + _resize(detail, size)
        else:
            new = _resize(x, size)
        self.pixels = nn.Parameter(new.clamp(0, 1).contiguous())

    @torch.no_grad()
    def after_step(self) -> None:
        self.pixels.clamp_(0, 1)

    def extra_repr(self) -> str:
        n, _, h, w = self.pixels.shape
        return f"batch={n}, size=({h}, {w}), octave_mode={self.octave_mode!r}"


# Lucid's colour correlation of ImageNet (square root of the covariance, from its SVD), columns normalised.
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(ImageParam):
    """An image as a scaled Fourier spectrum with decorrelated colour (Olah et al. 2017; Lucid/Lucent).

    ``image = sigmoid(C @ irfft2(scale * spectrum) / 4)`` where ``scale = 1 / max(f, 1/max(H, W))^decay``
    whitens the natural-image 1/f spectrum and ``C`` is ImageNet's colour correlation: gradient steps then
    change all frequencies and colours evenly, which is what makes visualizations recognisable.

    Args:
        init: start from this pixel image (exactly: ``FourierImage(init=x)()`` returns ``x`` up to float error,
            for ``x`` inside (0, 1)); or ``None`` for small random spectra (std ``sd``).
        size, batch: when ``init`` is ``None``.
        decay: the spectrum's decay power (1 in Lucid).
        decorrelate: use the colour correlation (``False``: plain RGB).
        generator: for the random start.
    """

    magic = 4.0
    scale: torch.Tensor
    color: torch.Tensor
    spectrum: nn.Parameter

    def __init__(self, init: torch.Tensor | None = None, *, size: int | tuple[int, int] = 224, batch: int = 1,
                 sd: float = 0.01, decay: float = 1.0, decorrelate: bool = True,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.decay = float(decay)
        self.decorrelate = decorrelate
        corr = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()
        self.register_buffer("color", corr if decorrelate else torch.eye(3), persistent=False)
        if init is not None:
            x = init.detach().float()
            if x.dim() == 3:
                x = x[None]
            if batch > 1 and x.shape[0] == 1:
                x = x.repeat(batch, 1, 1, 1)
            self._set_from_image(x)
        else:
            h, w = _size(size)
            self.register_buffer("scale", self._scale(h, w), persistent=False)
            shape = (batch, 3, h, w // 2 + 1, 2)
            self.spectrum = nn.Parameter(sd * torch.randn(shape, generator=generator))
            self._hw = (h, w)

    def _scale(self, h: int, w: int) -> torch.Tensor:
        s = 1.0 / _freqs(h, w).clamp_min(1.0 / max(h, w)) ** self.decay
        return s[None, None, :, :, None].float()

    def forward(self) -> torch.Tensor:
        h, w = self._hw
        spec = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        img = torch.fft.irfft2(spec, s=(h, w), norm="ortho") / self.magic
        img = torch.einsum("nchw,dc->ndhw", img, self.color)
        return torch.sigmoid(img)

    @torch.no_grad()
    def _set_from_image(self, x: torch.Tensor) -> None:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        eps = 1e-4
        logits = torch.logit(x.clamp(eps, 1 - eps))
        img = torch.einsum("ndhw,dc->nchw", logits, torch.linalg.inv(self.color.cpu()).T.to(x))  # undo colour
        spec = torch.fft.rfft2(img * self.magic, norm="ortho")
        scale = self._scale(h, w).to(x)
        data = torch.view_as_real(spec) / scale
        self.register_buffer("scale", scale, persistent=False)
        self.spectrum = nn.Parameter(data.contiguous())
        self._hw = (h, w)

    def size(self) -> tuple[int, int]:  # type: ignore[override]
        return self._hw

    @torch.no_grad()
    def resize(self, size: tuple[int, int]) -> None:
        self._set_from_image(_resize(self.forward(), _size(size)))

    def extra_repr(self) -> str:
        return (f"batch={self.spectrum.shape[0]}, size={self._hw}, decay={self.decay:g}, "
                f"decorrelate={self.decorrelate}")


def pixel_image(init: torch.Tensor | None = None, **kwargs: object) -> PixelImage:
    """Shorthand for :class:`PixelImage`."""
    return PixelImage(init, **kwargs)  # type: ignore[arg-type]


def fourier_image(init: torch.Tensor | None = None, **kwargs: object) -> FourierImage:
    """Shorthand for :class:`FourierImage`."""
    return FourierImage(init, **kwargs)  # type: ignore[arg-type]

