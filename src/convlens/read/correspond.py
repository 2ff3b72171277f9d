"""Do ConvNets learn correspondence? Dense nearest-neighbour matching in a layer's feature space
(Long, Zhang & Darrell, NeurIPS 2014), measured against SIFT and raw pixel patches on known warps.

Two recipes:

- :func:`correspond` -- for two photos ``a`` and ``b``, every query point of ``a`` (a regular grid, or the points
  you give) is matched to the point of ``b`` whose descriptor is most similar (cosine). A layer's descriptor at
  a pixel is its feature map *sampled at that pixel*: the map is interpolated bilinearly between the units'
  receptive-field centres taken from the layer index (``model.layers[layer].rf``), so a 7x7 map still answers
  at any pixel ("sub-cell" precision). The best candidate on a dense grid of ``b`` (every ``step`` pixels) is
  refined by a parabola through its neighbours' similarities. A match is *mutual* when matching back from ``b``
  lands within ``tol`` pixels of the query (the mutual-nearest-neighbour filter).
- :func:`warp_study` -- the measured question. Each photo is warped by known transforms (affine, perspective,
  scale + crop, horizontal flip), each also with a photometric change (gamma, colour cast, brightness,
  contrast, saturation, noise), so the true position of every query point in the warped photo is known exactly
  (``H @ p``). PCK@alpha is the fraction of query points matched within ``alpha * max(H, W)`` pixels of the
  truth, per layer and per warp, beside two anchors on the *same* points and the *same* candidate grid: SIFT
  descriptors (OpenCV's, upright at a fixed scale, as RootSIFT) and raw pixel patches (normalised
  cross-correlation). :meth:`WarpStudy.localisation` gives the paper's first finding: each layer's median
  localisation error against its receptive-field size.

Coordinates are ``(x, y)`` in model-input pixels, pixel centres at integers (``0 .. W-1``), the convention of
:class:`~convlens.ReceptiveField`. Warps are 3x3 homographies mapping a point of ``a`` to its place in ``b``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.taps import activations
from ..errors import UserError
from ..images import ImageLike
from ..models import Model, ReceptiveField

__all__ = [
    "ALPHAS",
    "ANCHORS",
    "GEOMETRIC",
    "Correspondence",
    "MatchSet",
    "Matches",
    "Warp",
    "WarpStudy",
    "apply_warp",
    "correspond",
    "correspondence_layers",
    "dense_grid",
    "describe",
    "feature_maps",
    "make_warps",
    "match_descriptors",
    "photometric",
    "pixel_descriptors",
    "query_grid",
    "sample_features",
    "sift_descriptors",
    "warp_points",
    "warp_study",
]

ALPHAS: tuple[float, ...] = (0.02, 0.05, 0.1)
GEOMETRIC: tuple[str, ...] = ("affine", "perspective", "scale-crop", "flip")
ANCHORS: tuple[str, ...] = ("sift", "pixels")
_FILL = 0.5  # grey where a warp shows nothing of the photo


# -- layers and grids ------------------------------------------------------------------------------------------
def correspondence_layers(model: Model) -> list[str]:
    """Default layers: for each spatial resolution of the network, its deepest top-level (or block) layer.

    Read from the layer index (names with at most one dot, output ``C x H x W`` with ``H > 1``), so it gives the
    stage outputs of any CNN -- e.g. a ResNet's ``relu, layer1 .. layer4``.
    """
    by_res: dict[tuple[int, int], str] = {}
    for info in model.layers.spatial():
        if info.name.count(".") <= 1 and not info.rf.whole and info.shape[1] > 1:
            by_res[(int(info.shape[1]), int(info.shape[2]))] = info.name
    if not by_res:
        raise UserError("this model has no layer with a spatial map to match with")
    order = model.layers.names()
    return sorted(by_res.values(), key=order.index)


@dataclass(frozen=True)
class DenseGrid:
    """Candidate positions ``coords`` ``(M, 2)`` (x, y), row-major over ``shape`` ``(rows, cols)``, ``step`` apart."""

    coords: np.ndarray
    shape: tuple[int, int]
    step: int


def dense_grid(size: tuple[int, int], step: int) -> DenseGrid:
    """Every ``step``-th pixel of an ``(H, W)`` image, starting at pixel 0."""
    if step < 1:
        raise UserError(f"grid step must be at least 1 pixel, got {step}")
    h, w = size
    ys, xs = np.arange(0, h, step, dtype=np.float64), np.arange(0, w, step, dtype=np.float64)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return DenseGrid(np.stack([xx.ravel(), yy.ravel()], 1), (len(ys), len(xs)), step)


def query_grid(size: tuple[int, int], n: int, *, step: int = 1, margin: float = 0.08) -> np.ndarray:
    """``n x n`` query points ``(n*n, 2)`` evenly inside ``margin`` of the border, snapped to multiples of ``step``."""
    if n < 1:
        raise UserError(f"need at least 1 query point per side, got {n}")
    h, w = size
    out = []
    for side in (w, h):
        lo, hi = margin * (side - 1), (1 - margin) * (side - 1)
        v = np.linspace(lo, hi, n) if n > 1 else np.array([(side - 1) / 2])
        out.append(np.clip(np.round(v / step) * step, 0, (side - 1) // step * step))
    yy, xx = np.meshgrid(out[1], out[0], indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)


# -- descriptors -----------------------------------------------------------------------------------------------
def _normalise(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


def feature_maps(model: Model, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The maps ``(B, C, h, w)`` of ``layers`` for a pixel batch (one forward pass, stopped at the deepest)."""
    for name in layers:
        if not model.layers[name].spatial:
            raise UserError(f"layer {name!r} has no spatial map (output {model.layers[name].shape}); "
                            "pick a convolutional layer")
    with torch.no_grad():
        acts = activations(model, x.to(model.device), list(layers))
    return {k: v.float().cpu() for k, v in acts.items()}


