"""The microscope: one scan of a dataset, then a static site of every chosen layer and channel (like OpenAI Microscope).

:func:`build_microscope` runs :func:`convlens.read.scan.scan` once with top-k, dead-unit and per-channel histogram
reducers for the chosen layers, caches the result, and writes:

- ``index.html``: the layers with type, output shape, receptive field and dead-unit fraction;
- ``layers/<layer>/index.html``: a grid of the layer's channels, each with its top dataset patch and its feature
  visualization (images lazy-loaded, so a layer with 1,280 channels opens fast);
- ``layers/<layer>/<c>.html``: per channel, the top-k dataset patches cropped to the receptive field of the
  maximising unit (to its guided-backprop mass where that field is most of the image; Zeiler & Fergus 2014), their guided-backprop images (Springenberg et al. 2015), the channel's
  feature visualization (Olah et al. 2017), its weights where they can be drawn, and its activation histogram.

Re-running with the same output folder reuses the scan cache and every picture already written. File names,
folder names and labels from the dataset are escaped by the templates (autoescaping), never trusted as HTML.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..attribute.gradients import guided_units
from ..core.cache import cache_key
from ..errors import UserError
from ..models import Model
from ..read.dataset import Dataset, load_dataset
from ..read.patches import FALLBACKS, large_rf, unit_erf_box
from ..read.reducers import DeadUnits, Histogram, Reducer, TopK
from . import figures as F
from .html import render, save_image, slug, svg_histogram

__all__ = ["build_microscope", "MicroscopeSite", "LayerSummary", "ChannelHistogram", "default_layers",
           "guided_units", "channel_weights_image", "display_gradient"]

_CACHE_VERSION = 1


def ChannelHistogram(layer: str, *, bins: int = 40, low: float = -4.0, high: float = 8.0) -> Histogram:
    """The microscope's histograms: :class:`~convlens.read.reducers.Histogram` per channel, out-of-range values
    clamped into the end bins. Result: a :class:`~convlens.read.reducers.HistogramResult` with ``counts (C, bins)``."""
    return Histogram(layer, bins=bins, low=low, high=high, per_channel=True, clip=True)


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------
@dataclass
class LayerSummary:
    """One layer of the site: what the index page lists."""

    name: str
    type: str
    shape: tuple[int, ...]
    receptive_field: str
    channels: int
    shown: int
    dead: list[int]
    dead_fraction: float
    href: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "shape": list(self.shape), "channels": self.channels,
                "channels_shown": self.shown, "receptive_field": self.receptive_field,
                "dead": self.dead, "dead_fraction": self.dead_fraction, "page": self.href}


@dataclass
class MicroscopeSite:
    """A written site: its index page, how many images the scan saw, its layers and the time each stage took."""

    index: Path
    images: int
    layers: list[LayerSummary]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    reused_scan: bool = False

    def size_bytes(self) -> int:
        root = self.index.parent
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and "_cache" not in p.parts)

    def as_dict(self) -> dict[str, Any]:
        files = sum(1 for p in self.index.parent.rglob("*") if p.is_file() and "_cache" not in p.parts)
        return {"index": str(self.index), "images": self.images, "layers": [s.as_dict() for s in self.layers],
                "stage_seconds": {k: round(v, 2) for k, v in self.seconds.items()}, "bytes": self.size_bytes(),
                "files": files, "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
                "reused_scan": self.reused_scan}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def default_layers(model: Model, n: int = 3) -> list[str]:
    """``n`` layers spread over the depth whose single units mean something: the last rectified layer at or before
    each stage output (:func:`~convlens.read.scan.unit_layers`), not an inverted-residual block's linear output."""
    from ..read.scan import unit_layers

    return unit_layers(model, n)


def _conv_for(model: Model, layer: str, channels: int) -> tuple[str, nn.Conv2d] | None:
    """The convolution whose output channels are this layer's (the layer itself, or the last one inside it)."""
    module = model.layer(layer)
    if isinstance(module, nn.Conv2d):
        return layer, module
    found = None
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and m.out_channels == channels:
            found = (f"{layer}.{name}" if name else layer, m)
    return found


