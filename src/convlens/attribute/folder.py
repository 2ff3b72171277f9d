"""Saliency over a folder: every image, several methods, batched through the model, resumable, and two models
compared on the same photos (Spearman rank correlation of their maps per image).

Maps are kept in a store on disk, one ``.npy`` per image and method, under the image's path relative to the
folder (so same-named files in different sub-folders never collide and every output says where it came from),
beside a small JSON key: the model's fingerprint (weights, preprocessing), the method, its options and the
target. A rerun reuses a map only when its key matches, so changing the method, its parameters or the model
redoes exactly the images it affects.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..images import list_images, load_image
from ..models.model import Model
from .methods import RANDOM_METHODS

__all__ = [
    "FolderItem",
    "FolderSaliency",
    "ModelComparison",
    "compare_maps",
    "crop_box",
    "model_fingerprint",
    "output_stem",
    "saliency_folder",
    "spearman",
]

CODE_VERSION = "1"  # bump when a method's numbers change, so stored maps are redone


def model_fingerprint(model: Model) -> str:
    """A short hash of what a map depends on in the model: its weights, architecture and preprocessing."""
    h = hashlib.blake2b(digest_size=10)
    h.update(repr((model.name, model.preprocess, type(model.module).__name__)).encode())
    for name, t in model.module.state_dict().items():
        h.update(name.encode())
        if t.numel():
            h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def output_stem(file: Path, root: Path) -> str:
    """The image's path relative to ``root``, with ``/`` separators and its suffix kept (``a/b.jpg``): unique in the
    folder, and it names the source. Images outside ``root`` use their own name."""
    try:
        return file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return file.name


def crop_box(size: tuple[int, int], model: Model) -> tuple[float, float, float, float]:
    """Where the model's centre crop lies in the original photo of ``size = (width, height)``: ``(x0, y0, x1, y1)``
    in the photo's pixels (the map of the crop is drawn there)."""
    pre = model.preprocess
    w0, h0 = size
    s = pre.resize / min(w0, h0)
    nw, nh = max(pre.size[1], round(w0 * s)), max(pre.size[0], round(h0 * s))
    left, top = (nw - pre.size[1]) // 2, (nh - pre.size[0]) // 2
    sx, sy = w0 / nw, h0 / nh
    return (left * sx, top * sy, (left + pre.size[1]) * sx, (top + pre.size[0]) * sy)


@dataclass
class FolderItem:
    """One image of the folder: its file, output stem, the explained class, its probability, and per method the
    map's path in the store and whether it was reused from an earlier run."""

    file: str
    stem: str
    target: int
    label: str
    probability: float
    maps: dict[str, str] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)

    def load(self, method: str) -> np.ndarray:
        """The stored map ``(H, W)`` float32."""
        return np.load(self.maps[method])


@dataclass
class FolderSaliency:
    """The maps of every image and method of a folder (:func:`saliency_folder`).

    ``seconds`` is the wall time per method spent computing (reused maps cost nothing); ``computed`` /
    ``reused`` count maps made now and maps taken from the store.
    """

    root: str
    store: str
    model: str
    fingerprint: str
    methods: list[str]
    options: dict[str, dict[str, Any]]
    items: list[FolderItem]
    seconds: dict[str, float]
    computed: int
    reused: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): unreadable, left out


def _key(fingerprint: str, method: str, options: dict[str, Any], target: int, seed: int) -> dict[str, Any]:
    opts = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in sorted(options.items())
            if k != "generator"}
    return {"model": fingerprint, "method": method, "options": opts, "target": target, "code": CODE_VERSION,
            **({"seed": seed} if method in RANDOM_METHODS else {})}