def sample_features(fmap: torch.Tensor, rf: ReceptiveField, points: np.ndarray) -> torch.Tensor:
    """A layer's descriptor ``(N, C)`` at pixel ``points`` ``(N, 2)``: its map ``(C, h, w)`` interpolated
    bilinearly between unit centres (unit ``(i, j)`` sits at ``rf.start + (i, j) * rf.stride``), L2-normalised.
    Points beyond the outermost unit centres take the border units' values."""
    _, h, w = fmap.shape
    p = torch.as_tensor(points, dtype=torch.float32)
    g = []
    for axis, n in ((1, w), (0, h)):  # x uses rf's axis 1, y axis 0
        u = (p[:, 1 - axis] - rf.start[axis]) / rf.stride[axis]
        g.append(2 * u / (n - 1) - 1 if n > 1 else torch.zeros_like(u))
    grid = torch.stack(g, 1)[None, None]  # (1, 1, N, 2) as (x, y)
    out = F.grid_sample(fmap[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return _normalise(out[0, :, 0].t())


def _sample_pixels(x: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(3, N)`` of a ``(3, H, W)`` image at pixel points ``(N, 2)`` (border values outside)."""
    _, h, w = x.shape
    g = torch.stack([2 * pts[:, 0] / max(1, w - 1) - 1, 2 * pts[:, 1] / max(1, h - 1) - 1], 1)
    return F.grid_sample(x[None].float(), g[None, None], mode="bilinear", padding_mode="border",
                         align_corners=True)[0, :, 0]


def pixel_descriptors(x: torch.Tensor, points: np.ndarray, *, patch: int = 31) -> torch.Tensor:
    """Raw pixel patches ``patch x patch`` (RGB) centred on each point, mean-removed and L2-normalised, so their
    dot product is the normalised cross-correlation. Returns ``(N, 3 * patch**2)``."""
    if patch < 1:
        raise UserError(f"pixel patch must be at least 1 pixel, got {patch}")
    r = (patch - 1) / 2
    off = torch.linspace(-r, r, patch)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    offsets = torch.stack([ox.ravel(), oy.ravel()], 1)  # (P, 2)
    p = torch.as_tensor(points, dtype=torch.float32)
    pts = (p[:, None, :] + offsets[None]).reshape(-1, 2)
    s = _sample_pixels(x, pts).reshape(3, len(p), -1).permute(1, 0, 2).reshape(len(p), -1)
    return _normalise(s - s.mean(1, keepdim=True))


def sift_descriptors(x: torch.Tensor, points: np.ndarray, *, size: float = 4.0) -> torch.Tensor:
    """OpenCV SIFT descriptors (Lowe 2004) computed at the given points, upright (angle 0) at the fixed keypoint
    diameter ``size`` pixels -- dense SIFT as in SIFT Flow -- turned into RootSIFT (Arandjelovic & Zisserman
    2012: L1-normalise, square root), which makes a dot product the Hellinger kernel. Returns ``(N, 128)``."""
    import cv2

    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    kps = [cv2.KeyPoint(float(px), float(py), float(size), 0.0) for px, py in np.asarray(points)]
    got, desc = cv2.SIFT_create().compute(gray, kps)  # type: ignore[attr-defined]
    if desc is None or len(got) != len(kps):
        raise RuntimeError(f"OpenCV SIFT returned {0 if desc is None else len(got)} of {len(kps)} descriptors")
    d = torch.from_numpy(desc.astype(np.float32))
    d = (d / d.sum(1, keepdim=True).clamp_min(1e-12)).sqrt()
    return _normalise(d)


def describe(method: str, x: torch.Tensor, points: np.ndarray, *, fmap: torch.Tensor | None = None,
             rf: ReceptiveField | None = None, patch: int = 31, sift_size: float = 4.0) -> torch.Tensor:
    """Descriptors of ``method`` -- ``"sift"``, ``"pixels"`` or a layer (give its ``fmap`` and ``rf``) -- at
    ``points`` of the image ``x`` ``(3, H, W)``."""
    if method == "sift":
        return sift_descriptors(x, points, size=sift_size)
    if method == "pixels":
        return pixel_descriptors(x, points, patch=patch)
    if fmap is None or rf is None:
        raise ValueError(f"layer {method!r} needs its feature map and receptive field")
    return sample_features(fmap, rf, points)


# -- matching --------------------------------------------------------------------------------------------------
@dataclass
class MatchSet:
    """Nearest neighbours of ``N`` query descriptors: ``points`` ``(N, 2)`` where they land, ``score`` ``(N,)`` the
    similarity there, ``cell`` ``(N,)`` the grid index of the best candidate; when matched back, ``back``
    ``(N, 2)`` where each lands again and ``mutual`` ``(N,)`` whether that is within ``tol`` of the query."""

    points: np.ndarray
    score: np.ndarray
    cell: np.ndarray
    back: np.ndarray | None = None
    mutual: np.ndarray | None = None


def _refine(sim: torch.Tensor, best: torch.Tensor, grid: DenseGrid) -> np.ndarray:
    """Sub-step peak positions: a parabola through the best cell and its two neighbours, per axis."""
    rows, cols = grid.shape
    s = sim.reshape(len(sim), rows, cols)
    r, c = best // cols, best % cols
    n = torch.arange(len(sim))
    pts = torch.as_tensor(grid.coords[best.numpy()], dtype=torch.float64).clone()
    for axis, (idx, size) in enumerate(((c, cols), (r, rows))):
        ok = (idx > 0) & (idx < size - 1)
        lo, hi = (idx - 1).clamp(0, size - 1), (idx + 1).clamp(0, size - 1)
        if axis == 0:
            s0, sl, sh = s[n, r, c], s[n, r, lo], s[n, r, hi]
        else:
            s0, sl, sh = s[n, r, c], s[n, lo, c], s[n, hi, c]
        den = (sl - 2 * s0 + sh).double()
        off = torch.where(ok & (den < -1e-12), 0.5 * (sl - sh).double() / den.where(den < -1e-12, -1.0),
                          torch.zeros_like(den)).clamp(-0.5, 0.5)
        pts[:, axis] += off * grid.step
    return pts.numpy()


def _nearest(q: torch.Tensor, db: torch.Tensor, grid: DenseGrid, refine: bool, chunk: int = 256
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts, scores, cells = [], [], []
    for i in range(0, len(q), chunk):
        sim = q[i:i + chunk] @ db.t()
        val, best = sim.max(1)
        pts.append(_refine(sim, best, grid) if refine else grid.coords[best.numpy()].astype(np.float64))
        scores.append(val.numpy())
        cells.append(best.numpy())
    if not pts:
        return np.zeros((0, 2)), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.concatenate(pts), np.concatenate(scores), np.concatenate(cells)


def match_descriptors(query: torch.Tensor, cand: torch.Tensor, grid: DenseGrid, *, refine: bool = True,
                      back: tuple[torch.Tensor, DenseGrid] | None = None, points: np.ndarray | None = None,
                      tol: float | None = None) -> MatchSet:
    """Match each query descriptor ``(N, D)`` to its most similar candidate ``(M, D)`` on ``grid`` (cosine; all
    rows L2-normalised). With ``back = (descriptors of a's grid, a's grid)``, ``points`` (the queries' positions)
    and ``tol`` pixels, each match's candidate is matched back and ``mutual`` marks the ones that return within
    ``tol`` of their query -- the mutual-nearest-neighbour filter."""
    if len(cand) != len(grid.coords):
        raise ValueError(f"{len(cand)} candidate descriptors for a grid of {len(grid.coords)} positions")
    pts, score, cell = _nearest(query, cand, grid, refine)
    out = MatchSet(pts, score, cell)
    if back is not None:
        if points is None or tol is None:
            raise ValueError("matching back needs the query points and a tolerance")
        da, grid_a = back
        bpts, _, _ = _nearest(cand[torch.as_tensor(cell)], da, grid_a, refine)
        out.back = bpts
        out.mutual = np.linalg.norm(bpts - np.asarray(points, dtype=np.float64), axis=1) <= tol
    return out


# -- two photos ------------------------------------------------------------------------------------------------
@dataclass
class Matches:
    """One method's matches from photo a to photo b: query ``points_a`` ``(N, 2)``, where they land ``points_b``
    ``(N, 2)``, cosine ``score`` ``(N,)``, ``mutual`` ``(N,)`` (all True when not filtered)."""

    method: str
    points_a: np.ndarray
    points_b: np.ndarray
    score: np.ndarray
    mutual: np.ndarray

    @property
    def kept(self) -> float:
        """Fraction of matches that survive the mutual filter."""
        return float(self.mutual.mean()) if len(self.mutual) else 0.0


@dataclass
class Correspondence:
    """Dense correspondence from ``a`` to ``b`` (both ``3 x H x W`` in [0, 1], model-input size): one
    :class:`Matches` per method (layers, then anchors), the grid ``step`` and mutual ``tol`` used."""

    a: torch.Tensor = field(repr=False)
    b: torch.Tensor = field(repr=False)
    matches: dict[str, Matches]
    step: int
    tol: dict[str, float]
    mutual_filter: bool
    params: dict[str, Any] = field(default_factory=dict)


def _pixels(model: Model, image: ImageLike | torch.Tensor) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        x = image[0] if image.dim() == 4 else image
        if x.shape[0] != 3 or x.dim() != 3:
            raise UserError(f"expected an image 3xHxW, got shape {tuple(image.shape)}")
        if tuple(x.shape[1:]) != tuple(model.preprocess.size):
            x = F.interpolate(x[None].float(), size=model.preprocess.size, mode="bilinear", align_corners=False,
                              antialias=True)[0]
        return x.float().cpu()
    return model.preprocess.to_tensor(image).float().cpu()


def _tolerance(rf: ReceptiveField | None, step: int, tol: float | None) -> float:
    if tol is not None:
        return float(tol)
    return max(1.5 * step, 0.5 * max(rf.stride) if rf is not None else 0.0)


def correspond(model: Model, a: ImageLike | torch.Tensor, b: ImageLike | torch.Tensor, *,
               layers: Sequence[str] | str | None = None, points: int | np.ndarray = 12, step: int = 4,
               mutual: bool = True, tol: float | None = None, refine: bool = True, anchors: Sequence[str] = (),
               patch: int = 31, sift_size: float = 4.0) -> Correspondence:
    """Dense nearest-neighbour correspondence from photo ``a`` to photo ``b`` in each layer's feature space
    (Long, Zhang & Darrell 2014), optionally beside the ``anchors`` ``"sift"`` and ``"pixels"``.

    Args:
        model: the network; both photos are fitted to its input (resize + centre crop).
        a, b: images (path, PIL image or a ``3 x H x W`` tensor in [0, 1]).
        layers: spatial layers (default :func:`correspondence_layers`).
        points: ``n`` for an ``n x n`` grid of query points in ``a``, or an ``(N, 2)`` array of ``(x, y)`` pixels.
        step: spacing in pixels of the candidate grid in ``b`` (and in ``a`` when matching back).
        mutual: match back from ``b`` and keep only the matches that return within ``tol`` of their query.
        tol: the mutual tolerance in pixels (default ``max(1.5 * step, stride / 2)`` of the layer).
        refine: refine each best candidate by a parabola through its neighbours' similarities (sub-step).
        anchors: also match with ``"sift"`` and/or ``"pixels"`` on the same points.
        patch, sift_size: the pixel patch side and the SIFT keypoint diameter, in pixels.

    Returns:
        A :class:`Correspondence`; ``matches[method].points_b[i]`` is where query ``i`` lands in ``b``.
    """
    xa, xb = _pixels(model, a), _pixels(model, b)
    names = [layers] if isinstance(layers, str) else list(layers) if layers else correspondence_layers(model)
    bad = [m for m in anchors if m not in ANCHORS]
    if bad:
        raise UserError(f"unknown anchor {bad[0]!r}; valid: {', '.join(ANCHORS)}")
    size = tuple(model.preprocess.size)
    q = query_grid(size, points, step=step) if isinstance(points, int) else np.asarray(points, np.float64)  # type: ignore[arg-type]
    if q.ndim != 2 or q.shape[1] != 2:
        raise UserError(f"query points must be an (N, 2) array of (x, y), got shape {q.shape}")
    grid = dense_grid(size, step)  # type: ignore[arg-type]
    maps = feature_maps(model, torch.stack([xa, xb]), names)
    out: dict[str, Matches] = {}
    tols: dict[str, float] = {}
    for method in [*names, *anchors]:
        rf = model.layers[method].rf if method in names else None
        kw: dict[str, Any] = {"patch": patch, "sift_size": sift_size}
        fa: dict[str, Any] = {"fmap": maps[method][0], "rf": rf} if rf is not None else {}
        fb: dict[str, Any] = {"fmap": maps[method][1], "rf": rf} if rf is not None else {}
        dq = describe(method, xa, q, **fa, **kw)
        db = describe(method, xb, grid.coords, **fb, **kw)
        t = _tolerance(rf, step, tol)
        tols[method] = t
        back = (describe(method, xa, grid.coords, **fa, **kw), grid) if mutual else None
        m = match_descriptors(dq, db, grid, refine=refine, back=back, points=q, tol=t)
        keep = m.mutual if m.mutual is not None else np.ones(len(q), bool)
        out[method] = Matches(method, q.copy(), m.points, m.score, keep)
    return Correspondence(xa, xb, out, step, tols, mutual,
                          {"layers": names, "anchors": list(anchors), "points": len(q), "step": step,
                           "refine": refine, "patch": patch, "sift_size": sift_size})


# -- warps -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Warp:
    """A known transform: ``H`` (3x3) maps a pixel ``(x, y, 1)`` of the photo to its place in the warped photo;
    ``photo`` holds the photometric change applied afterwards (``None``: none). ``name`` is e.g. ``affine`` or
    ``affine+photo``."""

    kind: str
    H: np.ndarray = field(repr=False)
    photo: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.kind + ("+photo" if self.photo is not None else "")


def warp_points(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply the homography ``H`` to ``(N, 2)`` points."""
    p = np.concatenate([np.asarray(points, np.float64), np.ones((len(points), 1))], 1) @ np.asarray(H).T
    return p[:, :2] / p[:, 2:3]


def apply_warp(x: torch.Tensor, H: np.ndarray, *, fill: float = _FILL) -> torch.Tensor:
    """The photo ``x`` ``(3, H, W)`` warped by ``H``: output pixel ``p`` takes the (bilinear) value of ``x`` at
    ``H^-1 p``; where that falls outside the photo the output is ``fill`` grey."""
    _, h, w = x.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    src = warp_points(np.linalg.inv(H), np.stack([xx.ravel().numpy(), yy.ravel().numpy()], 1))
    s = torch.as_tensor(src, dtype=torch.float32)
    g = torch.stack([2 * s[:, 0] / max(1, w - 1) - 1, 2 * s[:, 1] / max(1, h - 1) - 1], 1).reshape(1, h, w, 2)
    img = torch.cat([x.float(), torch.ones(1, h, w)])[None]
    out = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    mask = out[3:].clamp(0, 1)
    return (out[:3] + (1 - mask) * fill).clamp(0, 1)


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _about_centre(M: np.ndarray, w: int, h: int) -> np.ndarray:
    cx, cy = (w - 1) / 2, (h - 1) / 2
    T = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], np.float64)
    Ti = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    return T @ M @ Ti


def _homography(kind: str, size: tuple[int, int], gen: torch.Generator) -> np.ndarray:
    h, w = size
    if kind == "flip":
        return np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], np.float64)
    if kind == "affine":
        a = math.radians(_u(gen, -20, 20))
        s, sh = _u(gen, 0.8, 1.2), _u(gen, -0.15, 0.15)
        tx, ty = _u(gen, -0.06, 0.06) * w, _u(gen, -0.06, 0.06) * h
        R = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        M = R @ np.array([[s, sh * s, 0], [0, s, 0], [0, 0, 1]])
        M[:2, 2] = (tx, ty)
        return _about_centre(M, w, h)
    if kind == "perspective":
        import cv2

        src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
        jitter = np.array([[_u(gen, -0.12, 0.12) * w, _u(gen, -0.12, 0.12) * h] for _ in range(4)], np.float32)
        return cv2.getPerspectiveTransform(src, src + jitter).astype(np.float64)
    if kind == "scale-crop":
        z = _u(gen, 1.3, 1.8)  # zoom: a window of side W/z is cropped and scaled back to W
        x0, y0 = _u(gen, 0, 1) * (w - w / z), _u(gen, 0, 1) * (h - h / z)
        return np.array([[z, 0, -z * x0], [0, z, -z * y0], [0, 0, 1]], np.float64)
    raise UserError(f"unknown warp {kind!r}; valid: {', '.join(GEOMETRIC)}")