def channel_weights_image(conv: nn.Conv2d, c: int, *, size: int = 120) -> tuple[Image.Image, str]:
    """A picture of the weights of output channel ``c`` of ``conv`` and a sentence saying what it shows."""
    w = conv.weight.detach().float().cpu()[c]  # (in/groups, k, k)
    k = w.shape[-1]
    if w.shape[0] == 3 and conv.groups == 1:
        return F.tile(w, size=size, mode="symmetric"), f"RGB filter {k}x{k} (grey = 0)"
    if w.shape[0] == 1:
        return F.tile(w[0], size=size, mode="symmetric"), f"depthwise {k}x{k} kernel (grey = 0)"
    if k > 1:
        n = min(64, w.shape[0])
        tiles = [F.tile(w[i], size=24, mode="symmetric", vmax=float(w.abs().max())) for i in range(n)]
        return F.grid(tiles, ncols=8, pad=1), f"{k}x{k} kernels over the first {n} of {w.shape[0]} input channels"
    v = w.flatten()
    side = math.ceil(math.sqrt(len(v)))
    padded = torch.zeros(side * side)
    padded[: len(v)] = v
    img = F.colorize(padded.view(side, side), "RdBu_r", mode="symmetric").resize((size, size), Image.Resampling.NEAREST)
    return img, f"1x1 weights over the {len(v)} input channels, row by row (red +, blue -)"


def display_gradient(g: torch.Tensor) -> torch.Tensor:
    """A gradient crop ``3xhxw`` for display: the shared :func:`convlens.show.figures.display_signed`."""
    return F.display_signed(g)


def _dataset_key(model: Model, ds: Dataset, layers: list[str], k: int, bins: tuple[float, float]) -> str:
    return cache_key(model, "microscope", _CACHE_VERSION, layers, k, bins, ds.fingerprint(), len(ds), length=16)


def _save_scan(path: Path, data: dict[str, Any]) -> None:
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in data.items() if not isinstance(v, np.ndarray)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds may hit allow_pickle
    tmp.replace(path.with_suffix(".npz"))
    path.with_suffix(".json").write_text(json.dumps(meta))


def _load_scan(path: Path) -> dict[str, Any] | None:
    npz, meta = path.with_suffix(".npz"), path.with_suffix(".json")
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            data: dict[str, Any] = {k: z[k] for k in z.files}
        data.update(json.loads(meta.read_text()))
        return data
    except (OSError, ValueError, json.JSONDecodeError):
        return None


def _probe_range(model: Model, ds: Dataset, layers: list[str]) -> dict[str, tuple[float, float]]:
    """Histogram bins per layer, from the activations of a few images (bins must be fixed before the scan)."""
    from ..core.taps import activations

    pick = np.linspace(0, len(ds) - 1, min(8, len(ds))).round().astype(int)
    xs = []
    for i in pick:
        try:
            xs.append(model.preprocess.to_tensor(ds.files[i]))
        except UserError:
            continue
    if not xs:
        return {layer: (-4.0, 8.0) for layer in layers}
    acts = activations(model, torch.stack(xs).to(model.device), layers)
    out = {}
    for layer in layers:
        a = acts[layer].float()
        lo, hi = float(a.min()), float(a.max())
        lo = min(0.0, lo * 1.25)
        hi = max(hi * 1.25, lo + 1e-3, 1e-3)
        out[layer] = (round(lo, 3), round(hi, 3))
    return out


