"""Accuracy by image attribute and by corruption (Russakovsky et al., "ImageNet Large Scale Visual Recognition
Challenge", IJCV 2015, section 6.3; Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019).

:func:`slice_accuracy` runs a labelled dataset through the network once, computes per-image attributes (object
scale as the area of the saliency-seeded GrabCut mask, brightness, contrast, colourfulness, sharpness, texture
energy, image size, aspect ratio, and any column of a user's table), cuts each attribute into bins (numeric,
equal-count quantile bins) or groups (categorical), and reports top-1 / top-5 accuracy with 95% Wilson intervals
per bin. With ``corruptions`` it also measures accuracy against severity 1-5 of each corruption
(:mod:`convlens.study.corruptions`) and, given a reference model, the corruption error relative to it (CE and mCE
of Hendrycks & Dietterich: the model's summed top-1 error over severities divided by the reference's on the very
same corrupted images).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..models.model import Model
from ..read.dataset import Dataset, load_dataset
from .corruptions import CORRUPTIONS, corrupt, corruption_names

__all__ = ["ATTRIBUTES", "Bin", "AttributeSlice", "CorruptionCurve", "SliceResult", "wilson", "image_attributes",
           "object_scale", "bin_accuracy", "resolve_labels", "read_table", "slice_accuracy"]

ATTRIBUTES: dict[str, str] = {
    "object_scale": "share of the image covered by the GrabCut mask seeded by the true class's Grad-CAM map",
    "brightness": "mean luma (Rec. 601) of the network's input, 0-1",
    "contrast": "RMS contrast: standard deviation of the luma, 0-1",
    "colourfulness": "Hasler & Suesstrunk (2003) colourfulness M on 0-255 values",
    "sharpness": "variance of the Laplacian of the luma (Pech-Pacheco et al. 2000), on 0-255 values",
    "texture_energy": "Laws (1980) texture energy: mean |response| of the E5E5, S5S5, E5L5, L5E5 masks",
    "image_size": "the file's pixel count, megapixels",
    "aspect_ratio": "the file's width / height",
}
"""Built-in per-image attributes and what each measures."""

_PIXEL_ATTRIBUTES = ("brightness", "contrast", "colourfulness", "sharpness", "texture_energy")
_FILE_ATTRIBUTES = ("image_size", "aspect_ratio")


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) for ``k`` successes in ``n`` trials at ``z`` (95% by default);
    ``(nan, nan)`` when ``n == 0``. Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or n."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo, 1.0 if k == n else hi)


@dataclass
class Bin:
    """One bin (numeric: ``lo <= value < hi``, the last bin closed) or group (categorical: ``label``) of an
    attribute: ``n`` images, top-1 / top-5 accuracy and their 95% Wilson intervals."""

    label: str
    n: int
    top1: float
    top1_ci: tuple[float, float]
    top5: float
    top5_ci: tuple[float, float]
    lo: float | None = None
    hi: float | None = None
    median: float | None = None


@dataclass
class AttributeSlice:
    """Accuracy per bin of one attribute; ``missing`` images had no value (e.g. GrabCut found no object)."""

    name: str
    kind: str  # "numeric" or "categorical"
    description: str
    bins: list[Bin]
    missing: int = 0


@dataclass
class CorruptionCurve:
    """Accuracy at severities 1..5 of one corruption (``top1[s-1]`` is severity ``s``), with Wilson intervals;
    ``ce`` / ``relative_ce`` are Hendrycks & Dietterich's corruption errors relative to the reference model
    (``None`` without one), ``reference_top1`` the reference's accuracy at each severity."""

    name: str
    family: str
    source: str
    description: str
    severities: list[int]
    n: int
    top1: list[float]
    top1_ci: list[tuple[float, float]]
    top5: list[float]
    top5_ci: list[tuple[float, float]]
    reference_top1: list[float] | None = None
    ce: float | None = None
    relative_ce: float | None = None