def _photo_params(gen: torch.Generator) -> dict[str, Any]:
    return {"gamma": _u(gen, 0.7, 1.4), "gains": [_u(gen, 0.85, 1.15) for _ in range(3)],
            "brightness": _u(gen, 0.7, 1.3), "contrast": _u(gen, 0.7, 1.3), "saturation": _u(gen, 0.6, 1.4),
            "noise": 0.02, "noise_seed": int(torch.randint(0, 2**31 - 1, (), generator=gen))}


def photometric(x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """A photometric change of ``x`` ``(3, H, W)``: gamma, per-channel gains (a colour cast), brightness,
    contrast about the mean, saturation about the grey value, then Gaussian noise of std ``noise``."""
    y = x.float().clamp(0, 1) ** p["gamma"]
    y = y * torch.tensor(p["gains"], dtype=torch.float32)[:, None, None] * p["brightness"]
    y = (y - y.mean()) * p["contrast"] + y.mean()
    grey = (0.299 * y[0] + 0.587 * y[1] + 0.114 * y[2])[None]
    y = grey + p["saturation"] * (y - grey)
    if p.get("noise"):
        g = torch.Generator().manual_seed(int(p.get("noise_seed", 0)))
        y = y + p["noise"] * torch.randn(y.shape, generator=g)
    return y.clamp(0, 1)


def make_warps(size: tuple[int, int], *, kinds: Sequence[str] = GEOMETRIC, photo: bool = True,
               generator: torch.Generator | None = None) -> list[Warp]:
    """One random warp of each kind, then (with ``photo``) the same geometry again with a photometric change, so
    ``X`` and ``X+photo`` differ only in colour and noise."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    geo = [Warp(k, _homography(k, size, gen)) for k in kinds]
    if not photo:
        return geo
    return geo + [Warp(w.kind, w.H, _photo_params(gen)) for w in geo]


def _warped(x: torch.Tensor, w: Warp) -> torch.Tensor:
    y = apply_warp(x, w.H)
    return photometric(y, w.photo) if w.photo is not None else y


# -- the warp study --------------------------------------------------------------------------------------------
@dataclass
class WarpStudy:
    """PCK per method (layers, then ``sift`` and ``pixels``) and warp over the photos of a dataset.

    ``pck[method][warp][alpha]`` is the fraction of query points matched within ``alpha * max(H, W)`` pixels of
    the true position; ``errors[method][warp]`` every point's error in pixels (pooled over the photos);
    ``rf[layer]`` the layer's receptive-field ``(size, stride)`` in pixels; ``points[warp]`` how many query points
    had their true position inside the warped photo. ``example`` keeps the first photo's warped images and
    matches for the figures.
    """

    layers: list[str]
    methods: list[str]
    warps: list[str]
    alphas: tuple[float, ...]
    pck: dict[str, dict[str, dict[float, float]]]
    errors: dict[str, dict[str, np.ndarray]] = field(repr=False)
    rf: dict[str, tuple[float, float]]
    size: tuple[int, int]
    photos: list[Path]
    points: dict[str, int]
    params: dict[str, Any]
    seconds: float
    example: dict[str, Any] = field(default_factory=dict, repr=False)

    def mean_pck(self, method: str, alpha: float = 0.05, warps: Sequence[str] | None = None) -> float:
        ws = list(warps) if warps is not None else self.warps
        return float(np.mean([self.pck[method][w][alpha] for w in ws]))

    def best_layer(self, alpha: float = 0.05) -> str:
        """The one layer with the highest PCK@alpha averaged over every warp."""
        return max(self.layers, key=lambda m: self.mean_pck(m, alpha))

    def goal(self, alpha: float = 0.05) -> dict[str, Any]:
        """The issue's goal at ``alpha``: does the best layer beat raw pixels on every warp, and SIFT on every
        warp with a photometric change? Answers for the one best layer and for the best layer of each warp."""
        best = self.best_layer(alpha)
        photo = [w for w in self.warps if w.endswith("+photo")]
        per_warp = {w: max(self.layers, key=lambda m: self.pck[m][w][alpha]) for w in self.warps}
        out: dict[str, Any] = {"alpha": alpha, "best_layer": best, "best_layer_per_warp": per_warp}
        if "pixels" in self.methods:
            out["beats_pixels_on_every_warp"] = all(self.pck[best][w][alpha] > self.pck["pixels"][w][alpha]
                                                    for w in self.warps)
            out["per_warp_best_beats_pixels"] = all(self.pck[per_warp[w]][w][alpha] > self.pck["pixels"][w][alpha]
                                                    for w in self.warps)
        if "sift" in self.methods and photo:
            out["beats_sift_on_photometric_warps"] = all(self.pck[best][w][alpha] > self.pck["sift"][w][alpha]
                                                         for w in photo)
            out["per_warp_best_beats_sift_on_photometric"] = all(
                self.pck[per_warp[w]][w][alpha] > self.pck["sift"][w][alpha] for w in photo)
        return out

    def localisation(self, *, inlier: float = 0.1) -> list[dict[str, float | str]]:
        """Per layer: receptive-field size and stride, and the median localisation error in pixels of the matches
        within ``inlier * max(H, W)`` of the truth (the correct ones) and of all matches, pooled over warps."""
        lim = inlier * max(self.size)
        rows: list[dict[str, float | str]] = []
        for m in self.methods:
            e = np.concatenate([self.errors[m][w] for w in self.warps]) if self.warps else np.zeros(0)
            ok = e[e <= lim]
            size, stride = self.rf.get(m, (float("nan"), float("nan")))
            rows.append({"method": m, "rf_size": size, "rf_size_in_image": min(size, float(max(self.size))),
                         "stride": stride, "median_error_inliers": float(np.median(ok)) if len(ok) else float("nan"),
                         "median_error_all": float(np.median(e)) if len(e) else float("nan"),
                         "inliers": float(len(ok) / max(1, len(e)))})
        return rows

    def table(self, alpha: float) -> list[list[Any]]:
        """Rows ``[warp, pck of each method...]`` at ``alpha``, then a ``mean`` row."""
        rows: list[list[Any]] = [[w, *[self.pck[m][w][alpha] for m in self.methods]] for w in self.warps]
        rows.append(["mean", *[self.mean_pck(m, alpha) for m in self.methods]])
        return rows


def warp_study(model: Model, dataset: Any, *, layers: Sequence[str] | None = None,
               warps: Sequence[str] = GEOMETRIC, photo: bool = True, anchors: Sequence[str] = ANCHORS,
               points: int = 10, step: int = 4, alphas: Sequence[float] = ALPHAS, refine: bool = True,
               patch: int = 31, sift_size: float = 4.0, limit: int | None = None, seed: int = 0,
               progress: bool = True) -> WarpStudy:
    """Measure correspondence on known warps (Long, Zhang & Darrell 2014): PCK@alpha per layer and warp, beside
    SIFT and raw pixel patches on the same query points and candidate grid.

    For every photo (fitted to the model input) one random warp of each kind in ``warps`` is drawn from a
    generator seeded by ``seed`` and the photo's position, plus the same warps with a photometric change
    (``photo``). An ``points x points`` grid of query points is matched from the photo into each warped photo
    (candidates every ``step`` pixels, parabola-refined); points whose true position ``H @ p`` falls outside the
    warped photo are left out.

    Args:
        model: the network.
        dataset: a folder, a list of image files or a :class:`~convlens.read.Dataset`.
        layers: spatial layers (default :func:`correspondence_layers`).
        limit: use only this many photos (evenly spread over the dataset).
        Others as in :func:`correspond`.

    Returns:
        A :class:`WarpStudy`.
    """
    from .dataset import load_dataset

    started = time.perf_counter()
    ds = load_dataset(dataset, limit=limit)
    if not len(ds):
        raise UserError("the warp study needs at least one photo")
    names = list(layers) if layers else correspondence_layers(model)
    bad = [m for m in anchors if m not in ANCHORS]
    if bad:
        raise UserError(f"unknown anchor {bad[0]!r}; valid: {', '.join(ANCHORS)}")
    for k in warps:
        if k not in GEOMETRIC:
            raise UserError(f"unknown warp {k!r}; valid: {', '.join(GEOMETRIC)}")
    alphas = tuple(float(a) for a in alphas)
    methods = [*names, *anchors]
    size: tuple[int, int] = tuple(model.preprocess.size)  # type: ignore[assignment]
    q = query_grid(size, points, step=step)
    grid = dense_grid(size, step)
    errs: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in methods}
    counts: dict[str, int] = {}
    example: dict[str, Any] = {}
    used: list[Path] = []
    files = list(ds.files)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), unit="photo", desc="warps", leave=False)
    try:
        for i, f in enumerate(files):
            try:
                x = model.preprocess.to_tensor(f).float().cpu()
            except Exception:  # noqa: BLE001 - an unreadable photo is skipped, like a scan does
                if bar is not None:
                    bar.update(1)
                continue
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            ws = make_warps(size, kinds=warps, photo=photo, generator=gen)
            xb = [_warped(x, w) for w in ws]
            first = not used
            maps = feature_maps(model, torch.stack([x, *xb]), names)
            kw: dict[str, Any] = {"patch": patch, "sift_size": sift_size}
            query = {m: describe(m, x, q, fmap=maps[m][0] if m in maps else None,
                                 rf=model.layers[m].rf if m in maps else None, **kw) for m in methods}
            for j, w in enumerate(ws):
                gt = warp_points(w.H, q)
                inside = ((gt[:, 0] >= 0) & (gt[:, 0] <= size[1] - 1) & (gt[:, 1] >= 0) & (gt[:, 1] <= size[0] - 1))
                counts[w.name] = counts.get(w.name, 0) + int(inside.sum())
                if first:
                    example.setdefault("warps", {})[w.name] = {"b": xb[j], "gt": gt, "inside": inside, "pred": {}}
                    example["a"], example["photo"] = x, Path(f)
                for m in methods:
                    db = describe(m, xb[j], grid.coords, fmap=maps[m][1 + j] if m in maps else None,
                                  rf=model.layers[m].rf if m in maps else None, **kw)
                    ms = match_descriptors(query[m][inside], db, grid, refine=refine)
                    errs[m].setdefault(w.name, []).append(np.linalg.norm(ms.points - gt[inside], axis=1))
                    if first:
                        example["warps"][w.name]["pred"][m] = ms.points
            used.append(Path(f))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if not used:
        raise UserError("none of the photos could be read")
    names_w = [w.name for w in make_warps(size, kinds=warps, photo=photo)]
    errors = {m: {w: np.concatenate(errs[m][w]) if errs[m].get(w) else np.zeros(0) for w in names_w}
              for m in methods}
    side = float(max(size))
    pck = {m: {w: {a: float((errors[m][w] <= a * side).mean()) if len(errors[m][w]) else float("nan")
                   for a in alphas} for w in names_w} for m in methods}
    rf = {m: (float(model.layers[m].rf.size[0]), float(model.layers[m].rf.stride[0])) for m in names}
    rf.update({"sift": (float(sift_size), 1.0), "pixels": (float(patch), 1.0)})
    example["query"] = q
    return WarpStudy(names, methods, names_w, alphas, pck, errors, {k: v for k, v in rf.items() if k in methods},
                     size, used, counts,
                     {"points_per_side": points, "step": step, "refine": refine, "patch": patch,
                      "sift_size": sift_size, "seed": seed, "photometric": photo},
                     time.perf_counter() - started, example)
