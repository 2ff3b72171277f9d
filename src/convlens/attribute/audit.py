"""Saliency uncovers biases, at dataset scale: how much of each map's mass lies on the object, how much on the
background (the lecture's "saliency maps uncover biases", after Simonyan et al. 2014 and Ribeiro et al. 2016's
husky-on-snow example), over a folder and per predicted class.

The object is given by a mask per image (a user's masks, boxes, or GrabCut), in the model's centre crop. An
image *relies on the background* when most of its saliency mass falls outside the object -- more than the
background's share of the pixels alone would give (``concentration < 1``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..images import IMAGE_SUFFIXES, load_image
from ..models.model import Model
from .folder import FolderSaliency, crop_box, saliency_folder

__all__ = ["AuditItem", "SaliencyAudit", "audit_saliency", "center_prior", "object_share", "read_boxes"]

MASK_SOURCES = ("masks", "boxes", "segment")


def object_share(saliency: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> float:
    """Share of the positive saliency mass inside ``mask`` (both ``(H, W)``), in [0, 1]; NaN for an empty map."""
    s = np.clip(np.asarray(saliency, np.float64), 0, None)
    m = np.asarray(mask, bool)
    if s.shape != m.shape:
        raise ValueError(f"map {s.shape} and mask {m.shape} differ in shape")
    total = s.sum()
    return float((s * m).sum() / total) if total > 0 else float("nan")


def center_prior(size: tuple[int, int], *, sigma: float = 0.25) -> torch.Tensor:
    """A centred Gaussian ``(H, W)`` (``sigma`` times the side): the photographer's object prior, used to seed
    GrabCut independently of the map being audited."""
    H, W = size
    ys = (torch.arange(H) + 0.5) / H - 0.5
    xs = (torch.arange(W) + 0.5) / W - 0.5
    return torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))


def read_boxes(path: str | Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Object boxes from a CSV with columns ``file,x0,y0,x1,y1`` (pixels of the original photo; ``file`` its path
    relative to the folder, or its name); several rows per file are united."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such boxes file: {p}")
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    with open(p, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
                out.setdefault(row["file"].strip(), []).append(box)  # type: ignore[arg-type]
            except (KeyError, ValueError, TypeError):
                raise UserError(f"{p}: expected columns file,x0,y0,x1,y1 with numbers, got {row}") from None
    return out


def _box_mask(boxes: list[tuple[float, float, float, float]], photo: tuple[int, int], model: Model) -> np.ndarray:
    """The union of photo-pixel boxes as a mask of the model's centre crop."""
    H, W = model.preprocess.size
    x0, y0, x1, y1 = crop_box(photo, model)
    xs = x0 + (np.arange(W) + 0.5) * (x1 - x0) / W
    ys = y0 + (np.arange(H) + 0.5) * (y1 - y0) / H
    m = np.zeros((H, W), bool)
    for bx0, by0, bx1, by1 in boxes:
        m |= ((ys >= by0) & (ys < by1))[:, None] & ((xs >= bx0) & (xs < bx1))[None, :]
    return m


def _mask_file(folder: Path, stem: str) -> Path | None:
    rel = Path(stem)
    for cand in [folder / rel, *(folder / rel.with_suffix(s) for s in sorted(IMAGE_SUFFIXES))]:
        if cand.is_file():
            return cand
    return None


@dataclass
class AuditItem:
    """One image: the explained (predicted) class, the object's share of the crop (``area``), the share of the
    positive saliency mass on the object (``inside``) and on the background (``background = 1 - inside``), and
    ``concentration = inside / area`` (above 1: the map favours the object; below 1: the background)."""

    file: str
    stem: str
    target: int
    label: str
    probability: float
    area: float
    inside: float
    map: str = ""
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def background(self) -> float:
        return 1.0 - self.inside

    @property
    def concentration(self) -> float:
        return self.inside / self.area if self.area > 0 else float("nan")


