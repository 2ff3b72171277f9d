"""The feasible set of every attack: the eps-ball around the clean image intersected with the [0, 1] pixel box.

All attacks in convlens work in pixel space, so ``eps=8/255`` is eight grey levels. :func:`project` is applied
after every step, and it is *exact* in the tensor's own dtype: ``(x_adv - x).abs().max() <= eps`` holds when
evaluated in that dtype (floating-point rounding of ``x + delta`` is corrected by moving the offending pixels one
ulp towards the clean value), and every pixel lies in [0, 1].
"""

from __future__ import annotations

import torch

__all__ = ["NORMS", "check_norm", "norms", "project", "quantize", "quantize_into_ball"]

NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    """Validate a norm name (``linf`` or ``l2``) and return it."""
    if norm not in NORMS:
        from ..errors import UserError
        raise UserError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


def _flat_l2(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str = "linf", *,
            box: bool = True) -> torch.Tensor:
    """Bring a batch of candidates back into ``{x' : ||x' - x|| <= eps} ∩ [0, 1]^n``.

    For ``linf`` this is the Euclidean projection (a per-pixel clamp). For ``l2`` the perturbation is scaled
    onto the ball and then clipped to the box (clipping towards ``x`` only shrinks it), a feasible point close
    to the projection. ``eps=None`` keeps only the box (an unbounded attack); ``box=False`` keeps only the ball
    (for a perturbation itself, which may be negative). Returns a new tensor, detached.
    """
    x_adv = x_adv.detach()
    x = x.detach()
    if eps is None:
        return x_adv.clamp(0, 1)
    check_norm(norm)
    if norm == "linf":
        e = torch.tensor(eps, dtype=x.dtype, device=x.device)
        if float(e) > eps:  # eps itself rounded up in this dtype: use the representable value just below it
            e = torch.nextafter(e, torch.zeros_like(e))
        out = torch.minimum(torch.maximum(x_adv, x - e), x + e)
        out = out.clamp(0, 1) if box else out
        # ``x + e`` is rounded, so ``out - x`` may exceed ``e`` by an ulp: step those pixels one ulp towards x.
        for _ in range(8):
            d = out - x
            bad = (d > e) | (d < -e)
            if not bool(bad.any()):
                break
            out = torch.where(bad, torch.nextafter(out, x), out)
        return out
    d = x_adv - x
    n = _flat_l2(d.double()).view(-1, *([1] * (x.dim() - 1)))
    scale = torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n)).to(x.dtype)
    out = x + d * scale
    out = out.clamp(0, 1) if box else out
    for i in range(32):  # rounding may leave the norm a hair above eps: shrink those images a little more
        n = _flat_l2(out.double() - x.double())  # the norm as a reader measures it: in float64 of the stored values
        bad = n > eps
        if not bool(bad.any()):
            break
        shrink = torch.where(bad, eps / n * (1 - 1e-6 * 4 ** min(i, 10)), torch.ones_like(n)).to(x.dtype)
        out = torch.where(bad.view_as(scale), x + (out - x) * shrink.view_as(scale), out)
        out = out.clamp(0, 1) if box else out
    return out


def norms(x_adv: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image perturbation sizes in pixel units: ``(linf (N,), l2 (N,))``, computed in float64."""
    d = (x_adv.detach().double() - x.detach().double()).flatten(1)
    return d.abs().amax(dim=1), d.norm(dim=1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """What saving as an 8-bit PNG and reading it back does to a pixel batch: ``round(255 x) / 255``.

    Identical to ``to_pixels(to_pil(x))`` (see the tests), without touching the disk.
    """
    return (x.detach().float().clamp(0, 1) * 255).round().div(255).to(x.dtype)


_LEVELS = torch.arange(256, dtype=torch.float32).div(255)  # exactly what reading an 8-bit PNG back gives


def quantize_into_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str = "linf"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-bit image to save: on the PNG grid ``k/255``, in [0, 1], and inside the eps-ball around ``x``.

    Plain rounding (:func:`quantize`) can leave the ball by up to half a grey level (``eps=0.1`` saved as
    26/255). Here ``linf`` picks, per pixel, the grid level nearest ``x_adv`` among those within ``eps`` of ``x``;
    ``l2`` rounds ``x + s (x_adv - x)`` with the largest ``s`` in [0, 1] whose rounded image is inside the ball
    (found by bisection). The check holds for the values either kind of reader gets back, float32 ``k/255``
    (PyTorch) and float64 ``k/255`` (NumPy's ``arr / 255.0``), both compared in float64. Returns ``(images (N, 3, H, W), inside (N,) bool)``; ``inside`` is False only where no grid image
    is within ``eps`` of ``x`` at all (``eps`` below half a grey level), and then the nearest one is returned.
    """
    levels = _LEVELS.to(x.device).double()
    exact = torch.arange(256, dtype=torch.float64, device=x.device) / 255  # a float64 reader's values
    xd, ad = x.detach().double(), x_adv.detach().double().clamp(0, 1)

    def nearest(v: torch.Tensor) -> torch.Tensor:
        return (v.clamp(0, 1) * 255).round().long()

    n = x.shape[0]
    if eps is None:
        k = nearest(ad)
        return _LEVELS.to(x.device)[k].to(x.dtype), torch.ones(n, dtype=torch.bool, device=x.device)
    check_norm(norm)
    if norm == "linf":
        low_edge, high_edge = (xd - eps).contiguous(), (xd + eps).contiguous()
        lo = torch.maximum(torch.searchsorted(levels, low_edge), torch.searchsorted(exact, low_edge))  # >= x - eps
        hi = torch.minimum(torch.searchsorted(levels, high_edge, right=True),
                           torch.searchsorted(exact, high_edge, right=True)) - 1                    # <= x + eps
        ok = lo <= hi
        k = torch.where(ok, torch.minimum(torch.maximum(nearest(ad), lo), hi), nearest(xd))
        inside = torch.maximum((levels[k] - xd).abs(), (exact[k] - xd).abs()).flatten(1).amax(1) <= eps
    else:
        d = ad - xd
        low = torch.zeros(n, dtype=torch.float64, device=x.device)
        high = torch.ones_like(low)
        shape = (-1,) + (1,) * (x.dim() - 1)

        def at(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            k = nearest(xd + s.view(shape) * d)
            return k, (_flat_l2(levels[k] - xd) <= eps) & (_flat_l2(exact[k] - xd) <= eps)

        k_best, ok_best = at(high)
        for _ in range(30):
            mid = (low + high) / 2
            _, ok_mid = at(mid)
            low = torch.where(ok_mid, mid, low)
            high = torch.where(ok_mid, high, mid)
        k_low, _ = at(low)
        k = torch.where(ok_best.view(shape), k_best, k_low)
        inside = (_flat_l2(levels[k] - xd) <= eps) & (_flat_l2(exact[k] - xd) <= eps)
    return _LEVELS.to(x.device)[k].to(x.dtype), inside