@dataclass
class SliceResult:
    """Everything :func:`slice_accuracy` found.

    Attributes:
        files: the images evaluated (dataset-relative names), ``labels`` their true class indices ``(N,)``.
        top5: the network's five best classes per image ``(N, 5)``, ``probs`` their probabilities.
        correct1, correct5: per-image top-1 / top-5 hits ``(N,)`` (bool).
        overall: accuracy over all images, as a :class:`Bin`.
        values: every attribute's per-image values (``nan`` / ``""`` where missing).
        slices: accuracy per bin / group of each attribute.
        corruptions: accuracy against severity per corruption (empty without ``corruptions``).
        mce, relative_mce: mean (relative) corruption error over the corruptions, relative to ``reference``
            (in %, as in Hendrycks & Dietterich; ``None`` without a reference).
        reference: the reference model's name and its clean accuracy ``reference_overall``.
        skipped: files left out because they had no label.
        seconds: wall time per stage.
    """

    model: str
    files: list[str]
    labels: np.ndarray
    top5: np.ndarray
    probs: np.ndarray
    correct1: np.ndarray
    correct5: np.ndarray
    overall: Bin
    values: dict[str, list[Any]]
    slices: list[AttributeSlice]
    corruptions: list[CorruptionCurve] = field(default_factory=list)
    corruption_n: int = 0
    mce: float | None = None
    relative_mce: float | None = None
    reference: str | None = None
    reference_overall: Bin | None = None
    skipped: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The numbers for ``result.json`` (per-image values included, so a script can re-bin them)."""
        return {
            "model": self.model, "n": len(self.files), "overall": self.overall, "skipped": self.skipped,
            "attributes": self.slices, "corruptions": self.corruptions, "corruption_images": self.corruption_n,
            "mce": self.mce, "relative_mce": self.relative_mce, "reference": self.reference,
            "reference_overall": self.reference_overall, "params": self.params, "seconds": self.seconds,
            "images": [{"file": f, "label": int(y), "top5": [int(c) for c in t], "correct1": bool(c1),
                        "correct5": bool(c5), **{k: v[i] for k, v in self.values.items()}}
                       for i, (f, y, t, c1, c5) in enumerate(zip(self.files, self.labels, self.top5, self.correct1,
                                                                 self.correct5))],
        }


# --- attributes ---------------------------------------------------------------------------------------------

def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _conv(img: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    k = k.to(img)
    pad = k.shape[-1] // 2
    return F.conv2d(F.pad(img[:, None], (pad, pad, pad, pad), mode="reflect"), k[None, None])[:, 0]


_L5 = torch.tensor([1.0, 4, 6, 4, 1])
_E5 = torch.tensor([-1.0, -2, 0, 2, 1])
_S5 = torch.tensor([-1.0, 0, 2, 0, -1])


def image_attributes(x: torch.Tensor, names: Sequence[str] = _PIXEL_ATTRIBUTES) -> dict[str, np.ndarray]:
    """Pixel attributes of a batch ``(N, 3, H, W)`` in [0, 1], each ``(N,)``: brightness and RMS contrast of the
    luma, colourfulness (Hasler & Suesstrunk 2003), sharpness (variance of the Laplacian, Pech-Pacheco et al.
    2000) and texture energy (Laws 1980: the mean absolute response of four zero-sum 5x5 masks after removing the
    local mean over 15x15 pixels). See :data:`ATTRIBUTES`."""
    unknown = [n for n in names if n not in _PIXEL_ATTRIBUTES]
    if unknown:
        raise ValueError(f"not a pixel attribute: {unknown}; known: {_PIXEL_ATTRIBUTES}")
    x = x.detach().float().cpu()
    y = _luma(x)
    out: dict[str, np.ndarray] = {}
    if "brightness" in names:
        out["brightness"] = y.mean((1, 2)).numpy()
    if "contrast" in names:
        out["contrast"] = y.flatten(1).std(1, unbiased=False).numpy()
    if "colourfulness" in names:
        r, g, b = (x[:, i] * 255 for i in range(3))
        rg, yb = r - g, 0.5 * (r + g) - b
        std = (rg.flatten(1).std(1, unbiased=False) ** 2 + yb.flatten(1).std(1, unbiased=False) ** 2).sqrt()
        mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2).sqrt()
        out["colourfulness"] = (std + 0.3 * mean).numpy()
    if "sharpness" in names:
        lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
        out["sharpness"] = _conv(y * 255, lap).flatten(1).var(1, unbiased=False).numpy()
    if "texture_energy" in names:
        g = y * 255
        g = g - F.avg_pool2d(F.pad(g[:, None], (7, 7, 7, 7), mode="reflect"), 15, stride=1)[:, 0]
        masks = [torch.outer(_E5, _E5), torch.outer(_S5, _S5), torch.outer(_E5, _L5), torch.outer(_L5, _E5)]
        out["texture_energy"] = torch.stack([_conv(g, m).abs().mean((1, 2)) for m in masks]).mean(0).numpy()
    return out


def object_scale(model: Model, x: torch.Tensor, targets: Sequence[int] | torch.Tensor, *,
                 method: str = "gradcam", size: int | None = None, workers: int = 2,
                 maps: torch.Tensor | None = None) -> np.ndarray:
    """The object's share of each image ``(N,)``: the area of the GrabCut mask seeded by the ``method`` saliency map
    of ``targets`` (Simonyan et al. 2014's segmentation, :func:`convlens.attribute.grabcut`).

    The saliency maps are computed for the whole batch at once. GrabCut, the slow part (about a second per
    224-pixel image on one core), runs on the image and map resized so the longer side is ``size`` (``None``: as
    they are) in ``workers`` threads; a share of the image barely depends on the resolution it is measured at.
    ``nan`` where the map is flat or GrabCut finds no foreground/background split (no size can be claimed there).
    ``maps`` ``(N, H, W)`` replaces the saliency maps (then ``model`` and ``targets`` are not used).
    """
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from ..attribute import grabcut, saliency

    if maps is None:
        t = torch.as_tensor(targets, dtype=torch.long, device=x.device)
        maps = saliency(model, x, method, t)
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"expected maps of shape {(x.shape[0], *x.shape[-2:])}, got {tuple(maps.shape)}")
    maps = maps.detach().float().cpu()
    xs = x.detach().float().cpu()
    if size is not None and max(xs.shape[-2:]) > size:
        f = size / max(xs.shape[-2:])
        hw = (max(1, round(xs.shape[-2] * f)), max(1, round(xs.shape[-1] * f)))
        xs = F.interpolate(xs, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        maps = F.interpolate(maps[:, None], size=hw, mode="bilinear", align_corners=False, antialias=True)[:, 0]

    def one(i: int) -> float:
        m = maps[i]
        if not torch.isfinite(m).all() or float(m.max() - m.min()) <= 1e-12:
            return math.nan
        try:
            return float(grabcut(xs[i:i + 1], m[None]).area[0])
        except cv2.error:
            return math.nan

    if workers > 1 and len(x) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return np.array(list(pool.map(one, range(len(x)))), dtype=np.float64)
    return np.array([one(i) for i in range(len(x))], dtype=np.float64)


def _file_attributes(path: Path) -> tuple[float, float]:
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # rotated by EXIF: width and height swap when displayed
        w, h = h, w
    return (w * h / 1e6, w / h)


# --- labels and tables ----------------------------------------------------------------------------------------

def resolve_labels(model: Model, dataset: Dataset) -> tuple[np.ndarray, list[str]]:
    """Each file's true class index (``-1`` where the file has none) and the names of unlabelled files.

    A label is a class index (the ``class_index`` column of a ``LABELS.csv``) or a class name that matches one of
    the model's names exactly (case-insensitive; a folder per class). Anything else is an error, never a guess.
    """
    if dataset.labels is None:
        raise UserError("the dataset has no labels: give --labels CSV (file,class_index) or a folder per class")
    n_cls = model.num_classes
    by_name: dict[str, int] = {}
    for i, name in enumerate(model.labels or []):
        by_name.setdefault(name.lower(), i)
    out = np.full(len(dataset), -1, dtype=np.int64)
    skipped: list[str] = []
    names = dataset.names()
    for i, lab in enumerate(dataset.labels):
        if lab is None or lab == "":
            skipped.append(names[i])
            continue
        if isinstance(lab, (int, np.integer)):
            if not 0 <= int(lab) < n_cls:
                raise UserError(f"label {lab} of {names[i]} is out of range: this model has classes 0-{n_cls - 1}")
            out[i] = int(lab)
            continue
        key = str(lab).strip().lower()
        if key not in by_name:
            raise UserError(f"label {lab!r} of {names[i]} is not one of the model's class names; "
                            f"use class indices (a class_index column) or the model's exact names")
        out[i] = by_name[key]
    if (out < 0).all():
        raise UserError("no file of the dataset has a label")
    return out, skipped


def read_table(path: str | os.PathLike, root: Path | None) -> dict[str, dict[str, str]]:
    """A CSV with a ``file`` column (relative to the dataset folder) as ``{normalised file: {column: value}}``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such table: {p}")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        cols = {c.lower().strip(): c for c in reader.fieldnames or []}
        if "file" not in cols:
            raise UserError(f"{p} needs a 'file' column, found: {', '.join(cols)}")
        return {os.path.normpath(row[cols["file"]].strip()): {k.strip(): (v or "").strip() for k, v in row.items()
                                                              if k is not None}
                for row in reader}


# --- binning -------------------------------------------------------------------------------------------------

def _bin(label: str, hit1: np.ndarray, hit5: np.ndarray, **extra: Any) -> Bin:
    n, k1, k5 = len(hit1), int(hit1.sum()), int(hit5.sum())
    return Bin(label, n, k1 / n if n else math.nan, wilson(k1, n), k5 / n if n else math.nan, wilson(k5, n), **extra)


def _fmt(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def bin_accuracy(values: Sequence[Any], correct1: np.ndarray, correct5: np.ndarray, *, name: str = "value",
                 bins: int = 5, max_groups: int = 12, kind: str | None = None,
                 description: str = "") -> AttributeSlice:
    """Accuracy per bin of one attribute.

    Numeric values (``kind="numeric"``, or every non-missing value reads as a number) are cut at their quantiles
    into ``bins`` bins of (nearly) equal count, so each bin's interval is as tight as the data allow; tied values
    never straddle an edge. Categorical values form one group each, the ``max_groups`` largest kept and the rest
    pooled as ``other``. ``nan`` / empty values are left out and counted in ``missing``.
    """
    vals = list(values)
    c1, c5 = np.asarray(correct1, bool), np.asarray(correct5, bool)
    if len(vals) != len(c1) or len(c1) != len(c5):
        raise ValueError(f"{len(vals)} values for {len(c1)} / {len(c5)} outcomes")

    def as_float(v: Any) -> float | None:
        if v is None or (isinstance(v, str) and not v.strip()):
            return math.nan
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    floats = [as_float(v) for v in vals]
    if kind is None:
        kind = "numeric" if all(f is not None for f in floats) else "categorical"
    if kind == "numeric":
        arr = np.array([math.nan if f is None else f for f in floats], dtype=np.float64)
        ok = np.isfinite(arr)
        v, h1, h5 = arr[ok], c1[ok], c5[ok]
        out: list[Bin] = []
        if len(v):
            edges = np.unique(np.quantile(v, np.linspace(0, 1, max(1, bins) + 1)))
            if len(edges) == 1:
                edges = np.array([edges[0], edges[0]])
            # bin i holds edges[i] <= v < edges[i+1]; the last bin also takes the maximum
            idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)
            for i in range(len(edges) - 1):
                sel = idx == i
                if not sel.any():
                    continue
                lo, hi = float(edges[i]), float(edges[i + 1])
                close = "]" if i == len(edges) - 2 else ")"
                out.append(_bin(f"[{_fmt(lo)}, {_fmt(hi)}{close}", h1[sel], h5[sel], lo=lo, hi=hi,
                                median=float(np.median(v[sel]))))
        return AttributeSlice(name, "numeric", description, out, int((~ok).sum()))
    keys = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip() for v in vals]
    present = np.array([k != "" for k in keys])
    counts: dict[str, int] = {}
    for k in keys:
        if k:
            counts[k] = counts.get(k, 0) + 1
    order = sorted(counts, key=lambda k: (-counts[k], k))
    kept, rest = order[:max_groups], order[max_groups:]
    arr_keys = np.array(keys, dtype=object)
    out = [_bin(k, c1[arr_keys == k], c5[arr_keys == k]) for k in kept]
    if rest:
        sel = np.isin(arr_keys, rest)
        out.append(_bin(f"other ({len(rest)} groups)", c1[sel], c5[sel]))
    return AttributeSlice(name, "categorical", description, out, int((~present).sum()))