def _run_scan(model: Model, ds: Dataset, layers: list[str], k: int, ranges: dict[str, tuple[float, float]],
              batch_size: int | None, progress: bool, *, cluster: Any = None,
              checkpoint: Path | None = None) -> dict[str, Any]:
    from ..read.scan import scan

    reducers: list[Reducer] = [TopK(layer, k) for layer in layers]
    reducers += [ChannelHistogram(layer, low=ranges[layer][0], high=ranges[layer][1]) for layer in layers]
    reducers.append(DeadUnits(layers))
    res = scan(model, ds, reducers, batch_size=batch_size, progress=progress, cluster=cluster, checkpoint=checkpoint)
    data: dict[str, Any] = {"images": int(res.images), "skipped": [list(s) for s in res.skipped],
                            "scan_seconds": float(res.seconds), "layers": layers,
                            "from_checkpoint": int(res.resumed)}  # images whose shard a killed run had finished
    for layer in layers:
        top = res[f"topk:{layer}"]
        data[f"{layer}|values"], data[f"{layer}|ids"] = top.values, top.ids
        data[f"{layer}|y"], data[f"{layer}|x"] = top.y, top.x
        h = res[f"chist:{layer}"]
        edges, counts = h.edges, h.counts
        data[f"{layer}|edges"], data[f"{layer}|counts"] = edges, counts
        dead = res["dead"][layer]
        data[f"{layer}|silent"] = np.asarray(dead.silent)
    return data


