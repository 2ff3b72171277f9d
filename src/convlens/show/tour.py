"""The tour: the whole "Visualizing and Understanding ConvNets" lecture run on one model, as one static HTML report.

:func:`run_tour` runs one *section* per lecture topic, in the lecture's order, and writes ``index.html`` with the
pictures as files beside it (``img/``) and every number in ``result.json``. Each section is a short function
that calls the library's public API, saves its figure(s), and fills in the parameters it used and the numbers it
found. A section that fails, or whose technique is not in this build, is reported in its place; the others still
run. The page is rewritten after every section, so an interrupted tour leaves a readable report on disk.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..errors import UserError
from ..images import demo_images, list_images, load_image
from ..models import Model
from ..results import write_result
from . import figures as F
from .html import render, save_image

__all__ = ["Figure", "Table", "SectionOutput", "SectionResult", "Section", "TourContext", "TourReport", "SECTIONS",
           "run_tour", "NotAvailable", "tour_images", "augmented_crops"]


class NotAvailable(Exception):
    """Raised by a section whose technique is not in this build (its module or function does not exist yet)."""


@dataclass
class Figure:
    """A picture of the report: its path relative to ``index.html`` and its caption."""

    file: str
    caption: str
    width: int | None = None
    height: int | None = None
    pixel: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class SectionOutput:
    """What a section fills in while it runs (kept even when it fails half-way)."""

    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class SectionResult:
    """How one section went: ``status`` is ok, failed, unavailable, skipped or pending; ``seconds`` its wall time."""

    key: str
    title: str
    explanation: str
    status: str = "pending"
    seconds: float | None = None
    error: str = ""
    traceback: str = ""
    output: SectionOutput = field(default_factory=SectionOutput)

    @property
    def status_text(self) -> str:
        return {"ok": "ok", "failed": "failed", "unavailable": "not available", "skipped": "skipped",
                "pending": "pending"}[self.status]

    @property
    def figures(self) -> list[Figure]:
        return self.output.figures

    @property
    def tables(self) -> list[Table]:
        return self.output.tables

    @property
    def params(self) -> dict[str, Any]:
        return self.output.params

    @property
    def numbers(self) -> dict[str, Any]:
        return self.output.numbers

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": self.status, "seconds": self.seconds,
                "error": self.error or None, "params": self.params, "numbers": self.numbers,
                "figures": [f.file for f in self.figures]}


@dataclass(frozen=True)
class Section:
    """One lecture topic: a key (HTML anchor), a title, a two-sentence explanation and the function that runs it."""

    key: str
    title: str
    explanation: str
    run: Callable[[TourContext, SectionOutput], None]


class TourContext:
    """What every section shares: the model, the photos, the output folder, the profile and a small cache."""

    def __init__(self, model: Model, photos: dict[str, Image.Image], out: Path, *, quick: bool, seed: int,
                 dataset: list[Path] | None = None, work: Path | None = None, style: str | Path | None = None) -> None:
        self.model = model
        self.photos = photos
        self.out = out
        self.quick = quick
        self.seed = seed
        self.dataset = dataset
        self.style = style
        self.work = work or out / "_work"
        self.cache: dict[str, Any] = {}
        self.key = ""

    def dataset_files(self) -> list[Path]:
        """The image set of the dataset sections: the user's folder (up to a limit), or the bundled photos plus
        random crops of each, written once to the work folder. ``cache["sources"]`` maps file name -> photo."""
        if "files" in self.cache:
            return self.cache["files"]
        if self.dataset is not None:
            files = self.dataset[: self.q(300, 2000)]
            sources = {f.name: f.stem for f in files}
            labels = None
            try:
                from ..read import load_dataset
                ds = load_dataset(files[0].parent) if len({f.parent for f in files}) == 1 else None
                if ds is not None and ds.labels is not None:
                    labels = {f.name: lab for f, lab in zip(ds.files, ds.labels)}
            except Exception:  # noqa: BLE001 - labels are optional
                labels = None
            self.cache["labels"] = labels
        else:
            folder = self.work / "photos"
            folder.mkdir(parents=True, exist_ok=True)
            files, sources = [], {}
            counts: dict[str, int] = {}
            for j, (name, img) in enumerate(augmented_crops(self.photos, per_photo=self.q(4, 8), seed=self.seed)):
                i = counts.get(name, 0)
                counts[name] = i + 1
                f = folder / f"{j:03d}_{name}_{i}.jpg"
                if not f.is_file():
                    save_image(img, f, quality=92)
                files.append(f)
                sources[f.name] = name
        self.cache["files"], self.cache["sources"] = files, sources
        return files

    def q(self, quick: Any, full: Any) -> Any:
        """The quick profile's value or the full one's."""
        return quick if self.quick else full

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    @property
    def main_name(self) -> str:
        return "chelsea" if "chelsea" in self.photos else next(iter(self.photos))

    def pixels(self, name: str | None = None) -> torch.Tensor:
        """A photo fitted to the model input (resize + centre crop), as a pixel batch ``1x3xHxW``."""
        name = name or self.main_name
        key = f"pixels:{name}"
        if key not in self.cache:
            self.cache[key] = self.model.load(self.photos[name])
        return self.cache[key]

    def figure(self, out: SectionOutput, name: str, image: Image.Image, caption: str, *, pixel: bool = False,
               photo: bool = False, max_side: int = 1400) -> Figure:
        """Save ``image`` as ``img/<section>-<name>.png`` (``.jpg`` for ``photo``) and add it to the section."""
        if max(image.size) > max_side:
            image = F.fit(image, max_side)
        rel = f"img/{self.key}-{name}.{'jpg' if photo else 'png'}"
        save_image(image, self.out / rel)
        fig = Figure(rel, caption, image.width, image.height, pixel)
        out.figures.append(fig)
        return fig

    def patch_layer(self) -> str:
        """The deepest stage output whose units still see less than half the image (for activations and patches)."""
        h = self.model.preprocess.size[0]
        best = None
        stages = set(self.model.layers.stages())
        for info in self.model.layers.spatial():
            if info.name in stages and not info.rf.whole and info.rf.size[0] <= h / 2 and info.shape[1] > 1:
                best = info.name
        return best or self.pick_layer()

    def pick_layer(self, *, min_side: int = 14, max_side: int = 56, max_channels: int = 128) -> str:
        """A mid-depth spatial layer (a block output when the network has blocks) for the per-image sections."""
        best = None
        stages = set(self.model.layers.stages())
        for info in self.model.layers.spatial():
            c, h, _ = info.shape
            if min_side <= h <= max_side and c <= max_channels and info.name in stages:
                best = info.name
        return best or self.model.layers.last_spatial()


def _need(module: str, *names: str) -> Any:
    """Import ``convlens.<module>`` and return the named attributes; :class:`NotAvailable` if they do not exist."""
    try:
        mod = importlib.import_module(f"convlens.{module}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("convlens"):
            raise NotAvailable(f"convlens.{module} is not in this build yet") from None
        raise
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise NotAvailable(f"convlens.{module} has no {', '.join(missing)} yet")
    got = [getattr(mod, n) for n in names]
    return got[0] if len(got) == 1 else got


# --------------------------------------------------------------------------------------------------------------
# foundation sections
# --------------------------------------------------------------------------------------------------------------
def _sec_model(ctx: TourContext, out: SectionOutput) -> None:
    model = ctx.model
    layers = model.layers
    n_params = sum(p.numel() for p in model.module.parameters())
    out.numbers.update({"parameters": n_params, "addressable layers": len(layers),
                        "spatial layers": len(layers.spatial()), "classes": model.num_classes})
    out.params.update({"model": model.name, "input size": "x".join(map(str, model.preprocess.size)),
                       "mean": str(tuple(round(m, 3) for m in model.preprocess.mean)),
                       "std": str(tuple(round(s, 3) for s in model.preprocess.std))})
    rows = []
    for info in layers:
        if info.name.count(".") > 1 and not info.name.startswith("features."):
            continue
        rf = "whole image" if info.rf.whole else f"{info.rf.size[0]:g} px, stride {info.rf.stride[0]:g}"
        rows.append([info.name, info.type, " x ".join(map(str, info.shape)), rf])
    out.tables.append(Table(["layer", "type", "output", "receptive field"], rows[:60],
                            "top-level layers (all of them: convlens layers MODEL)"))


def _sec_predict(ctx: TourContext, out: SectionOutput) -> None:
    names = list(ctx.photos)[: ctx.q(6, 12)]
    x = torch.cat([ctx.pixels(n) for n in names])
    preds = ctx.model.predict(x, top=3)
    tiles, rows = [], []
    for n, xi, p in zip(names, x, preds):
        tiles.append(F.caption(F.to_rgb(xi).resize((160, 160), Image.Resampling.LANCZOS),
                               f"{n}\n{p[0].label} {p[0].prob:.2f}", size=11))
        rows.append([n] + [f"{q.label} ({q.index}) {q.prob:.3f}" for q in p])
    ctx.cache["predictions"] = {n: p for n, p in zip(names, preds)}
    ctx.figure(out, "photos", F.grid(tiles, ncols=min(6, len(tiles))), photo=True, caption="The photos, as the model sees them "
               "(resized and centre-cropped), with the top class and its probability.")
    out.tables.append(Table(["photo", "top 1", "top 2", "top 3"], rows))
    out.numbers["mean top-1 probability"] = float(np.mean([p[0].prob for p in preds]))


def _sec_weights(ctx: TourContext, out: SectionOutput) -> None:
    model = ctx.model
    first = model.layers.first_conv()
    conv = model.layer(first)
    w = conv.weight.detach().float().cpu()
    out.params.update({"layer": first, "scaling": "per filter, symmetric (grey = 0)"})
    try:
        conv_filters = _need("read", "conv_filters")
        filters_figure = _need("read.render", "filters_figure")
        img = filters_figure(conv_filters(model, first))
    except NotAvailable:
        scale = max(1, 96 // (w.shape[-1] * 2))
        tiles = [F.tile(f, scale, mode="symmetric") for f in w]
        img = F.grid(tiles, ncols=min(16, len(tiles)), labels=[str(i) for i in range(len(tiles))], label_size=9)
    ctx.figure(out, "first", img, f"The {w.shape[0]} filters of {first} ({w.shape[2]}x{w.shape[3]}, RGB), "
               "each scaled on its own; they pick up oriented edges and colour blobs.", pixel=True)
    norms = w.flatten(1).norm(dim=1)
    out.numbers.update({"filters": int(w.shape[0]), "kernel": f"{w.shape[2]}x{w.shape[3]}x{w.shape[1]}",
                        "mean filter L2 norm": float(norms.mean()),
                        "near-zero filters (norm < 1% of max)": int((norms < 0.01 * norms.max()).sum())})
    # the next convolution: one grayscale tile per (output, input) kernel, or per channel if depthwise
    convs = [i.name for i in model.layers if isinstance(model.layers.modules[i.name], torch.nn.Conv2d)]
    nxt = next((n for n in convs[1:] if model.layers.modules[n].kernel_size[0] > 1), None)
    if nxt is not None:
        m = model.layers.modules[nxt]
        w2 = m.weight.detach().float().cpu()
        kk = w2.shape[-1]
        if m.groups == m.in_channels and m.groups > 1:
            tiles = [F.tile(f[0], max(1, 48 // kk), mode="symmetric") for f in w2[:64]]
            label = f"{nxt} is depthwise: one {kk}x{kk} kernel per channel ({min(64, w2.shape[0])} shown)"
        else:
            o, i = min(16, w2.shape[0]), min(16, w2.shape[1])
            tiles = [F.tile(w2[a, b], max(1, 36 // kk), mode="symmetric") for a in range(o) for b in range(i)]
            label = f"{nxt}: {o} output x {i} input kernels of {kk}x{kk}, grayscale"
        ctx.figure(out, "second", F.grid(tiles, ncols=16, pad=2), label, pixel=True)
        out.params["second layer"] = nxt


def _sec_activations(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import activation_maps, top_patches
    from ..read.render import activations_figure, top_patches_figure

    layer = ctx.patch_layer()
    acts = activation_maps(ctx.model, ctx.pixels(), layer)
    maps = acts.maps.float()
    limit = ctx.q(64, 128)
    ctx.figure(out, "grid", activations_figure(acts, max_channels=limit, tile_px=48), photo=True,
               caption=f"Every channel of {layer} on {ctx.main_name} ({min(limit, len(maps))} of {len(maps)} shown), "
               "each scaled to its own range; a red frame marks a channel that is zero everywhere on this image.")
    dead = int(sum(bool((m <= 0).all()) for m in maps))
    out.params.update({"layer": layer, "image": ctx.main_name, "shape": " x ".join(map(str, maps.shape))})
    out.numbers.update({"channels": len(maps), "all-zero channels on this image": dead,
                        "mean activation": float(maps.mean()), "max activation": float(maps.max()),
                        "fraction of positive units": float((maps > 0).float().mean())})
    files = ctx.dataset_files()
    channels = list(range(min(len(maps), ctx.q(6, 12))))
    k = ctx.q(6, 9)
    tp = top_patches(ctx.model, files, layer, channels=channels, k=k, progress=False)
    guided = _guided_rows(ctx.model, tp)
    fig = top_patches_figure(tp, patch_px=ctx.q(48, 64), guided=guided)
    ctx.figure(out, "top-patches", fig, photo=True,
               caption=f"For channels {channels[0]}-{channels[-1]} of {layer}: the {k} patches of the {len(files)} "
               "images that excite each channel most, cropped to the unit's receptive field, with their "
               "guided-backprop images.")
    out.params.update({"top-k images": len(files), "k": k})
    out.numbers["strongest top-1 activation"] = float(max(p[0].value for p in tp.patches if p))


def _guided_rows(model: Model, tp: Any, *, chunk: int = 16) -> list[list[Image.Image]]:
    """Guided-backprop crops of every top patch, computed in batches of units (see ``microscope.guided_units``)."""
    from .microscope import display_gradient, guided_units

    flat = [(i, j, c, p) for i, (c, row) in enumerate(zip(tp.channels, tp.patches)) for j, p in enumerate(row)]
    out: list[list[Image.Image]] = [[None] * len(row) for row in tp.patches]  # type: ignore[list-item]
    pixels: dict[Path, torch.Tensor] = {}
    for start in range(0, len(flat), chunk):
        part = flat[start:start + chunk]
        for *_, p in part:
            if p.file not in pixels:
                pixels[p.file] = model.preprocess.to_tensor(p.file)
        x = torch.stack([pixels[p.file] for *_, p in part]).to(model.device)
        g = guided_units(model, tp.layer, x, [c for _, _, c, _ in part], [p.y for *_, p in part],
                         [p.x for *_, p in part])
        for n, (i, j, _, p) in enumerate(part):
            x0, y0, x1, y1 = p.box
            out[i][j] = F.to_rgb(display_gradient(g[n, :, y0:y1, x0:x1].cpu()))
    return out


# --------------------------------------------------------------------------------------------------------------
# technique sections (each calls the library's public function; absent ones report "not available")
# --------------------------------------------------------------------------------------------------------------
def _sec_correspond(ctx: TourContext, out: SectionOutput) -> None:
    from ..read.correspond import correspondence_layers, warp_study
    from ..show.correspond import pck_figure, warp_example_figure

    files = ctx.dataset_files()
    if ctx.dataset is None:  # the original photos, not their crops
        files = [f for f in files if f.stem.endswith("_0")]
    photos = files[: ctx.q(1, 6)]
    kinds = ctx.q(("affine", "flip"), ("affine", "perspective", "scale-crop", "flip"))
    layers = correspondence_layers(ctx.model)
    st = warp_study(ctx.model, photos, layers=layers, warps=kinds, points=ctx.q(8, 10), seed=ctx.seed,
                    progress=False)
    goal = st.goal(0.05)
    ctx.figure(out, "pck", pck_figure(st, alphas=ctx.q((0.05,), None)),
               caption=f"PCK per warp on {len(st.photos)} photo(s): each layer (shallow to deep), SIFT (orange) and "
               "raw pixel patches (grey), on the same query points; +photo adds a colour, contrast and noise "
               "change to the same geometry.")
    warp = next((w for w in st.warps if w.endswith("+photo")), st.warps[0])
    ctx.figure(out, "example", warp_example_figure(st, warp, [goal["best_layer"], "sift", "pixels"], px=ctx.q(200, 260)),
               photo=True, caption=f"Matches from the photo into its {warp} copy: green within 0.05 x side of the "
               "true position, red otherwise.")
    out.tables.append(Table(["warp", *st.methods], [[r[0], *[f"{v:.2f}" for v in r[1:]]] for r in st.table(0.05)],
                            "PCK@0.05 (convlens correspond DATASET --warps for the full study)"))
    out.tables.append(Table(["method", "receptive field (px)", "stride", "median error of correct matches (px)"],
                            [[r["method"], f"{r['rf_size']:g}", f"{r['stride']:g}",
                              f"{r['median_error_inliers']:.1f}"] for r in st.localisation()]))
    out.params.update({"layers": ", ".join(layers), "warps": ", ".join(st.warps), "photos": len(st.photos),
                       "query points": len(st.example["query"])})
    out.numbers.update({"best layer (PCK@0.05)": goal["best_layer"],
                        "best layer beats pixels on every warp": goal.get("beats_pixels_on_every_warp"),
                        "best layer beats SIFT on the photometric warps": goal.get("beats_sift_on_photometric_warps"),
                        "seconds": st.seconds})


def _sec_directions(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import crop_patches
    from ..read.directions import units_vs_directions
    from ..show.correspond import directions_figure

    files = ctx.dataset_files()
    layer = ctx.patch_layer()
    count, k = ctx.q(3, 6), ctx.q(6, 9)
    st = units_vs_directions(ctx.model, files, [layer], count=count, k=k, seed=ctx.seed, progress=False,
                             draws=ctx.q(300, 2000))
    dt = st.layers[layer]
    tp = crop_patches(ctx.model, dt.top)
    names = {f.name: ctx.cache["sources"].get(f.name, f.stem) for f in files}
    ctx.figure(out, "directions", directions_figure(dt, tp, px=ctx.q(44, 56), names=names), photo=True,
               caption=f"Top {k} patches of {len(files)} images along {count} single units, {count} random unit "
               f"directions and the {count} leading principal directions of {layer}, all from one scan.")
    if dt.coherence is not None:
        out.tables.append(Table(["kind", "directions", "same-class pairs", "same or neighbouring class",
                                 "classifier-space similarity"],
                                [[r[1], r[2], f"{r[3]:.3f}", f"{r[5]:.3f}", f"{r[7]:.3f} +- {r[8]:.3f}"]
                                 for r in st.table()],
                                f"class coherence of the top {k} images ({dt.coherence.source}); chance = random "
                                f"{k}-image subsets"))
        for kind in ("unit", "random", "pca"):
            out.numbers[f"{kind} classifier-space similarity"] = dt.coherence.summary(
                dt.directions.rows(kind))["similarity"]
        out.numbers["chance classifier-space similarity"] = dt.coherence.chance_similarity[0]
    out.params.update({"layer": layer, "images": len(files), "directions per kind": count, "k": k})


def _sec_neighbors(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import PooledFeatures, embed, feature_layer, grid_assignment, neighbors, scan
    from ..read.render import embedding_grid, embedding_scatter, neighbors_figure

    files = ctx.dataset_files()
    sources = ctx.cache["sources"]
    if ctx.dataset is None:  # the originals of a few photos as queries
        want = ["chelsea", "rocket", "coffee", "astronaut", "coins", "brick"][: ctx.q(3, 6)]
        queries = [f for f in files if sources[f.name] in want and f.stem.endswith("_0")]
    else:
        queries = files[:: max(1, len(files) // ctx.q(3, 6))][: ctx.q(3, 6)]
    k = ctx.q(6, 8)
    layer = feature_layer(ctx.model)
    res = neighbors(ctx.model, files, queries, layer=layer, k=k, cache_dir=ctx.work / "cache", progress=False)
    names = {f.name: sources[f.name] for f in files}
    ctx.figure(out, "neighbors", neighbors_figure(res, size=ctx.q(80, 96), names=names), photo=True,
               caption="Each row: a query, its nearest images by L2 distance of the CNN code, then its nearest "
               "by L2 distance of the pixels.")
    out.params.update({"layer": layer, "k": k, "database images": len(files), "queries": len(queries)})
    src = np.array([sources[f.name] for f in res.files])
    qsrc = np.array([sources[Path(q).name] for q in res.queries])
    what = "same photo" if ctx.dataset is None else "same label" if ctx.cache.get("labels") else None
    if what == "same label":
        labs = ctx.cache["labels"]
        src = np.array([labs.get(f.name) for f in res.files])
        qsrc = np.array([labs.get(Path(q).name) for q in res.queries])
    if what:
        out.numbers[f"feature neighbours from the {what}"] = float((src[res.feature_index] == qsrc[:, None]).mean())
        out.numbers[f"pixel neighbours from the {what}"] = float((src[res.pixel_index] == qsrc[:, None]).mean())
    out.numbers["mean feature distance to the 1st neighbour"] = float(res.feature_distance[:, 0].mean())
    # t-SNE of the same codes (the feature cache is reused, so this scan costs no forward pass)
    feats = scan(ctx.model, files, [PooledFeatures(layer)], cache_dir=ctx.work / "cache", progress=False)["features"]
    codes = np.asarray(feats[layer])
    perplexity = float(min(30.0, max(2.0, (len(codes) - 1) / 3.5)))
    emb = embed(codes, "tsne", seed=ctx.seed, perplexity=perplexity, pca_dims=min(50, len(codes) - 1))
    labels = [sources[Path(f).name] for f in feats.files] if ctx.dataset is None else (
        [ctx.cache["labels"].get(Path(f).name) for f in feats.files] if ctx.cache.get("labels") else None)
    ctx.figure(out, "tsne", embedding_scatter(emb, labels), caption="t-SNE of the CNN codes"
               + (", coloured by source photo" if ctx.dataset is None else "") + ".")
    cells, side = grid_assignment(emb.xy)
    ctx.figure(out, "tsne-grid", embedding_grid(feats.files, cells, side, cell_px=ctx.q(40, 56)), photo=True,
               caption=f"The same layout snapped one-to-one onto a {side} x {side} grid of the images.")
    out.params.update({"embedding": "t-SNE (openTSNE)", "perplexity": perplexity})
    out.numbers.update({"trustworthiness (10 neighbours)": emb.trustworthiness, "t-SNE seconds": emb.seconds})


def _attribution_tile(m: torch.Tensor, kind: str) -> Image.Image:
    """A saliency map ``3xHxW`` or ``HxW`` as a picture: magnitude (``abs``) or signed RGB around grey (``rgb``)."""
    m = m.detach().float().cpu()
    if kind == "abs":
        mag = m.abs().amax(0) if m.dim() == 3 else m.abs()
        hi = torch.quantile(mag.flatten(), 0.99).clamp_min(1e-12)
        return F.colorize(mag, "inferno", mode="minmax", vmin=0.0, vmax=float(hi))
    g = m - m.mean(dim=(-2, -1), keepdim=True)  # per colour channel, so no channel tints the picture
    s = g.std().clamp_min(1e-12)
    return F.to_rgb((0.5 + 0.15 * g / s).clamp(0, 1))


def _sec_occlusion(ctx: TourContext, out: SectionOutput) -> None:
    occlusion = _need("attribute.occlusion", "occlusion")
    window, stride = ctx.q(48, 32), ctx.q(16, 8)
    panels = []
    for name in dict.fromkeys([ctx.main_name, "rocket" if "rocket" in ctx.photos else list(ctx.photos)[-1]]):
        x = ctx.pixels(name)
        pred = ctx.model.predict(x, top=1)[0][0]
        heat = occlusion(ctx.model, x, pred.index, window=window, stride=stride)[0]
        panels.append((F.to_rgb(x[0]), f"{name}"))
        panels.append((F.heatmap_overlay(x[0], heat.clamp_min(0), alpha=0.55),
                       f"p({pred.label}) = {pred.prob:.2f}; red: largest drop"))
        out.numbers[f"{name}: p({pred.label})"] = pred.prob
        out.numbers[f"{name}: largest drop"] = float(heat.max())
    ctx.figure(out, "maps", F.side_by_side(panels, caption_size=11), photo=True,
               caption="Warm colours: occluding that region lowers the probability of the predicted class most.")
    out.params.update({"window": window, "stride": stride, "fill": "zero", "score": "probability"})


def _sec_saliency(ctx: TourContext, out: SectionOutput) -> None:
    vanilla, guided, deconv, smooth, ig = _need("attribute.gradients", "vanilla_gradient", "guided_backprop",
                                                "deconvnet", "smoothgrad", "integrated_gradients")
    x = ctx.pixels()
    pred = ctx.model.predict(x, top=1)[0][0]
    t = pred.index
    samples, steps = ctx.q(8, 25), ctx.q(16, 50)
    maps = [("gradient", vanilla(ctx.model, x, t)[0], "abs"), ("DeconvNet", deconv(ctx.model, x, t)[0], "rgb"),
            ("guided backprop", guided(ctx.model, x, t)[0], "rgb"),
            (f"SmoothGrad ({samples})", smooth(ctx.model, x, t, samples=samples, generator=ctx.generator())[0], "abs"),
            (f"integrated gradients ({steps})", ig(ctx.model, x, t, steps=steps)[0], "abs")]
    panels = [(F.to_rgb(x[0]), f"{pred.label} {pred.prob:.2f}")]
    panels += [(_attribution_tile(m, kind), name) for name, m, kind in maps]
    try:
        grad_cam, guided_grad_cam = _need("attribute.cam", "grad_cam", "guided_grad_cam")
        cam = grad_cam(ctx.model, x, t)[0]
        panels.append((F.heatmap_overlay(x[0], cam, alpha=0.5), "Grad-CAM"))
        panels.append((_attribution_tile(guided_grad_cam(ctx.model, x, t)[0], "rgb"), "guided Grad-CAM"))
    except NotAvailable:
        pass
    half = (len(panels) + 1) // 2
    fig = F.stack([F.side_by_side(panels[:half], caption_size=11), F.side_by_side(panels[half:], caption_size=11)])
    ctx.figure(out, "maps", fig, photo=True, caption=f"Why {ctx.model.name} says '{pred.label}': each method's "
               "map for that class on the same photo.")
    out.params.update({"image": ctx.main_name, "target": f"{pred.label} ({t})", "SmoothGrad samples": samples,
                       "IG steps": steps})
    g = maps[0][1].abs().amax(0)
    h = g.shape[0]
    centre = g[h // 4: 3 * h // 4, h // 4: 3 * h // 4].sum() / g.sum()
    out.numbers.update({f"p({pred.label})": pred.prob, "gradient mass in the central half": float(centre)})


def _sec_grabcut(ctx: TourContext, out: SectionOutput) -> None:
    grabcut = _need("attribute.segment", "grabcut")
    saliency = _need("attribute.methods", "saliency")
    panels = []
    for name in dict.fromkeys([ctx.main_name, "rocket" if "rocket" in ctx.photos else list(ctx.photos)[-1]]):
        x = ctx.pixels(name)
        pred = ctx.model.predict(x, top=1)[0][0]
        m = saliency(ctx.model, x, "gradcam", pred.index)
        seg = grabcut(x, m)
        panels += [(F.heatmap_overlay(x[0], m[0], alpha=0.5), f"{name}: Grad-CAM for {pred.label}"),
                   (F.to_rgb(seg.cutout(x)[0]), f"GrabCut: {float(seg.area[0]):.0%} of the image")]
        out.numbers[f"{name}: mask area"] = float(seg.area[0])
    ctx.figure(out, "masks", F.side_by_side(panels, caption_size=11), photo=True,
               caption="Grad-CAM's map seeds GrabCut (sure foreground above its 95th percentile, sure background "
               "below its 30th); GrabCut's colour models draw the outline.")
    out.params.update({"seed map": "Grad-CAM", "foreground quantile": 0.95, "background quantile": 0.3,
                       "iterations": 5})


def _sec_slice(ctx: TourContext, out: SectionOutput) -> None:
    slice_accuracy = _need("study.slicing", "slice_accuracy")
    from ..read.dataset import Dataset
    from .study import attribute_figure, corruption_figure

    files = ctx.dataset_files()
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(len(files), ctx.q(24, 160))).round().astype(int)]
    known = ctx.cache.get("labels") or {}
    ds, what = None, "true labels"
    if files and all(known.get(f.name) is not None for f in files):
        ds = Dataset(files, [known[f.name] for f in files])
        try:
            from ..study.slicing import resolve_labels
            resolve_labels(ctx.model, ds)
        except UserError:
            ds = None
    if ds is None:  # no usable labels: score against the network's own answer on the clean photo
        preds = []
        for i in range(0, len(files), 16):
            with torch.no_grad():
                preds += ctx.model(ctx.model.load(files[i:i + 16])).argmax(-1).tolist()
        ds, what = Dataset(files, preds), "the network's own answer on the clean photo (these photos have no labels)"
    labelled = what == "true labels"
    attrs = (["brightness", "contrast", "sharpness", "colourfulness"] + ([] if ctx.quick else ["object_scale"])
             if labelled else [])  # against its own answers every bin would be 100%: nothing to see
    corr = ["gaussian_noise", "gaussian_blur", "contrast", "occlusion"] if ctx.quick else None
    r = slice_accuracy(ctx.model, ds, attributes=attrs, bins=3, corruptions=corr or "default",
                       severities=(1, 3, 5) if ctx.quick else (1, 2, 3, 4, 5), corruption_limit=ctx.q(16, 80),
                       seed=ctx.seed)
    if attrs:
        ctx.figure(out, "attributes", attribute_figure(r, columns=len(attrs)),
                   caption=f"Top-1 / top-5 accuracy per equal-count bin of each attribute on {len(files)} photos, "
                   f"with 95% Wilson intervals.")
    ctx.figure(out, "corruptions", corruption_figure(r),
               caption=f"Accuracy against severity of ImageNet-C corruptions (and convlens' occlusion) on "
               f"{r.corruption_n} photos, scored against {what}; severity 0 is the clean photo. Attributes need a "
               f"labelled folder (--images with a LABELS.csv)." if not labelled else
               f"Accuracy against severity of ImageNet-C corruptions (and convlens' occlusion) on "
               f"{r.corruption_n} photos; severity 0 is the clean photo.")
    out.params.update({"images": len(files), "labels": what, "attributes": attrs, "bins": 3,
                       "corruptions": [c.name for c in r.corruptions], "severities": r.params["severities"]})
    if labelled:
        out.numbers["top-1"] = r.overall.top1
    for c in r.corruptions:
        out.numbers[f"top-1 at {c.name} severity {c.severities[-1]}"] = c.top1[-1]
    out.numbers["seconds"] = r.seconds.get("total")


def _sec_visualize(ctx: TourContext, out: SectionOutput) -> None:
    visualize_class, visualize_unit = _need("synthesize.visualize", "visualize_class", "visualize_unit")
    classes = [130, 9, 948, 574][: ctx.q(3, 4)] if ctx.model.num_classes >= 1000 else [0, 1, 2]
    size, steps = ctx.q(128, 224), ctx.q(64, 192)
    res = visualize_class(ctx.model, classes, preset="lucid", size=size, steps=steps, seed=ctx.seed)
    images = res.images.detach().cpu()
    q8 = (images * 255).round() / 255  # what a saved PNG holds
    with torch.no_grad():
        probs = ctx.model(ctx.model.preprocess.resize_tensor(q8.to(ctx.model.device))).softmax(-1).cpu()
    panels = [(F.to_rgb(im), f"{ctx.model.label(c)}\np={probs[i, c]:.2f}") for i, (c, im) in enumerate(zip(classes, images))]
    layer = ctx.pick_layer()
    chans = list(range(ctx.q(4, 8)))
    ures = visualize_unit(ctx.model, layer, chans, size=ctx.q(96, 160), steps=ctx.q(48, 128), seed=ctx.seed)
    panels += [(F.to_rgb(im), f"{layer} ch {c}") for c, im in zip(chans, ures.images.detach().cpu())]
    ctx.figure(out, "classes", F.side_by_side(panels, caption_size=11), photo=True,
               caption="Left: images optimised to raise one class score (Fourier parametrisation with random "
               "shift, scale and rotation); right: images that excite single channels of a middle layer.")
    out.params.update({"preset": "lucid", "size": size, "steps": steps, "unit layer": layer,
                       "unit steps": ctx.q(48, 128)})
    for i, c in enumerate(classes):
        out.numbers[f"p({ctx.model.label(c)}) of its own image"] = float(probs[i, c])
    out.numbers["seconds per class image"] = res.seconds / len(classes)


def _sec_dream(ctx: TourContext, out: SectionOutput) -> None:
    dream, default_dream_layer = _need("synthesize.dream", "dream", "default_dream_layer")
    kw = {"octaves": ctx.q(3, 4), "steps": ctx.q(8, 10), "max_side": ctx.q(256, 512)}
    layer = default_dream_layer(ctx.model)
    res = dream(ctx.model, ctx.photos[ctx.main_name], layer=layer, seed=ctx.seed, **kw)
    img = res.images[0].detach().cpu()
    photo = F.fit(ctx.photos[ctx.main_name], max(img.shape[1:]))
    ctx.figure(out, "dream", F.side_by_side([(photo, "photo"), (F.to_rgb(img), f"DeepDream at {layer}")]),
               photo=True, caption="Patterns that the layer detects are amplified wherever they faintly appear.")
    out.params.update({"layer": layer, **kw, "jitter": 32})
    out.numbers.update({"steps": res.steps, "seconds": res.seconds,
                        f"L2 norm objective at {layer} (end)": float(res.values.mean())})


def _sec_invert(ctx: TourContext, out: SectionOutput) -> None:
    invert, default_invert_layers = _need("synthesize.invert", "invert", "default_invert_layers")
    layers = default_invert_layers(ctx.model, 3) if ctx.quick else None
    kw: dict[str, Any] = {"steps": ctx.q(80, 200)}
    res = invert(ctx.model, ctx.pixels(), layers, **kw) if layers else invert(ctx.model, ctx.pixels(), **kw)
    panels = [(F.to_rgb(res.photo[0] if res.photo.dim() == 4 else res.photo), "photo")]
    for name, im in res.images.items():
        panels.append((F.to_rgb(im[0] if im.dim() == 4 else im), f"from {name}\nerror {res.errors[name]:.3f}"))
        out.numbers[f"relative feature error at {name}"] = res.errors[name]
    ctx.figure(out, "layers", F.side_by_side(panels, caption_size=11), photo=True,
               caption="Images reconstructed from the code of the photo at increasing depth.")
    out.params.update({"layers": ", ".join(res.images), **kw, "tv": 0.5})


def _sec_texture(ctx: TourContext, out: SectionOutput) -> None:
    synthesize_texture = _need("synthesize.texture", "synthesize_texture")
    from ..images import demo_images, to_pixels

    name = "brick"
    sample = to_pixels(demo_images([name])[name])[None]
    side = ctx.q(128, 256)
    steps = ctx.q(60, 300)
    res = synthesize_texture(ctx.model, sample, size=(side * 2, side * 2), steps=steps, sample_size=side,
                             seed=ctx.seed)
    ctx.figure(out, "brick", F.side_by_side([(F.fit(F.to_rgb(sample[0]), side), f"sample ({name})"),
                                             (F.to_rgb(res.image[0]), f"synthesised {side * 2}x{side * 2}")]),
               photo=True, caption="A texture twice the sample's size, grown from noise by matching Gram matrices.")
    out.params.update({"sample": name, "layers": ", ".join(res.layers), "steps": res.steps,
                       "optimizer": "L-BFGS"})
    out.numbers.update({"style loss": res.style_loss, "seconds": res.seconds})


def _style_image(ctx: TourContext) -> tuple[str, torch.Tensor]:
    from ..images import demo_images, to_pixels

    if ctx.style is not None:
        return Path(ctx.style).stem, to_pixels(load_image(ctx.style))[None]
    name = "immunohistochemistry"
    return name, to_pixels(demo_images([name])[name])[None]


def _sec_style(ctx: TourContext, out: SectionOutput) -> None:
    style_transfer = _need("synthesize.style", "style_transfer")
    from ..images import to_pixels

    sname, style = _style_image(ctx)
    content = to_pixels(ctx.photos[ctx.main_name])[None]
    size, steps = ctx.q(160, 256), ctx.q(60, 300)
    res = style_transfer(ctx.model, content, [style], size=size, steps=steps, seed=ctx.seed)
    ctx.cache["style_seconds"] = res.seconds
    ctx.figure(out, "result", F.side_by_side([(F.fit(F.to_rgb(content[0]), size), "content"),
                                              (F.fit(F.to_rgb(style[0]), size), f"style: {sname}"),
                                              (F.to_rgb(res.image[0]), "result")], height=size), photo=True,
               caption="The content photo repainted with the style image's Gram statistics (L-BFGS on the pixels).")
    out.params.update({"size": size, "steps": res.steps, "content layer": res.content_layer,
                       "style layers": ", ".join(res.style_layers), "style image": sname})
    out.numbers.update({"content loss": res.content_loss, "style loss": res.style_loss, "seconds": res.seconds})


def _sec_fast_style(ctx: TourContext, out: SectionOutput) -> None:
    load_fast_style, apply_fast_style, pretrained_path = _need(
        "synthesize.fast_style", "load_fast_style", "apply_fast_style", "pretrained_path")
    from ..images import to_pixels

    net, config, _, _ = load_fast_style(pretrained_path())
    side = ctx.q(256, 512)
    x = to_pixels(F.fit(ctx.photos[ctx.main_name], side))[None]
    with torch.no_grad():
        apply_fast_style(net, x[..., :64, :64])  # warm-up
        t0 = time.perf_counter()
        y = apply_fast_style(net, x)
        secs = time.perf_counter() - t0
    ctx.figure(out, "result", F.side_by_side([(F.to_rgb(x[0]), "photo"),
                                              (F.to_rgb(y[0]), f"one forward pass: {secs:.2f} s")]), photo=True,
               caption="The network that ships with convlens, trained for Van Gogh's Starry Night on this model's "
               "perceptual losses, applied to a photo.")
    out.params.update({"network": pretrained_path().name, "styles": ", ".join(map(str, config.styles)),
                       "image side": side})
    out.numbers["seconds per image"] = secs
    if "style_seconds" in ctx.cache:
        out.numbers["speed-up over the optimisation above"] = ctx.cache["style_seconds"] / max(secs, 1e-6)


def _sec_fooling(ctx: TourContext, out: SectionOutput) -> None:
    fool = _need("adversarial.fooling", "fool")
    x = ctx.pixels()
    target = 105 if ctx.model.num_classes >= 1000 else 1  # koala
    eps = 8 / 255
    res = fool(ctx.model, x, target, eps=eps, max_steps=ctx.q(40, 100))
    adv = res.adversarial.detach().cpu()
    delta = adv[0] - x[0].cpu()
    o, t = res.original[0], res.target[0]
    panels = [(F.to_rgb(x[0]), f"{o.label} {o.prob:.2f}"),
              (F.to_rgb((0.5 + 10 * delta).clamp(0, 1)), f"perturbation x10\nL-inf {float(res.linf[0]) * 255:.1f}/255"),
              (F.to_rgb(adv[0]), f"{t.label} {t.prob:.2f}")]
    ctx.figure(out, "koala", F.side_by_side(panels, caption_size=11), photo=True,
               caption=f"The photo, the change (magnified ten times), and the changed photo the network now calls "
               f"'{t.label}'.")
    out.params.update({"target": f"{ctx.model.label(target)} ({target})", "eps": "8/255", "norm": "L-inf"})
    out.numbers.update({"success": bool(res.success[0]), "steps": int(res.steps[0]),
                        "L-inf (x255)": float(res.linf[0]) * 255, "L2": float(res.l2[0]),
                        f"p({o.label}) before": o.prob, f"p({t.label}) after": t.prob})


SECTIONS: tuple[Section, ...] = (
    Section("model", "The model",
            "Every layer of the network is addressable by its module name, with its output shape and the size of "
            "the input window one of its units sees (its receptive field). The later sections read, probe and "
            "optimise through these layers.", _sec_model),
    Section("predictions", "Predictions on the photos",
            "The network maps each photo to 1,000 class scores; the softmax turns them into probabilities. These "
            "are the decisions the rest of the report tries to explain.", _sec_predict),
    Section("weights", "Weights: first-layer filters",
            "The first convolution looks at raw pixels, so its filters can be drawn as small RGB images: they "
            "become oriented edge, colour and blob detectors. Deeper kernels see feature maps rather than colours, "
            "so they are shown as grayscale tiles that are far harder to read.", _sec_weights),
    Section("last-layer", "Last layer: nearest neighbours and t-SNE",
            "The penultimate layer turns each image into a code vector; images whose codes are close look alike "
            "to the network even when their pixels differ. t-SNE lays the codes out in 2-D so that neighbours "
            "stay neighbours, and a grid of the images shows what the network groups together.", _sec_neighbors),
    Section("activations", "Activations and top patches",
            "Each channel of a layer is a map of where its feature occurs in the image; many are silent on any "
            "one photo. Over a set of images, the patches that excite a channel most show what it responds to.",
            _sec_activations),
    Section("correspondence", "Correspondence",
            "Match each point of one photo to its nearest neighbour in a layer's feature space of another (Long, "
            "Zhang & Darrell 2014). On warped copies with known ground truth, mid-level layers are the ones that "
            "match, and they localise much finer than their receptive fields.",
            _sec_correspond),
    Section("directions", "Units or directions?",
            "Szegedy et al. (2014) found that the images that maximise a random direction of a layer's feature "
            "space look as coherent as those of a single unit. Here both come from one scan, with how alike the "
            "classes of their top images are in the network's own classifier space.", _sec_directions),
    Section("occlusion", "Occlusion",
            "Slide a grey square over the image and record how the probability of the predicted class drops: "
            "the regions that matter most are where occluding hurts most (Zeiler & Fergus 2014). It needs only "
            "forward passes, so it works on any model.", _sec_occlusion),
    Section("saliency", "Saliency, DeconvNet and guided backprop",
            "The gradient of the class score with respect to the pixels says which pixels would change the score "
            "most (Simonyan et al. 2014). Changing the backward rule of the ReLUs gives DeconvNet (Zeiler & Fergus) "
            "and guided backprop (Springenberg et al. 2015), sharper but less class-specific pictures.",
            _sec_saliency),
    Section("grabcut", "Segmentation from saliency (GrabCut)",
            "A saliency map marks where the evidence for a class is, but not the object's outline. Seeding GrabCut "
            "with its strongest and weakest pixels turns it into an object mask without any segmentation training "
            "(Simonyan et al. 2014).",
            _sec_grabcut),
    Section("slice", "Accuracy by image attribute and corruption",
            "This section asks where the network fails. Cutting a labelled set by image attributes (brightness, contrast, "
            "sharpness, the object's size) shows which kinds of photos it gets wrong (Russakovsky et al. 2015); "
            "corrupting the photos at growing severity shows how fast it breaks (Hendrycks & Dietterich 2019).",
            _sec_slice),
    Section("visualize", "Class and unit visualization",
            "Gradient ascent on the pixels finds an image that maximises a class score or a unit's activation. "
            "Plain ascent gives adversarial noise; regularisers and transformation robustness make the result "
            "show the parts the network looks for.", _sec_visualize),
    Section("dream", "DeepDream",
            "Instead of one class, amplify whatever a layer already sees: ascend the L2 norm of its activations, "
            "with jitter and several octaves (Mordvintsev et al. 2015). Patterns the layer detects grow out of "
            "the photo.", _sec_dream),
    Section("invert", "Feature inversion",
            "Given the code of an image at some layer, find an image whose code matches it, with a total-variation "
            "prior (Mahendran & Vedaldi 2015). Shallow layers keep almost everything; deep layers keep what "
            "matters for the class and lose exact colour and position.", _sec_invert),
    Section("texture", "Texture synthesis",
            "The Gram matrices of a layer's features (which channels fire together) describe a texture without "
            "saying where anything is (Gatys et al. 2015). Matching them from noise synthesises new texture "
            "of any size.", _sec_texture),
    Section("style", "Style transfer",
            "Match the deep features of a content photo and the Gram matrices of a painting at once, and the photo "
            "is repainted in the painting's style (Gatys et al. 2016). It is an optimisation per image, hence "
            "slow.", _sec_style),
    Section("fast-style", "Fast style transfer",
            "Train a feed-forward network once to minimise the same perceptual losses over many photos (Johnson "
            "et al. 2016). Afterwards stylising is one forward pass, orders of magnitude faster than the "
            "optimisation.", _sec_fast_style),
    Section("fooling", "Fooling the network",
            "A tiny, carefully chosen change to the pixels, invisible to a person, makes the network predict any "
            "class we like (Szegedy et al. 2014; Goodfellow et al. 2015). The perturbation is shown magnified.",
            _sec_fooling),
)


# --------------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------------
TOUR_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "clock", "coins", "hubble_deep_field",
               "immunohistochemistry", "retina", "brick", "gravel", "grass", "moon")


def tour_images(folder: str | Path | None = None, *, limit: int = 16) -> tuple[dict[str, Image.Image], list[Path] | None]:
    """The tour's photos: the first ``limit`` images of ``folder``, or scikit-image's bundled photos.

    Returns ``(photos by name, all files of the folder or None)``.
    """
    if folder is None:
        return demo_images(TOUR_PHOTOS), None
    files = list_images(folder)
    if not files:
        raise UserError(f"no images found in {folder}")
    import warnings

    photos: dict[str, Image.Image] = {}
    for f in files:  # the first ``limit`` readable ones: an unreadable file is skipped with a warning
        if len(photos) >= limit:
            break
        try:
            img = load_image(f)
        except UserError as exc:
            warnings.warn(f"skipped {f}: {exc}", stacklevel=2)
            continue
        name = f.stem
        while name in photos:
            name += "_"
        photos[name] = img
    if not photos:
        raise UserError(f"none of the {len(files)} image(s) in {folder} could be read")
    return photos, files


def augmented_crops(photos: dict[str, Image.Image], *, per_photo: int = 4, seed: int = 0,
                    size: int = 256) -> list[tuple[str, Image.Image]]:
    """Each photo plus ``per_photo`` random crops (60-90% of the side, some mirrored), as ``(source, image)``.

    A stand-in dataset for the neighbour and t-SNE sections when the user gives no folder: crops of one photo
    should land near each other in feature space, which makes the figures easy to judge.
    """
    rng = np.random.default_rng(seed)
    items: list[tuple[str, Image.Image]] = []
    for name, img in photos.items():
        items.append((name, F.fit(img, size)))
        w, h = img.size
        for _ in range(per_photo):
            s = rng.uniform(0.6, 0.9)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            items.append((name, F.fit(crop, size)))
    return items


# --------------------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------------------
@dataclass
class TourReport:
    """A finished (or interrupted) tour: its sections, the page it wrote and the total time."""

    sections: list[SectionResult]
    path: Path
    seconds: float
    quick: bool

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sections:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    def size_bytes(self) -> int:
        root = self.path.parent
        return sum(p.stat().st_size for p in [root / "index.html", *(root / "img").glob("*")] if p.is_file())

    def as_dict(self) -> dict[str, Any]:
        return {"report": str(self.path), "profile": "quick" if self.quick else "full",
                "seconds": round(self.seconds, 2), "counts": self.counts, "bytes": self.size_bytes(),
                "sections": [s.as_dict() for s in self.sections]}


def _write_page(ctx: TourContext, results: list[SectionResult], started: float, *, running: bool) -> Path:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    info = ctx.model.preprocess
    return render("tour.html", ctx.out / "index.html", sections=results, model_name=ctx.model.name,
                  summary_line=f"input {info.size[0]}x{info.size[1]}, {len(ctx.photos)} photos"
                               + (f", {len(ctx.dataset)} images in the folder" if ctx.dataset else ""),
                  profile="quick" if ctx.quick else "full", seed=ctx.seed, running=running,
                  written=time.strftime("%Y-%m-%d %H:%M"), version=__version__,
                  counts=", ".join(f"{v} {k}" for k, v in counts.items()),
                  total_seconds=time.perf_counter() - started)


def run_tour(model: Model, out: str | Path, *, images: str | Path | None = None, quick: bool = True, seed: int = 0,
             only: Sequence[str] | None = None, style: str | Path | None = None,
             progress: Callable[[int, int, SectionResult], None] | None = None) -> TourReport:
    """Run every section of the lecture on ``model`` and write the static report ``out/index.html``.

    Args:
        model: the network to explain.
        out: folder for ``index.html`` and its pictures (``img/``).
        images: a folder of the user's photos (default: scikit-image's bundled photos; the dataset sections then
            use those photos plus random crops of each).
        quick: the quick profile (small sizes, few steps; minutes on a laptop CPU) or the full one.
        seed: seeds every random choice, so the same seed gives the same report.
        only: run just these section keys (the others are listed as skipped).
        style: a painting for the style-transfer section (default: a bundled colourful micrograph).
        progress: called as ``progress(i, n, result)`` before (status ``pending``) and after each section.

    Returns:
        A :class:`TourReport`; each section's status is ``ok``, ``failed`` (with the error shown in the page),
        ``unavailable`` (technique not in this build) or ``skipped``.
    """
    started = time.perf_counter()
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    photos, files = tour_images(images)
    work = Path(tempfile.mkdtemp(prefix="convlens-tour-"))
    ctx = TourContext(model, photos, out, quick=quick, seed=seed, dataset=files, work=work, style=style)
    if only is not None:
        unknown = sorted(set(only) - {s.key for s in SECTIONS})
        if unknown:
            raise UserError(f"unknown tour section(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(s.key for s in SECTIONS)}")
    results = [SectionResult(s.key, s.title, s.explanation) for s in SECTIONS]
    for r in results:
        if only is not None and r.key not in only:
            r.status, r.error = "skipped", "not selected (--only)"
    _write_page(ctx, results, started, running=True)
    todo = [(s, r) for s, r in zip(SECTIONS, results) if r.status == "pending"]
    caller_rng = torch.random.get_rng_state()  # sections are seeded below; the caller's generator is restored
    try:
        for i, (sec, res) in enumerate(todo):
            if progress:
                progress(i, len(todo), res)
            ctx.key = sec.key
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            try:
                sec.run(ctx, res.output)
                res.status = "ok"
            except NotAvailable as exc:
                res.status, res.error = "unavailable", str(exc)
            except (KeyboardInterrupt, SystemExit):
                res.status, res.error = "failed", "interrupted"
                res.seconds = time.perf_counter() - t0
                _write_page(ctx, results, started, running=False)
                raise
            except Exception as exc:  # noqa: BLE001 - a failing section is reported in its place; the rest run
                res.status, res.error = "failed", f"{type(exc).__name__}: {exc}"
                res.traceback = "".join(traceback.format_exception(exc)[-6:])
            res.seconds = time.perf_counter() - t0
            _write_page(ctx, results, started, running=i + 1 < len(todo))
            if progress:
                progress(i + 1, len(todo), res)
    finally:
        torch.random.set_rng_state(caller_rng)
        shutil.rmtree(work, ignore_errors=True)
    path = _write_page(ctx, results, started, running=False)
    report = TourReport(results, path, time.perf_counter() - started, quick)
    write_result(out, "tour", report.as_dict(), model=model.name, seed=seed)  # the CLI rewrites it with more
    return report