@dataclass
class SaliencyAudit:
    """The audit of a folder (:func:`audit_saliency`): one :class:`AuditItem` per image that has a mask
    (``missing`` lists images without one), the method and where the masks came from."""

    method: str
    source: str
    items: list[AuditItem]
    missing: list[str]
    folder: FolderSaliency

    def background_shares(self) -> np.ndarray:
        """The background share of every image (the distribution over the folder)."""
        return np.array([i.background for i in self.items if not math.isnan(i.inside)])

    def summary(self) -> dict[str, float]:
        """Mean, median, 10th / 90th percentile of the background share, and the share of images whose map
        falls mostly outside the object (``background > 0.5``) or favours the background (``concentration < 1``)."""
        b = self.background_shares()
        conc = np.array([i.concentration for i in self.items if not math.isnan(i.inside)])
        if not len(b):
            return {"images": 0}
        return {"images": len(b), "mean": float(b.mean()), "median": float(np.median(b)),
                "p10": float(np.percentile(b, 10)), "p90": float(np.percentile(b, 90)),
                "mostly_background": float((b > 0.5).mean()), "favours_background": float((conc < 1).mean())}

    def per_class(self) -> list[dict[str, Any]]:
        """Per predicted class: images, mean background share, mean object area, mean concentration; most
        background-reliant class first."""
        groups: dict[int, list[AuditItem]] = {}
        for i in self.items:
            if not math.isnan(i.inside):
                groups.setdefault(i.target, []).append(i)
        rows = [{"class": c, "label": g[0].label, "images": len(g),
                 "background": float(np.mean([i.background for i in g])),
                 "area": float(np.mean([i.area for i in g])),
                 "concentration": float(np.mean([i.concentration for i in g]))} for c, g in groups.items()]
        return sorted(rows, key=lambda r: (-r["background"], r["class"]))

    def most_background(self, k: int = 8) -> list[AuditItem]:
        """The ``k`` images whose maps rely most on the background (largest background share)."""
        valid = [i for i in self.items if not math.isnan(i.inside)]
        return sorted(valid, key=lambda i: (-i.background, i.stem))[:k]

    def to_dict(self, top: int = 8) -> dict[str, Any]:
        """The ``result.json`` entry: method, mask source, summary, per-class rows, the ``top`` most
        background-reliant images, images without a mask or skipped, and every image's numbers."""
        return {"method": self.method, "source": self.source, "summary": self.summary(), "per_class": self.per_class(),
                "missing": self.missing, "skipped": [{"file": f, "reason": r} for f, r in self.folder.skipped],
                "most_background": [i.stem for i in self.most_background(top)],
                "images": [{"file": i.file, "stem": i.stem, "target": i.target, "label": i.label,
                            "probability": i.probability, "area": i.area, "inside": i.inside,
                            "background": i.background, "concentration": i.concentration, "map": i.map}
                           for i in self.items]}


def audit_saliency(model: Model, folder: str | Path, store: str | Path, *, method: str = "gradcam",
                   masks: str | Path | None = None, boxes: str | Path | None = None, segment: bool = False,
                   segment_seed: str | None = None, options: dict[str, Any] | None = None, batch_size: int = 8,
                   seed: int = 0, progress: Callable[[int], Any] | None = None) -> SaliencyAudit:
    """Share of saliency mass inside the object vs on the background, per image of ``folder``.

    The maps of ``method`` explain each image's predicted class (:func:`~convlens.attribute.folder.saliency_folder`,
    resumable, stored under ``store``). The object mask of each image comes from exactly one source:
    ``masks`` -- a folder of mask images mirroring ``folder`` (same relative path, any image suffix; non-zero is
    object), ``boxes`` -- a CSV ``file,x0,y0,x1,y1`` in photo pixels, or ``segment`` -- GrabCut (Rother et al.
    2004) seeded by a centred prior, or, with ``segment_seed``, by that saliency method's map (Simonyan et al.
    2014's segmentation; seeding with the audited method itself would make the audit circular). Masks are taken
    to the model's centre crop like the photos.
    """
    from .segment import grabcut

    given = [s for s, v in (("masks", masks), ("boxes", boxes), ("segment", segment)) if v]
    if len(given) != 1:
        raise UserError("give exactly one mask source: --masks DIR, --boxes CSV or --segment")
    if masks is not None and not Path(masks).is_dir():
        raise UserError(f"no such masks folder: {masks}")
    box_table = read_boxes(boxes) if boxes is not None else {}
    methods = [method] + ([segment_seed] if segment and segment_seed and segment_seed != method else [])
    res = saliency_folder(model, folder, methods, store, options={method: dict(options or {})},
                          batch_size=batch_size, seed=seed, progress=progress)
    items, missing = [], []
    H, W = model.preprocess.size
    for it in res.items:
        sal = it.load(method)
        if masks is not None:
            f = _mask_file(Path(masks), it.stem)
            if f is None:
                missing.append(it.stem)
                continue
            img = model.preprocess.fit(load_image(f)).convert("L")
            mask = np.asarray(img) > 127
        elif boxes is not None:
            rows = box_table.get(it.stem) or box_table.get(Path(it.stem).name)
            if not rows:
                missing.append(it.stem)
                continue
            mask = _box_mask(rows, load_image(it.file).size, model)
        else:
            x = model.load(it.file)
            seed_map = (torch.from_numpy(it.load(segment_seed))[None] if segment_seed
                        else center_prior((H, W))[None])
            mask = grabcut(x.cpu(), seed_map).masks[0].numpy()
        items.append(AuditItem(it.file, it.stem, it.target, it.label, it.probability, float(mask.mean()),
                               object_share(sal, mask), it.maps[method], mask))
    source = given[0] + (f" (seeded by {segment_seed})" if segment and segment_seed else
                         " (seeded by a centre prior)" if segment else f" {masks or boxes}")
    return SaliencyAudit(method, source, items, missing, res)
