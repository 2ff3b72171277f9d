"""Units or directions? The top images along random and principal directions of a layer's feature space, beside
those of single units (Szegedy et al., "Intriguing properties of neural networks", ICLR 2014).

Szegedy et al. found that the images that maximise a random direction ``<phi(x), v>`` of a layer are as
semantically coherent as those that maximise a single unit ``<phi(x), e_i>`` -- so the space, not the unit
basis, holds the meaning. Here a unit is one direction among others: :class:`DirectionTopK` is a scan reducer
that projects every position of a layer's map on a matrix of unit-norm directions (rows of the identity for
units, random Gaussian directions, principal components) and keeps, per direction, the ``k`` images whose best
position projects highest, with that position -- exactly what :class:`~convlens.read.TopK` keeps for channels,
so the same receptive-field crops (:func:`~convlens.read.crop_patches`) follow. Units and directions come out of
ONE scan. Principal directions need the layer's covariance first: :class:`Moments` (mergeable, like every
reducer) gathers it in a scan before.

The measured question, :func:`coherence`: for each direction, how alike are the classes of its top-k images?
Two numbers: the fraction of pairs of top images that share a class, and the mean cosine similarity of their
classes' rows in the network's own final linear layer (the classifier space; rows centred on their mean), each
beside its chance value over random k-image subsets of the same dataset. Classes are the dataset's labels where
it has them, else the network's top-1 predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import UserError
from ..models import Model
from .reducers import BatchMeta, Reducer, TopK, TopKResult, _spatial

__all__ = [
    "KINDS",
    "Coherence",
    "DirectionSet",
    "DirectionStudy",
    "DirectionTop",
    "DirectionTopK",
    "Moments",
    "MomentsResult",
    "PredictedClass",
    "classifier_space",
    "coherence",
    "direction_set",
    "pca_directions",
    "random_directions",
    "top_along",
    "units_vs_directions",
]

KINDS: tuple[str, ...] = ("unit", "random", "pca")


# -- reducers --------------------------------------------------------------------------------------------------
@dataclass
class MomentsResult:
    """Mean ``(C,)`` and covariance ``(C, C)`` of a layer's ``C``-vectors over every position of every image."""

    layer: str
    count: int
    mean: np.ndarray
    cov: np.ndarray


class Moments(Reducer):
    """First and second moments of a layer's channel vectors, over all positions and images (float64 sums, so
    merging is exact up to rounding)."""

    def __init__(self, layer: str) -> None:
        self.layers = (layer,)
        self.name = f"moments:{layer}"
        self._n = 0
        self._s: torch.Tensor | None = None
        self._ss: torch.Tensor | None = None

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        a = _spatial(activations[self.layers[0]])
        v = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).double().cpu()
        s, ss = v.sum(0), v.t() @ v
        self._s = s if self._s is None else self._s + s
        self._ss = ss if self._ss is None else self._ss + ss
        self._n += len(v)

    def merge(self, other: Reducer) -> Moments:
        self._check_peer(other)
        assert isinstance(other, Moments)
        if other._s is not None and other._ss is not None:
            self._s = other._s.clone() if self._s is None else self._s + other._s
            self._ss = other._ss.clone() if self._ss is None else self._ss + other._ss
            self._n += other._n
        return self

    def result(self) -> MomentsResult:
        if self._s is None or self._ss is None or self._n < 2:
            raise UserError("moments need at least two activation vectors")
        mean = self._s / self._n
        cov = (self._ss - self._n * torch.outer(mean, mean)) / (self._n - 1)
        return MomentsResult(self.layers[0], self._n, mean.numpy(), cov.numpy())