# --- the study ----------------------------------------------------------------------------------------------

def _logits_fn(model: Model, engine: str) -> tuple[Callable[[torch.Tensor], torch.Tensor], Any]:
    """A forward-only ``x -> logits``: the compiled reader of the classifier layer when that layer's output is the
    network's output (checked on a probe), else eager PyTorch. Returns the function and a closer."""
    import contextlib

    from ..core.engine import open_reader

    stack = contextlib.ExitStack()
    scripted = isinstance(model.module, torch.jit.ScriptModule)  # no hooks: read it eagerly
    name = None if engine == "torch" or scripted else model.layers.classifier()
    if name is not None:
        probe = torch.rand(2, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(0)).to(model.device)
        with torch.no_grad():
            want = model(probe).float()
        if tuple(model.layers[name].shape) == tuple(want.shape[1:]):
            reader = stack.enter_context(open_reader(model, [name], engine=engine))
            got = reader(probe)[name].float().to(want.device)
            if torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()) + 1e-5):
                return (lambda x: reader(x)[name].float()), stack
        stack.close()
        stack = contextlib.ExitStack()

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).float()

    return eager, stack


def _hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    k = min(5, logits.shape[-1])
    probs = logits.softmax(-1)
    p, top = probs.topk(k, -1)
    y = y.to(top.device)
    return ((top[:, 0] == y).cpu().numpy(), (top == y[:, None]).any(1).cpu().numpy(), top.cpu(), p.cpu())