def saliency_folder(model: Model, folder: str | Path, methods: Sequence[str], store: str | Path, *,
                    options: dict[str, dict[str, Any]] | None = None, target: int | Sequence[int] | None = None,
                    batch_size: int = 8, seed: int = 0, resume: bool = True,
                    progress: Callable[[int], Any] | None = None) -> FolderSaliency:
    """Saliency maps of every image under ``folder`` (recursively) for each of ``methods`` (Simonyan et al. 2014
    onwards: any name of :data:`~convlens.attribute.METHODS`), explaining the predicted class (or ``target``).

    Images run through the model ``batch_size`` at a time. Maps are written to ``store`` as
    ``<store>/<relative path of the image>/<method>.npy`` (float32, the model's input resolution) with a
    ``<method>.json`` key; with ``resume`` a map whose key matches (same model weights and preprocessing, method,
    options, explained class) is reused instead of recomputed. Random methods get a generator seeded from ``seed``
    and the image's stem, so a resumed run gives the same maps as an uninterrupted one. ``progress(n)`` is called
    after each batch with the number of images it held (e.g. a tqdm bar's ``update``).
    """
    from .methods import saliency

    root = Path(folder)
    files = list_images(root)
    if not files:
        raise UserError(f"no images in {root}")
    options = {m: dict(options.get(m, {})) for m in methods} if options else {m: {} for m in methods}
    store = Path(store)
    fp = model_fingerprint(model)
    if target is not None and not isinstance(target, int) and len(target) != len(files):
        raise ValueError(f"expected one target per image ({len(files)}), got {len(target)}")
    items: list[FolderItem] = []
    seconds = {m: 0.0 for m in methods}
    computed = reused = 0
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), max(1, batch_size)):
        index = list(range(start, min(start + batch_size, len(files))))
        x, index = _load_readable(model, files, index, skipped)
        if x is None or not index:  # None exactly when no file of the batch was readable
            continue
        part = [files[i] for i in index]
        with torch.no_grad():
            probs = model(x).float().softmax(-1)
        if target is None:
            t = probs.argmax(-1)
        elif isinstance(target, int):
            t = torch.full((len(part),), target, dtype=torch.long)
        else:
            t = torch.tensor([target[i] for i in index], dtype=torch.long)
        batch_items = []
        for f, ti, pi in zip(part, t.tolist(), probs):
            stem = output_stem(f, root)
            batch_items.append(FolderItem(str(f), stem, int(ti), model.label(int(ti)), float(pi[int(ti)])))
        for method in methods:
            todo = []
            for j, item in enumerate(batch_items):
                path = store / item.stem / f"{method}.npy"
                item.maps[method] = str(path)
                key = _key(fp, method, options[method], item.target, seed)
                done = resume and path.is_file() and _read_key(path.with_suffix(".json")) == key
                item.reused[method] = done
                if not done:
                    todo.append(j)
            reused += len(batch_items) - len(todo)
            if not todo:
                continue
            begin = time.perf_counter()
            maps = _compute(saliency, model, x[todo], t[todo], method, options[method],
                            [batch_items[j].stem for j in todo], seed)
            seconds[method] += time.perf_counter() - begin
            for j, m in zip(todo, maps):
                path = Path(batch_items[j].maps[method])
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, m)
                key = _key(fp, method, options[method], batch_items[j].target, seed)
                path.with_suffix(".json").write_text(json.dumps(key))
            computed += len(todo)
        items += batch_items
        if progress:
            progress(len(part))
    if not items:
        raise UserError(f"none of the {len(files)} image(s) in {root} could be read (first: {skipped[0][0]}: "
                        f"{skipped[0][1]})")
    return FolderSaliency(str(root), str(store), model.name, fp, list(methods),
                          {m: {k: v for k, v in o.items() if k != "generator"} for m, o in options.items()}, items,
                          seconds, computed, reused, skipped)


def _load_readable(model: Model, files: Sequence[Path], index: list[int],
                   skipped: list[tuple[str, str]]) -> tuple[torch.Tensor | None, list[int]]:
    """The batch ``files[index]`` as model input; an unreadable file is skipped with a warning (the folder policy)."""
    import warnings

    try:
        return model.load([files[i] for i in index]), index
    except UserError:
        pass
    good, tensors = [], []
    for i in index:
        try:
            tensors.append(model.load([files[i]]))
            good.append(i)
        except UserError as exc:
            skipped.append((str(files[i]), str(exc)))
            warnings.warn(f"skipped {files[i]}: {exc}", stacklevel=3)
    return (torch.cat(tensors) if tensors else None), good