# --------------------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------------------
def build_microscope(model: Model, dataset: str | Path | Dataset, out: str | Path, *,
                     layers: Sequence[str] | None = None, k: int = 9, max_channels: int | None = None,
                     vis_steps: int = 48, vis_size: int = 96, batch_size: int | None = None, seed: int = 0,
                     progress: bool = True, cluster: Any = None) -> MicroscopeSite:
    """Scan ``dataset`` once through ``model`` and write a static site of ``layers`` to ``out`` (resumable).

    Args:
        model: the network.
        dataset: a folder of images (recursively; ImageFolder or ``labels.csv`` labels), a list, or a Dataset.
        out: the site folder; ``out/_cache`` keeps the scan so a re-run only writes what is missing.
        layers: layer names (default: three spatial layers spread over the depth, see :func:`default_layers`).
        k: top images per channel.
        max_channels: give pages to the first N channels of each layer only (all by default).
        vis_steps / vis_size: feature-visualization steps and side (0 steps: no feature visualizations).
        batch_size: scan batch size (``None``: measured).
        seed: seeds the feature visualizations.
        cluster: run the scan and the feature visualizations on Ray (:mod:`convlens.read.distributed`: ``"local"``,
            an address or a ``Cluster``; default: the enclosing ``on_cluster`` block's, else this process). The scan
            checkpoints its shards in ``out/_cache`` either way, so an interrupted (even killed) run resumes.

    Returns:
        :class:`MicroscopeSite` with the index path, image count, per-layer summaries (dead-unit fractions are
        the channels that never fire on any image) and the seconds each stage took.
    """
    from ..read.distributed import as_cluster

    t_all = time.perf_counter()
    cluster = as_cluster(cluster)
    out = Path(out)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    ds = load_dataset(dataset)
    names = list(layers) if layers else default_layers(model)
    for name in names:
        info = model.layers[name]  # unknown names get the closest ones
        if not info.shape:
            raise UserError(f"layer {name!r} has no channels to show")
    seconds: dict[str, float] = {}
    cache = out / "_cache"
    cache.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    probe_key = cache_key(model, "microscope-ranges", names, ds.fingerprint(), length=16)
    range_file = cache / f"ranges-{probe_key}.json"
    if range_file.is_file():
        ranges = {k_: tuple(v) for k_, v in json.loads(range_file.read_text()).items()}
    else:
        ranges = _probe_range(model, ds, names)  # kept once the scan has read the dataset (below)
    key = _dataset_key(model, ds, names, k, tuple(sorted((n, r) for n, r in ranges.items())))  # type: ignore[arg-type]
    scan_path = cache / f"scan-{key}"
    data = _load_scan(scan_path)
    reused = data is not None
    if data is None:
        data = _run_scan(model, ds, names, k, ranges, batch_size, progress,  # type: ignore[arg-type]
                         cluster=cluster, checkpoint=cache / "checkpoints")
        _save_scan(scan_path, data)
    if not range_file.is_file():
        range_file.write_text(json.dumps(ranges))
    seconds["scan"] = time.perf_counter() - t

    dataset_names = ds.names()
    labels = ds.labels
    summaries: list[LayerSummary] = []
    ctx_common = {"model_name": model.name, "dataset_name": str(ds.root.name if ds.root else "files"),
                  "images": data["images"]}
    t_pages = t_vis = t_patch = 0.0
    for li, name in enumerate(names):
        info = model.layers[name]
        channels = int(info.shape[0])
        shown = channels if max_channels is None else min(channels, max_channels)
        silent = np.asarray(data[f"{name}|silent"])
        n_img = max(1, int(data["images"]))
        dead = [int(c) for c in np.flatnonzero(silent >= n_img)]
        lslug = slug(name)
        ldir = out / "layers" / lslug
        rf = "whole image" if info.rf.whole else f"{info.rf.size[0]:g} x {info.rf.size[1]:g} px, stride {info.rf.stride[0]:g}"
        summary = LayerSummary(name, info.type, tuple(info.shape), rf, channels, shown, dead,
                               len(dead) / max(1, channels), f"layers/{lslug}/index.html")
        summaries.append(summary)

        # pictures already written are reused only if made from this very scan / these weights and settings
        _fresh(ldir / "img", "patches", key, ("c*_p*.jpg", "c*_g*.jpg", _WHY))
        _fresh(ldir / "img", "vis", cache_key(model, "microscope-vis", vis_steps, vis_size, seed),
               ("c*_vis.png", "c*_w.png"))
        t = time.perf_counter()
        _patches_and_guided(model, ds, name, data, ldir, shown, k, progress, label=f"{li + 1}/{len(names)} {name}")
        t_patch += time.perf_counter() - t
        t = time.perf_counter()
        if vis_steps > 0:
            _feature_vis(model, name, ldir, shown, vis_steps, vis_size, seed, progress, cluster=cluster)
        t_vis += time.perf_counter() - t

        t = time.perf_counter()
        why = json.loads((ldir / "img" / _WHY).read_text()) if (ldir / "img" / _WHY).is_file() else {}
        conv = _conv_for(model, name, channels)
        values = np.asarray(data[f"{name}|values"])
        ids = np.asarray(data[f"{name}|ids"])
        edges, counts = np.asarray(data[f"{name}|edges"]), np.asarray(data[f"{name}|counts"])
        cells = []
        for c in range(shown):
            cells.append({"c": c, "dead": c in dead, "top": values[c, 0] if ids[c, 0] >= 0 else None,
                          "patch": f"img/c{c}_p0.jpg" if ids[c, 0] >= 0 else None,
                          "vis": f"img/c{c}_vis.png" if vis_steps > 0 else None})
        render("microscope_layer.html", ldir / "index.html", **ctx_common, layer=summary, cells=cells,
               layer_count=len(names), up="../../index.html")
        for c in range(shown):
            patches = []
            for j in range(ids.shape[1]):
                i = int(ids[c, j])
                if i < 0:
                    continue
                y, x = int(data[f"{name}|y"][c, j]), int(data[f"{name}|x"][c, j])
                h, w = model.preprocess.size
                box = info.rf.box(y, x, h, w)
                full = info.rf.unclipped(y, x)
                patches.append({"file": dataset_names[i] if i < len(dataset_names) else str(i),
                                "label": None if labels is None or i >= len(labels) else labels[i],
                                "value": float(values[c, j]), "y": y, "x": x, "box": list(box),
                                "clipped": tuple(box) != tuple(full) and not info.rf.whole,
                                "patch": f"img/c{c}_p{j}.jpg", "guided": f"img/c{c}_g{j}.jpg",
                                "fallback": why.get(f"{c}_{j}")})
            weights = None
            if conv is not None:
                wfile = ldir / "img" / f"c{c}_w.png"
                wimg, wtext = channel_weights_image(conv[1], c)
                if not wfile.is_file():
                    save_image(wimg, wfile)
                weights = {"file": f"img/c{c}_w.png", "text": wtext, "conv": conv[0]}
            hist = svg_histogram(counts[c], edges) if c < len(counts) else ""
            frac_silent = float(silent[c]) / n_img if c < len(silent) else 0.0
            render("microscope_channel.html", ldir / f"{c}.html", **ctx_common, layer=summary, c=c,
                   patches=patches, fallbacks=FALLBACKS, weights=weights, hist=hist, silent=frac_silent, dead=c in dead,
                   vis=f"img/c{c}_vis.png" if vis_steps > 0 else None,
                   prev=f"{c - 1}.html" if c > 0 else None, next=f"{c + 1}.html" if c + 1 < shown else None,
                   hist_range=(float(edges[0]), float(edges[-1])))
        t_pages += time.perf_counter() - t
    seconds.update({"patches_and_guided": t_patch, "feature_vis": t_vis, "pages": t_pages})
    index = render("microscope_index.html", out / "index.html", **ctx_common, layers=summaries,
                   skipped=data.get("skipped", []), k=k)
    seconds["total"] = time.perf_counter() - t_all
    return MicroscopeSite(index, int(data["images"]), summaries, seconds,
                          [tuple(s) for s in data.get("skipped", [])], reused)  # type: ignore[misc]