def slice_accuracy(model: Model, dataset: str | os.PathLike | Dataset, *, labels: str | os.PathLike | None = None,
                   attributes: Sequence[str] | None = None, table: str | os.PathLike | None = None, bins: int = 5,
                   max_groups: int = 12, corruptions: str | Sequence[str] | None = None,
                   severities: Sequence[int] = (1, 2, 3, 4, 5), corruption_limit: int | None = None,
                   reference: Model | None = None, limit: int | None = None, batch_size: int = 32,
                   saliency_method: str = "gradcam", engine: str = "auto", seed: int = 0,
                   progress: bool = False) -> SliceResult:
    """Top-1 / top-5 accuracy per bin of image attributes (Russakovsky et al. 2015) and against corruption
    severity (Hendrycks & Dietterich 2019), with 95% Wilson intervals.

    Args:
        model: the network judged; ``dataset`` a folder (``LABELS.csv`` with ``file,class_index``, or a folder per
            class named by the model's class names) or a :class:`~convlens.read.Dataset`; ``labels`` another CSV.
        attributes: names of :data:`ATTRIBUTES` and/or columns of ``table`` (default: every built-in attribute).
            A column whose values all read as numbers is binned, any other is grouped.
        table: a CSV with a ``file`` column whose other columns may be named in ``attributes`` (default: the
            labels CSV).
        bins: equal-count bins per numeric attribute; ``max_groups`` groups per categorical one.
        corruptions: ``None`` (none), ``"default"``, ``"all"`` or names of :data:`~convlens.study.CORRUPTIONS`;
            each is applied at ``severities`` to the network's input (after its resize and crop, as ImageNet-C
            corrupts 224-pixel crops) of the first ``corruption_limit`` images (evenly spread; default all).
        reference: a second model evaluated on the same corrupted pixels (resized to its input), giving the
            corruption error CE = sum_s E_model / sum_s E_reference per corruption, its mean (mCE) and the relative
            versions that subtract each model's clean error, all in %.
        limit: evaluate the first ``limit`` images only (evenly spread over the sorted files).
        saliency_method: the map that seeds GrabCut for ``object_scale`` (of the true class).
        engine: forward engine for plain predictions (``auto`` uses the compiled reader when it matches PyTorch).
        seed: seeds every random corruption (per image, independent of batching).

    Returns:
        a :class:`SliceResult`; accuracy per bin is in ``slices``, against severity in ``corruptions``.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    ds = load_dataset(dataset, labels=labels, limit=limit)
    y_all, skipped = resolve_labels(model, ds)
    keep = np.flatnonzero(y_all >= 0)
    ds = ds[keep]
    y = torch.from_numpy(y_all[keep])
    names = ds.names()
    wanted = list(attributes) if attributes is not None else list(ATTRIBUTES)
    tab: dict[str, dict[str, str]] = {}
    table_path = table if table is not None else (labels if labels is not None else next(
        (p for p in sorted(ds.root.iterdir()) if p.name.lower() == "labels.csv"), None) if ds.root else None)
    columns: list[str] = []
    extra = [a for a in wanted if a not in ATTRIBUTES]
    if extra:
        if table_path is None:
            raise UserError(f"unknown attribute {extra[0]!r}: built-in are {', '.join(ATTRIBUTES)}; "
                            f"other names are columns of --table CSV")
        tab = read_table(table_path, ds.root)
        have = set().union(*(row.keys() for row in tab.values())) if tab else set()
        for a in extra:
            if a not in have:
                raise UserError(f"unknown attribute {a!r}: built-in are {', '.join(ATTRIBUTES)}; "
                                f"columns of {table_path}: {', '.join(sorted(have))}")
        columns = extra
    cnames = corruption_names(corruptions) if corruptions is not None else []
    if "object_scale" in wanted and isinstance(model.module, torch.jit.ScriptModule):
        raise UserError("object_scale needs a saliency map, and a TorchScript network cannot be hooked; "
                        "leave it out with --attributes or load the network as Python")
    sev = [int(s) for s in severities]
    if any(not 1 <= s <= 5 for s in sev) or not sev:
        raise UserError(f"severities must be 1-5, got {list(severities)}")
    if bins < 1:
        raise UserError(f"bins must be at least 1, got {bins}")

    n = len(ds)
    values: dict[str, list[Any]] = {a: [] for a in wanted}
    correct1, correct5, tops, probs = [], [], [], []
    ncorr = n if corruption_limit is None else min(n, max(1, corruption_limit))
    corr_pos = set(np.linspace(0, n - 1, ncorr).round().astype(int).tolist()) if cnames else set()
    corr_idx = sorted(corr_pos)
    hits1 = {c: np.zeros((len(sev), ncorr), bool) for c in cnames}
    hits5 = {c: np.zeros((len(sev), ncorr), bool) for c in cnames}
    ref_hits1 = {c: np.zeros((len(sev), ncorr), bool) for c in cnames}
    ref_clean1 = np.zeros(ncorr, bool)
    ref_clean5 = np.zeros(ncorr, bool)
    seconds = {"predict": 0.0, "attributes": 0.0, "object_scale": 0.0, "corruptions": 0.0}
    logits_of, closer = _logits_fn(model, engine)
    ref_of, ref_closer = _logits_fn(reference, engine) if reference is not None else (None, None)
    steps = n + (ncorr * len(cnames) * len(sev))
    bar = tqdm(total=steps, desc="slice", unit="img", disable=not progress, leave=False)
    try:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            tb = time.perf_counter()
            x = model.load([ds.files[i] for i in range(start, stop)])
            yb = y[start:stop]
            h1, h5, top, p = _hits(logits_of(x), yb)
            correct1.append(h1)
            correct5.append(h5)
            tops.append(top)
            probs.append(p)
            seconds["predict"] += time.perf_counter() - tb
            tb = time.perf_counter()
            pix = [a for a in wanted if a in _PIXEL_ATTRIBUTES]
            if pix:
                for k, v in image_attributes(x, pix).items():
                    values[k] += [float(e) for e in v]
            for a in wanted:
                if a in _FILE_ATTRIBUTES:
                    for i in range(start, stop):
                        size, aspect = _file_attributes(ds.files[i])
                        values[a].append(size if a == "image_size" else aspect)
            for a in columns:
                for i in range(start, stop):
                    row = tab.get(os.path.normpath(names[i]), {})
                    values[a].append(row.get(a, ""))
            seconds["attributes"] += time.perf_counter() - tb
            if "object_scale" in wanted:
                tb = time.perf_counter()
                values["object_scale"] += [float(v) for v in object_scale(model, x, yb, method=saliency_method)]
                seconds["object_scale"] += time.perf_counter() - tb
            bar.update(stop - start)
            sel = [i for i in range(start, stop) if i in corr_pos]
            if sel:
                tb = time.perf_counter()
                xs = x[[i - start for i in sel]]
                ys = y[sel]
                cols = [corr_idx.index(i) for i in sel]
                ids = ds.ids[sel]
                if ref_of is not None:
                    r1, r5, _, _ = _hits(ref_of(_fit(cast(Model, reference), xs)), ys)
                    ref_clean1[cols], ref_clean5[cols] = r1, r5
                for c in cnames:
                    for si, s in enumerate(sev):
                        xc = corrupt(xs, c, s, seed=seed, ids=ids)
                        a1, a5, _, _ = _hits(logits_of(xc), ys)
                        hits1[c][si, cols], hits5[c][si, cols] = a1, a5
                        if ref_of is not None:
                            ref_hits1[c][si, cols] = _hits(ref_of(_fit(cast(Model, reference), xc)), ys)[0]
                        bar.update(len(sel))
                seconds["corruptions"] += time.perf_counter() - tb
    finally:
        bar.close()
        closer.close()
        if ref_closer is not None:
            ref_closer.close()

    c1, c5 = np.concatenate(correct1), np.concatenate(correct5)
    slices = [bin_accuracy(values[a], c1, c5, name=a, bins=bins, max_groups=max_groups,
                           kind="numeric" if a in ATTRIBUTES else None,
                           description=ATTRIBUTES.get(a, f"column {a!r} of {table_path}")) for a in wanted]
    curves: list[CorruptionCurve] = []
    for c in cnames:
        k1, k5 = hits1[c].sum(1), hits5[c].sum(1)
        curve = CorruptionCurve(c, CORRUPTIONS[c].family, CORRUPTIONS[c].source, CORRUPTIONS[c].doc, sev, ncorr,
                                [float(k) / ncorr for k in k1], [wilson(int(k), ncorr) for k in k1],
                                [float(k) / ncorr for k in k5], [wilson(int(k), ncorr) for k in k5])
        if reference is not None:
            rk = ref_hits1[c].sum(1)
            curve.reference_top1 = [float(k) / ncorr for k in rk]
            err, ref_err = (ncorr - k1).sum(), (ncorr - rk).sum()
            clean_err = ncorr - int(c1[corr_idx].sum())
            ref_clean_err = ncorr - int(ref_clean1.sum())
            curve.ce = 100.0 * err / ref_err if ref_err > 0 else math.nan
            rel_ref = ref_err - len(sev) * ref_clean_err
            curve.relative_ce = 100.0 * (err - len(sev) * clean_err) / rel_ref if rel_ref > 0 else math.nan
        curves.append(curve)
    mce = rmce = None
    if reference is not None and curves:
        mce = float(np.mean([cv.ce for cv in curves]))
        rmce = float(np.mean([cv.relative_ce for cv in curves]))
    ref_overall = _bin("reference", ref_clean1, ref_clean5) if reference is not None and cnames else None
    seconds["total"] = time.perf_counter() - t0
    params = {"bins": bins, "max_groups": max_groups, "attributes": wanted, "corruptions": cnames, "severities": sev,
              "corruption_limit": corruption_limit, "limit": limit, "saliency_method": saliency_method,
              "seed": seed, "table": str(table_path) if table_path else None}
    return SliceResult(model.name if hasattr(model, "name") else str(model), names, y.numpy(),
                       torch.cat(tops).numpy(), torch.cat(probs).numpy(), c1, c5, _bin("all", c1, c5), values, slices,
                       curves, ncorr if cnames else 0, mce, rmce,
                       getattr(reference, "name", None) if reference is not None else None, ref_overall,
                       [str(s) for s in skipped], params, {k: round(v, 3) for k, v in seconds.items()})


def _fit(model: Model, x: torch.Tensor) -> torch.Tensor:
    """The same pixels at ``model``'s input size (antialiased bilinear, no crop), on its device."""
    x = x.to(model.device)
    return x if tuple(x.shape[-2:]) == tuple(model.preprocess.size) else model.preprocess.resize_tensor(x)