class DirectionTopK(TopK):
    """Per direction (a row of ``directions``, shape ``(D, C)``), the ``k`` images whose best map position
    projects highest on it, with that position. Rows of the identity give exactly :class:`TopK`'s answer."""

    def __init__(self, layer: str, directions: np.ndarray | torch.Tensor, k: int = 9, *, tag: str = "") -> None:
        super().__init__(layer, k)
        d = torch.as_tensor(np.asarray(directions, dtype=np.float32))
        if d.dim() != 2 or not len(d):
            raise UserError(f"directions must be a (D, C) matrix, got shape {tuple(d.shape)}")
        self.directions = d
        self.name = f"dirtopk:{layer}" + (f":{tag}" if tag else "")

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        a = _spatial(activations[self.layers[0]]).float()
        if a.shape[1] != self.directions.shape[1]:
            raise UserError(f"directions have {self.directions.shape[1]} components but layer {self.layers[0]} has "
                            f"{a.shape[1]} channels")
        proj = torch.einsum("bchw,dc->bdhw", a, self.directions.to(a.device))
        self._hw = (int(proj.shape[2]), int(proj.shape[3]))
        self._w = int(proj.shape[3])
        vals, pos = proj.flatten(2).max(-1)  # (B, D)
        ids = torch.as_tensor(meta.ids, dtype=torch.int64)[:, None].expand_as(vals)
        self._fold(vals.t().cpu(), ids.t().contiguous(), pos.t().cpu())
        for i, f in zip(meta.ids, meta.files):
            self._files[int(i)] = Path(f)
        self._prune_files()

    def merge(self, other: Reducer) -> DirectionTopK:
        if not isinstance(other, DirectionTopK) or not torch.equal(other.directions, self.directions):
            raise ValueError(f"cannot merge {other!r} into {self!r}: different directions")
        super().merge(other)
        return self


class PredictedClass(Reducer):
    """Each image's top-1 class under the network, read from the output of its classifier layer."""

    def __init__(self, layer: str) -> None:
        self.layers = (layer,)
        self.name = "predicted"
        self._classes: dict[int, int] = {}

    def update(self, activations: dict[str, torch.Tensor], meta: BatchMeta) -> None:
        logits = activations[self.layers[0]]
        logits = logits.flatten(1) if logits.dim() > 2 else logits
        for i, c in zip(meta.ids, logits.argmax(1).cpu().tolist()):
            self._classes[int(i)] = int(c)

    def merge(self, other: Reducer) -> PredictedClass:
        self._check_peer(other)
        assert isinstance(other, PredictedClass)
        self._classes.update(other._classes)
        return self

    def result(self) -> dict[int, int]:
        return dict(self._classes)


# -- directions ------------------------------------------------------------------------------------------------
def random_directions(channels: int, count: int, *, generator: torch.Generator | None = None) -> np.ndarray:
    """``count`` directions drawn uniformly on the unit sphere of ``R^channels`` (normalised Gaussians)."""
    if count < 1 or channels < 1:
        raise UserError(f"need at least one direction of at least one channel, got {count} x {channels}")
    g = torch.randn(count, channels, generator=generator, dtype=torch.float64)
    return (g / g.norm(dim=1, keepdim=True)).numpy()


