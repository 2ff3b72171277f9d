"""2-D maps of CNN codes: t-SNE (openTSNE, FFT gradients), PCA or UMAP; the grid layout; trustworthiness.

The "t-SNE of CNN codes" figure (Karpathy 2014, after van der Maaten & Hinton 2008): embed each image's
penultimate-layer features in 2-D, then snap the points to a G x G grid with an optimal one-to-one assignment
(Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`) so every cell shows one image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..runtime import private_rng

__all__ = ["METHODS", "Embedding", "embed", "grid_assignment", "pca", "trustworthiness"]

METHODS = ("tsne", "pca", "umap")


@dataclass
class Embedding:
    """2-D coordinates ``xy`` ``(N, 2)`` of ``N`` codes, how they were made, and how faithful they are.

    ``trustworthiness`` (Venna & Kaski 2001; scikit-learn's definition, 10 neighbours) is in [0, 1]: 1 means
    every point's 10 nearest neighbours in 2-D are also among its nearest in the full-dimensional codes.
    """

    xy: np.ndarray
    method: str
    seconds: float
    trustworthiness: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


def pca(x: np.ndarray, dims: int = 50, *, seed: int = 0) -> np.ndarray:
    """Centre the codes and project them on their first ``dims`` principal components (randomised SVD)."""
    x = np.asarray(x, dtype=np.float32)
    dims = min(dims, x.shape[0], x.shape[1])
    xc = torch.from_numpy(x - x.mean(0, keepdims=True))
    if dims < min(xc.shape) // 2:
        with private_rng(seed):  # svd_lowrank draws from the global generator: a private, seeded copy of it
            u, s, _ = torch.svd_lowrank(xc, q=dims + 10, niter=4)
    else:
        u, s, _ = torch.linalg.svd(xc, full_matrices=False)
    return (u[:, :dims] * s[:dims]).numpy().astype(np.float32)


def embed(codes: np.ndarray, method: str = "tsne", *, seed: int = 0, pca_dims: int = 50, perplexity: float = 30.0,
          fast: bool = True, n_jobs: int = 2, measure: bool = True) -> Embedding:
    """Embed codes ``(N, D)`` in 2-D.

    ``tsne`` (van der Maaten & Hinton 2008) runs openTSNE (Poličar et al. 2024) on the first ``pca_dims``
    principal components, from a PCA initialisation. With ``fast=True`` it uses the opt-SNE recipe
    (Belkina et al. 2019): learning rate N / exaggeration, early exaggeration stopped after 125 iterations and
    250 normal ones, approximate neighbours (Annoy) and FFT-interpolated gradients -- about 3x less work than the
    classic 250 + 750 iterations at the same trustworthiness (``benchmarks/bench_read_tsne.py``).
    ``fast=False`` runs openTSNE's defaults. ``pca`` returns the first two principal components; ``umap``
    needs the optional ``umap-learn`` package. ``measure`` computes trustworthiness (10 neighbours).
    """
    x = np.asarray(codes, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 5:
        raise UserError(f"need at least 5 codes (N, D) to embed, got shape {x.shape}")
    if method not in METHODS:
        raise UserError(f"unknown embedding method {method!r}; choose one of {', '.join(METHODS)}")
    started = time.perf_counter()
    params: dict[str, Any] = {"pca_dims": pca_dims}
    if method == "pca":
        xy = pca(x, 2, seed=seed)
    else:
        reduced = pca(x, pca_dims, seed=seed) if x.shape[1] > pca_dims else x
        if method == "tsne":
            xy, params = _tsne(reduced, seed=seed, perplexity=perplexity, fast=fast, n_jobs=n_jobs)
        else:
            try:
                import umap  # type: ignore[import-not-found]
            except ImportError:
                raise UserError("--method umap needs the optional package umap-learn (pip install umap-learn)") from None
            xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(reduced)
        params["pca_dims"] = pca_dims
    seconds = time.perf_counter() - started
    k = min(10, (len(x) - 1) // 2)  # scikit-learn's 10 neighbours; fewer for tiny sets (k < N/2)
    tw = trustworthiness(x, xy, k=k) if measure and k >= 1 else None
    return Embedding(np.asarray(xy, dtype=np.float32), method, seconds, tw, params)


def _tsne(x: np.ndarray, *, seed: int, perplexity: float, fast: bool, n_jobs: int) -> tuple[np.ndarray, dict]:
    from openTSNE import TSNE

    n = len(x)
    perplexity = min(perplexity, max(2.0, (n - 1) / 3.0))
    if not fast:
        params: dict[str, Any] = {"perplexity": perplexity, "fast": False}
        return np.asarray(TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs).fit(x)), params
    params = {"perplexity": perplexity, "fast": True, "early_exaggeration_iter": 125, "n_iter": 250,
              "learning_rate": "N/12", "neighbors": "annoy" if n > 1000 else "exact",
              "negative_gradient_method": "fft" if n > 5000 else "bh", "initialization": "pca"}
    tsne = TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs, initialization="pca",
                learning_rate="auto", early_exaggeration_iter=125, n_iter=250,
                neighbors=params["neighbors"], negative_gradient_method=params["negative_gradient_method"])
    return np.asarray(tsne.fit(x)), params


def trustworthiness(x: np.ndarray, y: np.ndarray, k: int = 10, *, chunk: int = 512) -> float:
    """Trustworthiness of embedding ``y`` of ``x`` with ``k`` neighbours (same value as scikit-learn's
    ``sklearn.manifold.trustworthiness``), computed in row chunks so 20,000 points need no N x N matrix."""
    from sklearn.neighbors import NearestNeighbors

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).double()
    n = xt.shape[0]
    if not 1 <= k < n / 2:
        raise UserError(f"trustworthiness needs 1 <= k < N/2, got k={k}, N={n}")
    emb_nn = NearestNeighbors(n_neighbors=k).fit(y).kneighbors(return_distance=False)  # (N, k), self excluded
    sq = (xt * xt).sum(1)
    total = 0.0
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        d = sq[a:b, None] + sq[None, :] - 2 * xt[a:b] @ xt.t()  # squared distances (B, N)
        d[torch.arange(b - a), torch.arange(a, b)] = float("inf")  # self is never a neighbour
        dj = d.gather(1, torch.from_numpy(emb_nn[a:b]))  # (B, k) distances to the 2-D neighbours
        # rank of j among i's neighbours in the full space (1 = nearest) = how many points are nearer, plus one
        r = torch.stack([(d < dj[:, m:m + 1]).sum(1) for m in range(k)], 1) + 1
        total += float((r - k).clamp(min=0).sum())
    return 1.0 - total * 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))


def grid_assignment(xy: np.ndarray, side: int | None = None) -> tuple[np.ndarray, int]:
    """Snap 2-D points to a ``side x side`` grid, one point per cell at most (Hungarian algorithm).

    Points are scaled to the unit square; the cost of putting a point in a cell is the squared distance to the
    cell centre, and :func:`scipy.optimize.linear_sum_assignment` finds the one-to-one assignment of least total
    cost. Returns ``(cell_of_point, side)``: ``cell_of_point[i]`` is the cell (row-major) of point ``i``, or
    ``-1`` when there are more points than cells (the points left out are those farthest from every free cell).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pts = np.asarray(xy, dtype=np.float64)
    side = side or math.ceil(math.sqrt(len(pts)))
    lo, hi = pts.min(0), pts.max(0)
    unit = (pts - lo) / np.where(hi > lo, hi - lo, 1.0)
    unit[:, 1] = 1.0 - unit[:, 1]  # row 0 is the top of the picture, where a scatter plot has its largest y
    g = (np.arange(side) + 0.5) / side
    cells = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)  # (x, y) per cell, row-major
    cost = cdist(unit, cells, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    out = np.full(len(pts), -1, dtype=np.int64)
    out[rows] = cols
    return out, side