def _read_key(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _compute(saliency: Callable[..., torch.Tensor], model: Model, x: torch.Tensor, t: torch.Tensor, method: str,
             opts: dict[str, Any], stems: list[str], seed: int) -> list[np.ndarray]:
    """Maps of a batch; random methods run image by image with a generator seeded by the image, so resuming
    gives the maps an uninterrupted run gives."""
    if method in RANDOM_METHODS:
        out = []
        for i, stem in enumerate(stems):
            g = torch.Generator().manual_seed(seed * 1_000_003 + int(hashlib.md5(stem.encode()).hexdigest()[:8], 16))
            out.append(saliency(model, x[i:i + 1], method, t[i:i + 1], generator=g, **opts)[0])
        return [m.detach().float().cpu().numpy() for m in out]
    maps = saliency(model, x, method, t, **opts)
    return [m.detach().float().cpu().numpy() for m in maps]


# --- two models on the same photos ------------------------------------------------------------------------------

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (average ranks for ties)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _ranks01(m: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return (rankdata(m.ravel()).reshape(m.shape) - 1) / max(1, m.size - 1)


def _in_frame(m: np.ndarray, box: tuple[float, float, float, float], frame: tuple[float, float, float, float],
              size: tuple[int, int]) -> np.ndarray:
    """Resample a map covering ``box`` of the photo onto ``frame`` of the photo at ``size = (H, W)``."""
    x0, y0, x1, y1 = box
    fx0, fy0, fx1, fy1 = frame
    H, W = size
    ys = (fy0 + (np.arange(H) + 0.5) * (fy1 - fy0) / H - y0) / (y1 - y0) * 2 - 1
    xs = (fx0 + (np.arange(W) + 0.5) * (fx1 - fx0) / W - x0) / (x1 - x0) * 2 - 1
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    grid = torch.from_numpy(np.stack([gx, gy], -1)[None]).float()
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.grid_sample(t, grid, mode="bilinear", align_corners=False, padding_mode="border")[0, 0].numpy()


@dataclass
class ModelComparison:
    """Two models' maps of the same photos (:func:`compare_maps`).

    Per image (in ``files`` order): ``spearman`` rank correlation of the two maps on the part of the photo both
    crops see, ``top_overlap`` the IoU of their top-``top`` fractions of pixels, and both targets. ``disagreement``
    holds per image the rank difference ``rank_A - rank_B`` in [-1, 1] (``(H, W)`` in model A's frame): positive
    where A relies on a region more than B does.
    """

    model_a: str
    model_b: str
    method: str
    files: list[str]
    stems: list[str]
    targets_a: list[int]
    targets_b: list[int]
    spearman: list[float]
    top_overlap: list[float]
    top: float
    disagreement: list[np.ndarray]
    frames: list[tuple[float, float, float, float]]
    maps_a: list[np.ndarray]
    maps_b: list[np.ndarray]

    @property
    def mean_spearman(self) -> float:
        vals = [v for v in self.spearman if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")


def compare_maps(a: FolderSaliency, b: FolderSaliency, model_a: Model, model_b: Model, method: str, *,
                 top: float = 0.1) -> ModelComparison:
    """Compare two models' ``method`` maps of the same folder (two :func:`saliency_folder` results).

    Both maps are resampled onto the part of the photo both centre crops see (at model A's resolution), then
    compared by Spearman rank correlation, by the IoU of their top ``top`` fractions of pixels, and by their
    per-pixel rank difference (where they disagree). ``frames`` are those common parts in photo pixels,
    ``maps_a`` / ``maps_b`` the maps resampled onto them.
    """
    if [i.stem for i in a.items] != [i.stem for i in b.items]:
        raise ValueError("the two folder results hold different images")
    rho, overlap, dis, frames, fas, fbs = [], [], [], [], [], []
    for ia, ib in zip(a.items, b.items):
        ma, mb = ia.load(method), ib.load(method)
        size = load_image(ia.file).size
        box_a, box_b = crop_box(size, model_a), crop_box(size, model_b)
        frame = (max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3]))
        fa = _in_frame(ma, box_a, frame, ma.shape)
        fb = _in_frame(mb, box_b, frame, ma.shape)
        rho.append(spearman(fa, fb))
        k = max(1, round(top * fa.size))
        ta = np.zeros(fa.size, bool)
        ta[np.argsort(-fa.ravel(), kind="stable")[:k]] = True
        tb = np.zeros(fb.size, bool)
        tb[np.argsort(-fb.ravel(), kind="stable")[:k]] = True
        overlap.append(float((ta & tb).sum() / (ta | tb).sum()))
        dis.append((_ranks01(fa) - _ranks01(fb)).astype(np.float32))
        frames.append(frame)
        fas.append(fa.astype(np.float32))
        fbs.append(fb.astype(np.float32))
    return ModelComparison(a.model, b.model, method, [i.file for i in a.items], [i.stem for i in a.items],
                           [i.target for i in a.items], [i.target for i in b.items], rho, overlap, top, dis,
                           frames, fas, fbs)