def pca_directions(moments: MomentsResult, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` leading principal directions ``(count, C)`` of the layer's activation vectors and the
    fraction of variance each explains. Each is signed so that the mean activation projects positively on it
    (an eigenvector's sign is otherwise arbitrary, and its top images would be those of its negative)."""
    vals, vecs = np.linalg.eigh(moments.cov)
    order = np.argsort(vals)[::-1][:count]
    v = vecs[:, order].T.copy()
    sign = np.sign(v @ moments.mean)
    v *= np.where(sign == 0, 1.0, sign)[:, None]
    total = float(np.clip(vals, 0, None).sum()) or 1.0
    return v, np.clip(vals[order], 0, None) / total


@dataclass
class DirectionSet:
    """The directions of a layer, one row each of ``vectors`` ``(D, C)``: ``kind[i]`` is ``unit``, ``random`` or
    ``pca``, ``index[i]`` the channel, the draw or the component, ``explained[i]`` the variance fraction of a
    principal direction (NaN for the others)."""

    layer: str
    vectors: np.ndarray
    kind: list[str]
    index: list[int]
    explained: list[float]

    def label(self, i: int) -> str:
        k, j = self.kind[i], self.index[i]
        if k == "unit":
            return f"unit {j}"
        if k == "pca":
            return f"pca {j}" + (f" ({self.explained[i]:.0%})" if np.isfinite(self.explained[i]) else "")
        return f"random {j}"

    def rows(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kind) if k == kind]


def direction_set(channels: int, layer: str, *, kinds: Sequence[str] = KINDS, count: int = 8,
                  units: Sequence[int] | None = None, moments: MomentsResult | None = None,
                  generator: torch.Generator | None = None) -> DirectionSet:
    """Stack the directions of ``kinds``: ``units`` (default: ``count`` channels drawn without replacement),
    ``count`` random directions and the ``count`` leading principal directions (needs ``moments``)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UserError(f"unknown direction kind {bad[0]!r}; valid: {', '.join(KINDS)}")
    vecs: list[np.ndarray] = []
    kind: list[str] = []
    index: list[int] = []
    expl: list[float] = []
    for k in dict.fromkeys(kinds):
        if k == "unit":
            if units is None:
                n = min(count, channels)
                chans = sorted(torch.randperm(channels, generator=generator)[:n].tolist())
            else:
                chans = list(units)
            bad_c = [c for c in chans if not 0 <= c < channels]
            if bad_c:
                raise UserError(f"channel {bad_c[0]} out of range: layer {layer} has channels 0-{channels - 1}")
            eye = np.eye(channels)
            vecs += [eye[c] for c in chans]
            kind += ["unit"] * len(chans)
            index += chans
            expl += [float("nan")] * len(chans)
        elif k == "random":
            r = random_directions(channels, count, generator=generator)
            vecs += list(r)
            kind += ["random"] * count
            index += list(range(count))
            expl += [float("nan")] * count
        else:
            if moments is None:
                raise ValueError("principal directions need the layer's moments")
            v, e = pca_directions(moments, min(count, channels))
            vecs += list(v)
            kind += ["pca"] * len(v)
            index += list(range(len(v)))
            expl += [float(x) for x in e]
    return DirectionSet(layer, np.stack(vecs).astype(np.float32), kind, index, expl)


# -- coherence -------------------------------------------------------------------------------------------------
def classifier_space(model: Model) -> np.ndarray:
    """The rows of the network's final linear layer ``(K, F)``, centred on their mean and L2-normalised: the
    network's own similarity between classes is the dot product of two rows."""
    name = model.layers.classifier()
    if name is None:
        raise UserError("this model has no final linear layer, so it has no classifier space to compare classes in")
    w = cast(torch.Tensor, model.layers.modules[name].weight).detach().double().cpu().numpy()
    w = w - w.mean(0, keepdims=True)
    return w / np.clip(np.linalg.norm(w, axis=1, keepdims=True), 1e-12, None)


@dataclass
class Coherence:
    """How alike the classes of each direction's top-k images are.

    ``same_class[i]``: the fraction of pairs of direction ``i``'s top images that share a class;
    ``near_class[i]``: the fraction of pairs whose classes are the same or neighbours (one among the other's
    ``near`` most similar classes in the classifier space; chance about ``near / K`` for ``K`` classes);
    ``similarity[i]``: their classes' mean pairwise cosine similarity in the classifier space (pairs of the same
    class count 1). ``flat[i]`` marks a direction whose top values are all equal (a unit that never fires: its
    "top images" are arbitrary), left out of the summaries. ``chance_*`` are the same numbers for random k-image
    subsets of the dataset (mean, std over ``chance_draws`` subsets).
    """

    k: int
    same_class: np.ndarray
    similarity: np.ndarray
    flat: np.ndarray
    chance_same_class: tuple[float, float]
    chance_similarity: tuple[float, float]
    chance_draws: int
    source: str  # "labels" or "predictions"
    near_class: np.ndarray = field(default_factory=lambda: np.zeros(0))
    chance_near_class: tuple[float, float] = (float("nan"), float("nan"))
    near: int = 10

    def summary(self, rows: Sequence[int]) -> dict[str, float]:
        """Mean and standard error over the (non-flat) directions ``rows``."""
        keep = [r for r in rows if not self.flat[r]]
        out: dict[str, float] = {"directions": float(len(keep)), "flat": float(len(rows) - len(keep))}
        for name, arr in (("same_class", self.same_class), ("near_class", self.near_class),
                          ("similarity", self.similarity)):
            v = arr[keep]
            out[name] = float(v.mean()) if len(v) else float("nan")
            out[name + "_sem"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        return out


def _pairs(classes: np.ndarray, space: np.ndarray, nearby: np.ndarray) -> tuple[float, float, float]:
    k = len(classes)
    iu = np.triu_indices(k, 1)
    same = (classes[:, None] == classes[None, :])[iu]
    sim = (space[classes] @ space[classes].T)[iu]
    near = nearby[classes[:, None], classes[None, :]][iu]
    return float(same.mean()), float(sim.mean()), float(near.mean())


def _nearby(space: np.ndarray, near: int) -> np.ndarray:
    """``(K, K)`` bool: the same class, or one among the other's ``near`` most similar classes (symmetric)."""
    sim = space @ space.T
    np.fill_diagonal(sim, -np.inf)
    idx = np.argsort(-sim, axis=1)[:, :near]
    out = np.zeros(sim.shape, bool)
    np.put_along_axis(out, idx, True, axis=1)
    out |= out.T
    np.fill_diagonal(out, True)
    return out


def coherence(top: TopKResult, classes: dict[int, int], space: np.ndarray, *, k: int = 9, draws: int = 2000,
              generator: torch.Generator | None = None, source: str = "labels", near: int = 10) -> Coherence:
    """Class coherence of each direction's top-``k`` images (Szegedy et al. 2014's question, measured).

    Args:
        top: the top images of every direction (``ids`` ``(D, >=k)``).
        classes: image id -> class index for every image of the dataset (labels or predictions).
        space: :func:`classifier_space` rows.
        draws: random k-image subsets of the dataset for the chance values.
        near: classes count as neighbours when one is among the other's ``near`` most similar classes.
    """
    if k < 2:
        raise UserError(f"coherence needs at least 2 top images, got k={k}")
    d = top.ids.shape[0]
    same, sim, nb = np.full(d, np.nan), np.full(d, np.nan), np.full(d, np.nan)
    flat = np.zeros(d, bool)
    nearby = _nearby(space, min(near, len(space) - 1))
    for i in range(d):
        ids = [int(j) for j in top.ids[i, :k] if j >= 0]
        vals = top.values[i, :k]
        flat[i] = len(ids) < k or bool(np.nanmax(vals) - np.nanmin(vals) <= 1e-12 * max(1.0, abs(np.nanmax(vals))))
        if len(ids) >= 2:
            same[i], sim[i], nb[i] = _pairs(np.array([classes[j] for j in ids]), space, nearby)
    pool = np.array([classes[j] for j in sorted(classes)])
    if len(pool) < k:
        raise UserError(f"coherence of top-{k} images needs at least {k} images, the dataset has {len(pool)}")
    chance = []
    for _ in range(draws):
        pick = torch.randperm(len(pool), generator=generator)[:k].numpy()
        chance.append(_pairs(pool[pick], space, nearby))
    c = np.array(chance)
    return Coherence(k, same, sim, flat, (float(c[:, 0].mean()), float(c[:, 0].std())),
                     (float(c[:, 1].mean()), float(c[:, 1].std())), draws, source, nb,
                     (float(c[:, 2].mean()), float(c[:, 2].std())), near)


# -- recipes ---------------------------------------------------------------------------------------------------
@dataclass
class DirectionTop:
    """The top images of every direction of one layer (``top``: a :class:`TopKResult` whose ``channels`` are the
    rows of ``directions``), and their class :class:`Coherence` when the network has a classifier."""

    directions: DirectionSet
    top: TopKResult
    coherence: Coherence | None = None

    @property
    def layer(self) -> str:
        return self.directions.layer


@dataclass
class DirectionStudy:
    """Units vs random vs principal directions for several layers: one :class:`DirectionTop` per layer."""

    layers: dict[str, DirectionTop]
    images: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[list[Any]]:
        """Rows ``[layer, kind, directions, same-class, sem, near-class, sem, similarity, sem]``, then a
        ``chance`` row per layer (its ``directions`` column is the number of random subsets, its sems the std)."""
        rows: list[list[Any]] = []
        for name, dt in self.layers.items():
            if dt.coherence is None:
                continue
            for kind in dict.fromkeys(dt.directions.kind):
                s = dt.coherence.summary(dt.directions.rows(kind))
                rows.append([name, kind, int(s["directions"]), s["same_class"], s["same_class_sem"],
                             s["near_class"], s["near_class_sem"], s["similarity"], s["similarity_sem"]])
            c = dt.coherence
            rows.append([name, "chance", c.chance_draws, c.chance_same_class[0], c.chance_same_class[1],
                         c.chance_near_class[0], c.chance_near_class[1], c.chance_similarity[0],
                         c.chance_similarity[1]])
        return rows


def _label_classes(model: Model, ds: Any) -> dict[int, int] | None:
    if ds.labels is None or any(lab is None for lab in ds.labels):
        return None
    out = {}
    for i, lab in zip(ds.ids, ds.labels):
        try:
            out[int(i)] = model.class_index(lab)
        except UserError:
            return None
    return out


def units_vs_directions(model: Model, dataset: Any, layers: Sequence[str] | str, *, kinds: Sequence[str] = KINDS,
                        count: int = 8, k: int = 9, units: Sequence[int] | None = None, seed: int = 0,
                        use_labels: bool = True, draws: int = 2000, batch_size: int | None = None,
                        progress: bool = True, limit: int | None = None) -> DirectionStudy:
    """Top images along single units, random directions and principal directions of each layer, from one scan,
    and their class coherence (Szegedy et al. 2014).

    A first scan gathers each layer's :class:`Moments` when principal directions are asked for; then ONE scan
    feeds a :class:`DirectionTopK` per layer holding all its directions (units, random, PCA) together, and reads
    the network's top-1 class of every image. Classes for the coherence are the dataset's labels (class indices
    or names the model knows) when ``use_labels`` and every image has one, else the predictions.

    Args:
        model: the network.
        dataset: a folder, a list of files or a :class:`~convlens.read.Dataset`.
        layers: spatial (or flat) layers.
        kinds: which of ``unit``, ``random``, ``pca``.
        count: directions of each kind (units: ``count`` channels drawn with ``seed`` unless ``units`` names them).
        k: top images per direction (coherence is measured on these).
        seed: seeds the unit draw, the random directions and the chance subsets.

    Returns:
        A :class:`DirectionStudy`; ``study.layers[name].top`` works with :func:`~convlens.read.crop_patches`.
    """
    import time

    from .dataset import load_dataset
    from .scan import scan

    started = time.perf_counter()
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise UserError("give at least one layer")
    ds = load_dataset(dataset, limit=limit)
    if len(ds) < k:
        raise UserError(f"need at least k={k} images, the dataset has {len(ds)}")
    infos = {n: model.layers[n] for n in names}
    gen = torch.Generator().manual_seed(seed)
    moments: dict[str, MomentsResult] = {}
    if "pca" in kinds:
        out = scan(model, ds, [Moments(n) for n in names], batch_size=batch_size, progress=progress)
        moments = {n: out[f"moments:{n}"] for n in names}
    sets = {n: direction_set(infos[n].channels, n, kinds=kinds, count=count, units=units, moments=moments.get(n),
                             generator=gen) for n in names}
    reducers: list[Reducer] = [DirectionTopK(n, sets[n].vectors, k) for n in names]
    head = model.layers.classifier()
    if head is not None:
        reducers.append(PredictedClass(head))
    out = scan(model, ds, reducers, batch_size=batch_size, progress=progress)
    classes = _label_classes(model, ds) if use_labels else None
    source = "labels"
    if classes is None and head is not None:
        classes, source = out["predicted"], "predictions"
    space = classifier_space(model) if head is not None else None
    result: dict[str, DirectionTop] = {}
    for n in names:
        top = out[f"dirtopk:{n}"]
        coh = None
        if space is not None and classes:
            coh = coherence(top, classes, space, k=k, draws=draws, generator=gen, source=source)
        result[n] = DirectionTop(sets[n], top, coh)
    return DirectionStudy(result, out.images, time.perf_counter() - started,
                          {"kinds": list(kinds), "count": count, "k": k, "seed": seed, "classes": source})


def top_along(model: Model, dataset: Any, layer: str, **kwargs: Any) -> DirectionTop:
    """:func:`units_vs_directions` for one layer: its :class:`DirectionTop`."""
    return units_vs_directions(model, dataset, [layer], **kwargs).layers[layer]