def _fresh(folder: Path, what: str, key: str, patterns: Sequence[str]) -> None:
    """Delete the pictures matching ``patterns`` in ``folder`` unless they were made under ``key`` (kept in
    ``folder/.<what>.key``), so a re-run over another dataset or other weights never shows stale pictures."""
    stamp = folder / f".{what}.key"
    if stamp.is_file() and stamp.read_text() == key:
        return
    for pattern in patterns:
        for f in folder.glob(pattern):
            f.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


_WHY = "zero_guided.json"  # per layer: "c_j" -> why that unit's guided map is zero (FALLBACKS of read.patches)


def _patches_and_guided(model: Model, ds: Dataset, layer: str, data: dict[str, Any], ldir: Path, shown: int,
                        k: int, progress: bool, *, label: str, chunk: int = 16, side: int = 112) -> None:
    """Write each channel's top-k patches and their guided-backprop crops (skipping files already there), and
    for every all-zero guided map its reason in ``img/zero_guided.json``, from one plain-gradient pass over just
    those units: ``resting`` (the plain gradient is zero too) or ``guided`` (negative paths only)."""
    info = model.layers[layer]
    ids, ys, xs = (np.asarray(data[f"{layer}|{s}"]) for s in ("ids", "y", "x"))
    h, w = model.preprocess.size
    jobs = [(c, j) for c in range(shown) for j in range(ids.shape[1]) if ids[c, j] >= 0
            and not ((ldir / "img" / f"c{c}_p{j}.jpg").is_file() and (ldir / "img" / f"c{c}_g{j}.jpg").is_file())]
    if not jobs:
        return
    # group by image so each photo is decoded once, then run guided backprop in batches of units
    jobs.sort(key=lambda cj: int(ids[cj[0], cj[1]]))
    erf, min_side = large_rf(model, layer), max(16, int(2 * max(info.rf.stride)))
    cache: dict[int, torch.Tensor] = {}
    why_file = ldir / "img" / _WHY
    why: dict[str, str] = json.loads(why_file.read_text()) if why_file.is_file() else {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc=f"patches {label}", unit="patch", leave=False)
    try:
        for start in range(0, len(jobs), chunk):
            part = jobs[start:start + chunk]
            pix = []
            for c, j in part:
                i = int(ids[c, j])
                if i not in cache:
                    if len(cache) > 64:
                        cache.clear()
                    cache[i] = model.preprocess.to_tensor(ds.files[i])
                pix.append(cache[i])
            x = torch.stack(pix).to(model.device)
            grads = guided_units(model, layer, x, [c for c, _ in part], [int(ys[c, j]) for c, j in part],
                                 [int(xs[c, j]) for c, j in part])
            zero = [n for n in range(len(part)) if not bool(grads[n].abs().sum() > 0)]
            if zero:
                plain = guided_units(model, layer, x[zero], [part[n][0] for n in zero],
                                     [int(ys[part[n]]) for n in zero], [int(xs[part[n]]) for n in zero],
                                     rule="gradient")
                for n, g in zip(zero, plain):
                    why[f"{part[n][0]}_{part[n][1]}"] = "guided" if bool(g.abs().sum() > 0) else "resting"
            for n, (c, j) in enumerate(part):
                y, xx = int(ys[c, j]), int(xs[c, j])
                x0, y0, x1, y1 = rfb = info.rf.box(y, xx, h, w)
                if erf:  # a (near-)whole theoretical field: crop to the guided-backprop mass, as top-patches does
                    found = unit_erf_box(info.rf, grads[n], y, xx, rfb, min_side=min_side)
                    if found is not None:
                        x0, y0, x1, y1 = found[0]
                crop = x[n, :, y0:y1, x0:x1].cpu()
                g = display_gradient(grads[n, :, y0:y1, x0:x1].cpu())
                scale = max(1, side // max(crop.shape[1:]))
                for t, name in ((crop, f"c{c}_p{j}.jpg"), (g, f"c{c}_g{j}.jpg")):
                    img = F.to_rgb(t)
                    if scale > 1:
                        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
                    elif max(img.size) > 2 * side:
                        img = F.fit(img, 2 * side)
                    save_image(img, ldir / "img" / name, quality=85)
            if bar is not None:
                bar.update(len(part))
    finally:
        if why:
            why_file.write_text(json.dumps(why, sort_keys=True))
        if bar is not None:
            bar.close()


def _vis_block(model: Model, layer: str, part: list[int], steps: int, size: int, seed: int) -> torch.Tensor:
    """Feature visualizations (Olah et al. 2017) of the channels ``part`` of ``layer``, in one optimisation run:
    ``(len(part), 3, size, size)`` pixels. Seeded by the block's first channel, so a block is the same picture
    wherever and whenever it is computed."""
    from ..core.objectives import channel
    from ..core.optimize import optimize
    from ..core.params import FourierImage
    from ..core.transforms import standard_transforms

    gen = torch.Generator().manual_seed(seed + part[0])
    param = FourierImage(size=size, batch=len(part), generator=gen)
    pad = max(2, size // 16)
    res = optimize(model, channel(layer, part), param,
                   transforms=standard_transforms(pad=pad, jitter_px=pad, scale=(0.9, 1.1), degrees=10),
                   steps=steps, lr=0.05, generator=gen)
    return res.images.detach().cpu()


def _feature_vis(model: Model, layer: str, ldir: Path, shown: int, steps: int, size: int, seed: int,
                 progress: bool, *, batch: int = 16, cluster: Any = None) -> None:
    """Feature visualizations of the channels that have none yet, in fixed blocks of ``batch`` channels (one
    optimisation run each; a block with a missing picture is run again whole, so a resumed site equals an
    uninterrupted one). With a ``cluster`` (:mod:`convlens.read.distributed`) the blocks are Ray tasks on actors
    that hold the model; each picture is written as its block comes back, which is what a re-run resumes from."""
    blocks = [list(range(b, min(shown, b + batch))) for b in range(0, shown, batch)]
    todo = [part for part in blocks if any(not (ldir / "img" / f"c{c}_vis.png").is_file() for c in part)]
    if not todo:
        return

    def write(part: list[int], images: torch.Tensor) -> None:
        for c, img in zip(part, images):
            path = ldir / "img" / f"c{c}_vis.png"
            if not path.is_file():
                save_image(img, path)

    if cluster is not None:
        from ..read.distributed import run_tasks

        run_tasks(cluster, model, _vis_block, [(layer, part, steps, size, seed) for part in todo],
                  lambda job, images: write(job[1], images), progress=f"feature vis {layer}" if progress else None)
        return
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(len(p) for p in todo), desc=f"feature vis {layer}", unit="ch", leave=False)
    try:
        for part in todo:
            write(part, _vis_block(model, layer, part, steps, size, seed))
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
