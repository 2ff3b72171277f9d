"""Reducers: what a :func:`~convlens.read.scan.scan` computes while it streams a dataset through a network.

Each reducer sees every batch once (``update``), can be combined with another reducer of the same kind that saw
other images (``merge``; associative and commutative, so scans can be split across processes or machines and
combined in any order), and turns its state into plain data (``result``). State is bounded: top-k keeps k
entries per channel, counts and histograms are fixed-size; only pooled features and pixel codes grow with the
dataset (one row per image, written to a disk cache as they come when the scan has a ``cache_dir``).

Write your own by subclassing :class:`Reducer`: name the layers you need in ``layers`` and implement the three
methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..results import open_memmap, save_array

__all__ = [
    "BatchMeta",
    "DeadCount",
    "DeadUnits",
    "Features",
    "Histogram",
    "HistogramResult",
    "PixelCodes",
    "PooledFeatures",
    "Reducer",
    "TopK",
    "TopKResult",
]


@dataclass
class BatchMeta:
    """What a reducer knows about the images of a batch besides their activations.

    Attributes:
        ids: ``(B,)`` each image's id in the dataset (its position in the full, unsplit dataset).
        files: the ``B`` image paths.
        labels: their labels (``None`` entries where unknown) or ``None``.
        pixels: the pixel batch ``(B, 3, H, W)`` in [0, 1] that went into the network.
    """

    ids: np.ndarray
    files: list[Path]
    labels: list[Any] | None
    pixels: torch.Tensor


class Reducer:
    """Base class: ``update`` with each batch, ``merge`` with a peer that saw other images, ``result`` at the end.

    ``layers`` names the layer outputs the reducer reads (the scan taps their union once per batch).
    """

    layers: tuple[str, ...] = ()
    name: str = "reducer"

    def start(self, dataset: Any, model: Any, cache_dir: Path | None) -> None:
        """Called once before the first batch with the dataset being scanned (sizes are known from here)."""

    def pending(self) -> np.ndarray | None:
        """Positions of the dataset this reducer still needs to see (``None``: all of them)."""
        return None

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        raise NotImplementedError

    def merge(self, other: Reducer) -> Reducer:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Flush what is on disk (called after the last batch, and on interruption)."""

    def _check_peer(self, other: Reducer) -> None:
        if type(other) is not type(self) or other.layers != self.layers:
            raise ValueError(f"cannot merge {other!r} into {self!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self.layers)})"


def _spatial(a: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` for spatial outputs, ``(B, C, 1, 1)`` for flat ones."""
    if a.dim() == 2:
        return a[:, :, None, None]
    if a.dim() != 4:
        raise UserError(f"expected a layer output (B, C) or (B, C, H, W), got shape {tuple(a.shape)}")
    return a


# -- pooled features --------------------------------------------------------------------------------------------
@dataclass
class Features:
    """Pooled features ("CNN codes") of every image: ``layers[name]`` is an ``(N, C)`` float32 array.

    Rows follow ``ids`` (sorted); ``files`` and ``labels`` are aligned with the rows. Arrays may be memory-mapped
    from the cache folder.
    """

    layers: dict[str, np.ndarray]
    ids: np.ndarray
    files: list[Path]
    labels: list[Any] | None = None

    def __getitem__(self, layer: str) -> np.ndarray:
        return self.layers[layer]


class PooledFeatures(Reducer):
    """Global-pool each layer's output per image (``avg`` or ``max``) into one row of an ``(N, C)`` array.

    With a cache folder, rows are written to ``.npy`` files as they are computed (memory-mapped, so memory stays
    flat) and reused when model, layer, pooling, preprocessing and files are unchanged; a scan interrupted with
    Ctrl-C resumes where it stopped.
    """

    def __init__(self, layers: str | list[str] | tuple[str, ...], *, pool: str = "avg") -> None:
        self.layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.name = "features"
        self._arrays: dict[str, np.ndarray] = {}
        self._done = np.zeros(0, dtype=bool)
        self._ids = np.zeros(0, dtype=np.int64)
        self._files: list[Path] = []
        self._labels: list[Any] | None = None
        self._dataset: Any = None
        self._paths: dict[str, Path] = {}
        self._done_path: Path | None = None
        self._channels: dict[str, int] = {}

    # cache key: the weights, preprocessing and code version (core.cache), layer, pooling and the files themselves
    def _key(self, model: Any, dataset: Any) -> str:
        from ..core.cache import cache_key

        return cache_key(model, "pooled", self.pool, list(self.layers), dataset.fingerprint(), dataset.ids.tolist(),
                         length=20)

    def start(self, dataset: Any, model: Any, cache_dir: Path | None) -> None:
        n = len(dataset)
        self._dataset = dataset
        self._ids = np.asarray(dataset.ids, dtype=np.int64)
        self._files = list(dataset.files)
        self._labels = None if dataset.labels is None else list(dataset.labels)
        self._done = np.zeros(n, dtype=bool)
        self._arrays, self._paths = {}, {}
        if cache_dir is None:
            return
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = self._key(model, dataset)
        self._done_path = cache_dir / f"{key}.done.npy"
        for layer in self.layers:
            self._paths[layer] = cache_dir / f"{key}.{layer}.npy"
        if self._done_path.is_file() and all(p.is_file() for p in self._paths.values()):
            try:
                done = np.load(self._done_path)
                arrays = {layer: np.load(p, mmap_mode="r+") for layer, p in self._paths.items()}
                if len(done) == n and all(a.shape[0] == n for a in arrays.values()):
                    self._done, self._arrays = done.astype(bool), arrays
                    self._channels = {k: a.shape[1] for k, a in arrays.items()}
            except (OSError, ValueError):  # a damaged cache is recomputed
                self._done = np.zeros(n, dtype=bool)

    def pending(self) -> np.ndarray | None:
        return ~self._done

    def _array(self, layer: str, channels: int) -> np.ndarray:
        arr = self._arrays.get(layer)
        if arr is None:
            n = len(self._done)
            if layer in self._paths:
                arr = open_memmap(self._paths[layer], (n, channels), np.float32)  # space checked, blocks reserved
            else:
                arr = np.zeros((n, channels), dtype=np.float32)
            self._arrays[layer] = arr
        return arr

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        pos = np.searchsorted(self._ids, meta.ids)
        for layer in self.layers:
            a = _spatial(activations[layer])
            pooled = a.mean((2, 3)) if self.pool == "avg" else a.amax((2, 3))
            self._array(layer, pooled.shape[1])[pos] = pooled.float().cpu().numpy()
        self._done[pos] = True

    def close(self) -> None:
        for arr in self._arrays.values():
            if isinstance(arr, np.memmap):
                arr.flush()
        if self._done_path is not None and (self._done.any() or self._done_path.is_file()):
            save_array(self._done_path, self._done)  # nothing read: nothing cached

    def merge(self, other: Reducer) -> PooledFeatures:
        self._check_peer(other)
        assert isinstance(other, PooledFeatures)
        a, b = self._state(), other._state()
        ids = np.concatenate([a[0], b[0]])
        order = np.argsort(ids, kind="stable")
        files = [(a[1] + b[1])[i] for i in order]
        labels = None if a[2] is None or b[2] is None else [(a[2] + b[2])[i] for i in order]
        arrays = {k: np.concatenate([a[3][k], b[3][k]])[order] for k in self.layers}
        self._ids, self._files, self._labels = ids[order], files, labels
        self._arrays, self._done, self._paths, self._done_path = arrays, np.ones(len(ids), bool), {}, None
        return self

    def _state(self) -> tuple[np.ndarray, list[Path], list[Any] | None, dict[str, np.ndarray]]:
        keep = self._done
        idx = np.flatnonzero(keep)
        arrays = {k: np.asarray(self._arrays[k])[idx] if k in self._arrays else np.zeros((0, 0), np.float32)
                  for k in self.layers}
        return (self._ids[idx], [self._files[i] for i in idx],
                None if self._labels is None else [self._labels[i] for i in idx], arrays)

    def result(self) -> Features:
        if self._done.all() and all(k in self._arrays for k in self.layers):
            return Features(dict(self._arrays), self._ids.copy(), list(self._files), self._labels)
        ids, files, labels, arrays = self._state()
        return Features(arrays, ids, files, labels)


# -- top-k -----------------------------------------------------------------------------------------------------
@dataclass
class TopKResult:
    """The k images that drive each channel hardest, with where in the map it happens.

    ``values``, ``ids``, ``y``, ``x`` are ``(C, k)`` arrays: for channel ``channels[c]``, its ``j``-th strongest
    image is ``ids[c, j]`` (a dataset id; ``files`` is indexed by id through ``file_of``), with maximum value
    ``values[c, j]`` at map position ``(y, x)``. Equal maxima -- common on a saturating layer (ReLU6 at 6.00)
    -- are ranked by ``means[c, j]``, the channel's mean activation over that image's map (how much of the
    image drives it), then by the lower image id; ``ties[c]`` counts the entries that share the k-th value with
    another, i.e. how many of the top k were ranked by the secondary key. Missing entries (fewer than k images
    seen) have id ``-1``.
    """

    layer: str
    channels: np.ndarray
    values: np.ndarray
    ids: np.ndarray
    y: np.ndarray
    x: np.ndarray
    map_size: tuple[int, int]
    files: dict[int, Path] = field(default_factory=dict)
    means: np.ndarray | None = None

    SECONDARY = "mean activation of the channel over the image's map"
    """How equal maxima are ranked (written to result.json and figures)."""

    @property
    def ties(self) -> np.ndarray:
        """Per channel, how many of its top-k entries have a maximum equal to another entry's."""
        out = np.zeros(len(self.channels), np.int64)
        for c in range(len(self.channels)):
            v = self.values[c][self.ids[c] >= 0]
            _, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
            out[c] = int((counts[inv] > 1).sum())
        return out

    def file_of(self, image_id: int) -> Path:
        return self.files[int(image_id)]


class TopK(Reducer):
    """Per channel, the ``k`` images with the largest maximum activation, with the arg-max position.

    One entry per image and channel (the image's strongest unit), as in Zeiler & Fergus (2014) and
    Girshick et al. (2014): top-k patches are k different images. ``channels`` restricts the channels kept.
    """

    def __init__(self, layer: str, k: int = 9, *, channels: list[int] | None = None) -> None:
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        self.layers = (layer,)
        self.k = k
        self.channels = None if channels is None else list(channels)
        self.name = f"topk:{layer}"
        self._v: torch.Tensor | None = None
        self._i: torch.Tensor | None = None
        self._p: torch.Tensor | None = None
        self._m: torch.Tensor | None = None  # secondary key: the channel's mean over the map
        self._w = 1
        self._hw = (1, 1)
        self._files: dict[int, Path] = {}

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        a = _spatial(activations[self.layers[0]])
        if self.channels is not None:
            if max(self.channels) >= a.shape[1]:
                raise UserError(f"channel {max(self.channels)} out of range: layer {self.layers[0]} has "
                                f"channels 0-{a.shape[1] - 1}")
            a = a[:, self.channels]
        self._hw = (int(a.shape[2]), int(a.shape[3]))
        self._w = int(a.shape[3])
        flat = a.flatten(2).float()
        vals, pos = flat.max(-1)  # (B, C)
        ids = torch.as_tensor(meta.ids, dtype=torch.int64)[:, None].expand_as(vals)
        self._fold(vals.t().cpu(), ids.t().contiguous(), pos.t().cpu(), flat.mean(-1).t().cpu())
        for i, f in zip(meta.ids, meta.files):
            self._files[int(i)] = Path(f)
        self._prune_files()

    def _fold(self, v: torch.Tensor, i: torch.Tensor, p: torch.Tensor, m: torch.Tensor | None = None) -> None:
        m = torch.zeros_like(v) if m is None else m
        if self._v is not None and self._i is not None and self._p is not None:
            old_m = self._m if self._m is not None else torch.zeros_like(self._v)
            v, i, p = torch.cat([self._v, v], 1), torch.cat([self._i, i], 1), torch.cat([self._p, p], 1)
            m = torch.cat([old_m, m], 1)
        # rank by the maximum; equal maxima (a saturating layer) by the mean over the map; then the lower id
        o = torch.sort(i, dim=1, stable=True).indices
        v, i, p, m = v.gather(1, o), i.gather(1, o), p.gather(1, o), m.gather(1, o)
        o = torch.sort(m, dim=1, descending=True, stable=True).indices
        v, i, p, m = v.gather(1, o), i.gather(1, o), p.gather(1, o), m.gather(1, o)
        o = torch.sort(v, dim=1, descending=True, stable=True).indices[:, : self.k]
        self._v, self._i, self._p, self._m = v.gather(1, o), i.gather(1, o), p.gather(1, o), m.gather(1, o)

    def _prune_files(self) -> None:
        assert self._i is not None
        if len(self._files) > 4 * self._i.numel() + 1024:
            keep = set(self._i.flatten().tolist())
            self._files = {k: f for k, f in self._files.items() if k in keep}

    def merge(self, other: Reducer) -> TopK:
        self._check_peer(other)
        assert isinstance(other, TopK)
        if other._v is not None and other._i is not None and other._p is not None:
            if self._v is None:
                self._v, self._i, self._p = other._v.clone(), other._i.clone(), other._p.clone()
                self._m = None if other._m is None else other._m.clone()
                self._hw, self._w = other._hw, other._w
            else:
                self._fold(other._v, other._i, other._p, other._m)
            self._files.update(other._files)
            self._prune_files()
        return self

    def result(self) -> TopKResult:
        if self._v is None or self._i is None or self._p is None:
            raise UserError("top-k saw no images")
        c, k = self._v.shape
        values = np.full((c, self.k), np.nan, np.float32)
        ids = np.full((c, self.k), -1, np.int64)
        pos = np.zeros((c, self.k), np.int64)
        values[:, :k], ids[:, :k], pos[:, :k] = self._v.numpy(), self._i.numpy(), self._p.numpy()
        means = np.full((c, self.k), np.nan, np.float32)
        if self._m is not None:
            means[:, :k] = self._m.numpy()
        chans = np.arange(c) if self.channels is None else np.asarray(self.channels)
        keep = set(ids.flatten().tolist())
        return TopKResult(self.layers[0], chans, values, ids, pos // self._w, pos % self._w, self._hw,
                          {k_: f for k_, f in self._files.items() if k_ in keep}, means)


# -- dead units -----------------------------------------------------------------------------------------------------
@dataclass
class DeadCount:
    """How often each channel of a layer stays silent.

    ``silent[c]`` counts the images on which channel ``c`` is never above ``threshold`` anywhere in its map;
    ``images`` is how many images were seen. ``dead`` lists channels silent on every image, ``fraction`` is
    ``len(dead) / channels``.
    """

    layer: str
    images: int
    silent: np.ndarray
    threshold: float = 0.0

    @property
    def channels(self) -> int:
        return len(self.silent)

    @property
    def dead(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.silent >= self.images)] if self.images else []

    @property
    def fraction(self) -> float:
        return len(self.dead) / max(1, self.channels)

    @property
    def silent_fraction(self) -> np.ndarray:
        """Per channel, the fraction of images where it never fires."""
        return self.silent / max(1, self.images)


class DeadUnits(Reducer):
    """Count, per channel of each layer, the images on which it never fires (max over the map <= threshold)."""

    def __init__(self, layers: str | list[str] | tuple[str, ...], *, threshold: float = 0.0) -> None:
        self.layers = (layers,) if isinstance(layers, str) else tuple(layers)
        self.threshold = threshold
        self.name = "dead"
        self._counts: dict[str, torch.Tensor] = {}
        self._n = 0

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        for layer in self.layers:
            a = _spatial(activations[layer])
            silent = (a.flatten(2).amax(-1) <= self.threshold).sum(0).cpu().to(torch.int64)
            self._counts[layer] = self._counts[layer] + silent if layer in self._counts else silent
        self._n += len(meta.ids)

    def merge(self, other: Reducer) -> DeadUnits:
        self._check_peer(other)
        assert isinstance(other, DeadUnits)
        for layer, c in other._counts.items():
            self._counts[layer] = self._counts[layer] + c if layer in self._counts else c.clone()
        self._n += other._n
        return self

    def result(self) -> dict[str, DeadCount]:
        return {layer: DeadCount(layer, self._n, self._counts[layer].numpy(), self.threshold)
                for layer in self.layers if layer in self._counts}


# -- histograms ------------------------------------------------------------------------------------------------------
@dataclass
class HistogramResult:
    """Activation values of a layer over the dataset: ``counts`` (``(bins,)``, or ``(C, bins)`` per channel) over
    ``edges`` (fixed, so merges are exact),
    ``below``/``above`` outside the range, exact ``min``/``max``/``mean``/``std`` and the fraction of exact zeros."""

    layer: str
    edges: np.ndarray
    counts: np.ndarray
    below: int
    above: int
    min: float
    max: float
    mean: float
    std: float
    zeros: float


class Histogram(Reducer):
    """A fixed-bin histogram of every activation value of a layer -- the one histogram reducer of the package.

    ``per_channel=False`` (default): one histogram over all channels and positions, ``counts (bins,)``.
    ``per_channel=True``: one per channel, ``counts (C, bins)`` (the microscope's). Values outside ``[low, high]``
    are counted in ``below`` / ``above``; with ``clip=True`` they are also put into the first / last bin, so
    ``counts`` sums to every value seen. Fixed bins make merges exact.
    """

    def __init__(self, layer: str, *, bins: int = 100, low: float = -8.0, high: float = 8.0,
                 per_channel: bool = False, clip: bool = False) -> None:
        if not high > low or bins < 1:
            raise UserError(f"histogram needs bins >= 1 and high > low, got bins={bins}, range=({low}, {high})")
        self.layers = (layer,)
        self.bins, self.low, self.high = bins, float(low), float(high)
        self.per_channel, self.clip = bool(per_channel), bool(clip)
        self.name = f"{'chist' if per_channel else 'hist'}:{layer}"
        self._counts: torch.Tensor | None = None
        self._below = self._above = self._zeros = self._n = 0
        self._sum = self._sumsq = 0.0
        self._min, self._max = float("inf"), float("-inf")

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        a = activations[self.layers[0]].detach().float()
        if a.dim() == 2:
            a = a[:, :, None, None]
        c = a.shape[1] if self.per_channel and a.dim() > 1 else 1
        rows = a.transpose(0, 1).reshape(c, -1) if c > 1 or self.per_channel else a.reshape(1, -1)
        pos = (rows - self.low) / (self.high - self.low) * self.bins
        idx = pos.floor().clamp_(0, self.bins - 1).long() + torch.arange(c, device=a.device)[:, None] * self.bins
        below, above = rows < self.low, rows > self.high
        if not self.clip:
            idx = idx[~(below | above)]
        counts = torch.bincount(idx.flatten(), minlength=c * self.bins).view(c, self.bins).cpu()
        self._counts = counts if self._counts is None else self._counts + counts
        self._below += int(below.sum())
        self._above += int(above.sum())
        self._zeros += int((rows == 0).sum())
        self._n += rows.numel()
        self._sum += float(rows.double().sum())
        self._sumsq += float(rows.double().square().sum())
        self._min, self._max = min(self._min, float(rows.min())), max(self._max, float(rows.max()))

    def merge(self, other: Reducer) -> Histogram:
        self._check_peer(other)
        assert isinstance(other, Histogram)
        if (other.bins, other.low, other.high, other.per_channel, other.clip) != \
                (self.bins, self.low, self.high, self.per_channel, self.clip):
            raise ValueError("histograms with different bins cannot be merged")
        if other._counts is not None:
            self._counts = other._counts.clone() if self._counts is None else self._counts + other._counts
        self._below += other._below
        self._above += other._above
        self._zeros += other._zeros
        self._n += other._n
        self._sum += other._sum
        self._sumsq += other._sumsq
        self._min, self._max = min(self._min, other._min), max(self._max, other._max)
        return self

    def result(self) -> HistogramResult:
        n = max(1, self._n)
        mean = self._sum / n
        counts = (torch.zeros(1, self.bins, dtype=torch.int64) if self._counts is None else self._counts).numpy()
        return HistogramResult(self.layers[0], np.linspace(self.low, self.high, self.bins + 1),
                               counts if self.per_channel else counts[0], self._below, self._above, self._min,
                               self._max, mean, float(np.sqrt(max(0.0, self._sumsq / n - mean * mean))),
                               self._zeros / n)


# -- pixel codes -------------------------------------------------------------------------------------------------------
class PixelCodes(Reducer):
    """Each input image shrunk to ``size x size`` pixels and flattened: the "pixel space" that nearest-neighbour
    figures compare CNN codes against. Result: ``(N, 3*size*size)`` float32 rows in dataset-id order."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.name = "pixels"
        self.layers = ()
        self._rows: dict[int, np.ndarray] = {}

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        small = F.interpolate(meta.pixels.float(), size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        for i, row in zip(meta.ids, small.flatten(1).cpu().numpy()):
            self._rows[int(i)] = row.astype(np.float32)

    def merge(self, other: Reducer) -> PixelCodes:
        self._check_peer(other)
        assert isinstance(other, PixelCodes)
        self._rows.update(other._rows)
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, codes)``: sorted ids and their ``(N, 3*size*size)`` rows."""
        ids = np.array(sorted(self._rows), dtype=np.int64)
        if not len(ids):
            return ids, np.zeros((0, 3 * self.size * self.size), np.float32)
        return ids, np.stack([self._rows[int(i)] for i in ids])
