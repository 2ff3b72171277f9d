"""The tour: the whole "Visualizing and Understanding ConvNets" lecture run on one model, as one static HTML report.

:func:`run_tour` runs one *section* per lecture topic, in the lecture's order, and writes ``index.html`` with the
pictures as files beside it (``img/``) and every number in ``result.json``. Each section is a few lines: the
library recipe that its CLI command calls, then the ``show/`` renderer that command uses, plus the parameters and
numbers for the page. A section that fails is reported in its place; the others still run. The page is rewritten after every section, so an interrupted tour leaves a readable report on disk.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

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

__all__ = [
    "PHOTO_TRUTH",
    "SECTIONS",
    "TOUR_PHOTOS",
    "Figure",
    "Section",
    "SectionOutput",
    "SectionResult",
    "Table",
    "TourContext",
    "TourReport",
    "augmented_crops",
    "run_tour",
    "tour_images",
]


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
    """How one section went: ``status`` is ok, failed, skipped or pending; ``seconds`` its wall time."""

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
        return self.status

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
                 dataset: list[Path] | None = None, work: Path | None = None, style: str | Path | None = None,
                 transfer_to: Model | None = None) -> None:
        self.model = model
        self.photos = photos
        self.out = out
        self.quick = quick
        self.seed = seed
        self.dataset = dataset
        self.style = style
        self.transfer = transfer_to
        self.work = work or out / "_work"
        self.cache: dict[str, Any] = {}
        self.key = ""

    def dataset_files(self) -> list[Path]:
        """The image set of the dataset sections: the user's folder (up to a limit), or every shipped photo plus
        a few random crops of each, written once to the work folder. ``cache["sources"]`` maps file name -> photo."""
        if "files" in self.cache:
            return self.cache["files"]
        if self.dataset is not None:
            files = self.dataset[: self.q(300, 2000)]
            sources = {f.name: f.parent.name if len({g.parent for g in files}) > 1 else f.stem for f in files}
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
            for j, (name, img) in enumerate(augmented_crops(self.photos, per_photo=self.q(2, 4), seed=self.seed)):
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
        """The deepest stage output whose units still see less than half the image, moved back to the last rectified
        layer at or before it (for activations and patches: units that mean something)."""
        from ..read.scan import unit_layer_at

        h = self.model.preprocess.size[0]
        best = None
        stages = set(self.model.layers.stages())
        for info in self.model.layers.spatial():
            if info.name in stages and not info.rf.whole and info.rf.size[0] <= h / 2 and info.shape[1] > 1:
                best = info.name
        return unit_layer_at(self.model, best) if best else self.pick_layer()

    def pick_layer(self, *, min_side: int = 14, max_side: int = 56, max_channels: int = 128) -> str:
        """A mid-depth spatial layer (a block output when the network has blocks) for the per-image sections."""
        best = None
        stages = set(self.model.layers.stages())
        for info in self.model.layers.spatial():
            c, h, _ = info.shape
            if min_side <= h <= max_side and c <= max_channels and info.name in stages:
                best = info.name
        return best or self.model.layers.last_spatial()


    # -- shared answers of the model on the tour's photos (no class index or layer name is ever hard-coded) --
    def predictions(self, top: int = 5) -> dict[str, list[Any]]:
        """The model's top classes on every tour photo (computed once)."""
        if "predictions" not in self.cache:
            names = list(self.photos)
            x = torch.cat([self.pixels(n) for n in names])
            self.cache["predictions"] = dict(zip(names, self.model.predict(x, top=5)))
        return {n: p[:top] for n, p in self.cache["predictions"].items()}

    def verdict(self, name: str, *, top: int = 1) -> str:
        """``right`` / ``WRONG (shows ...)`` / ``no class`` / ``unknown`` for a shipped photo's top-``top`` answer."""
        if self.dataset is not None or name not in PHOTO_TRUTH:
            return "unknown"
        what, words = PHOTO_TRUTH[name]
        if not words:
            return "no class"
        hit = any(w in q.label.lower() for q in self.predictions(top)[name] for w in words)
        return "right" if hit else f"WRONG (shows {what})"

    def classes(self, n: int) -> list[int]:
        """Up to ``n`` distinct classes the model gives the tour photos, photos it gets right first."""
        preds = self.predictions(1)
        order = sorted(preds, key=lambda k: (self.verdict(k) != "right", -preds[k][0].prob))
        return list(dict.fromkeys(preds[k][0].index for k in order))[:n]

    def pair(self) -> list[str]:
        """The main photo and the next photo the model gets right (or the next photo)."""
        rest = [n for n in self.photos if n != self.main_name]
        good = [n for n in rest if self.verdict(n) == "right"] or rest
        return [self.main_name] + good[:1]

    def originals(self) -> list[Path]:
        """One file per photo (no crops)."""
        files = self.dataset_files()
        return files if self.dataset is not None else [f for f in files if f.stem.endswith("_0")]

    def query_files(self, n: int) -> list[Path]:
        files = self.originals()
        return files[:: max(1, len(files) // n)][:n]

    def group(self, f: str | Path) -> Any:
        """What a file belongs to: its label when the folder has labels, else its source photo (or folder)."""
        name = Path(f).name
        labels = self.cache.get("labels")
        return labels.get(name) if labels else self.cache["sources"].get(name, Path(f).stem)

    def codes(self, layer: str) -> tuple[np.ndarray, list[Path]]:
        """Pooled codes of the dataset images at ``layer`` (one cached scan shared by the sections)."""
        from ..read import PooledFeatures, scan

        key = f"codes:{layer}"
        if key not in self.cache:
            feats = scan(self.model, self.dataset_files(), [PooledFeatures(layer)], cache_dir=self.work / "cache",
                         progress=False)["features"]
            self.cache[key] = (np.asarray(feats[layer]), [Path(f) for f in feats.files])
        return self.cache[key]

    def dataset_note(self) -> str:
        if self.dataset is not None:
            return f"Images: the first {len(self.dataset_files())} of the folder."
        n = len(self.photos)
        return (f"Only {n} photos ship with convlens, so the {len(self.dataset_files())} images are those photos "
                f"and a few random crops of each: some neighbours and top images are crops of one photo. Give "
                f"--images DIR (e.g. ../shared/data) for a real image set.")

    def own_answers(self, files: Sequence[Path]) -> list[int]:
        """The model's top-1 class of each file (computed once per file for the whole tour)."""
        known: dict[Path, int] = self.cache.setdefault("answers", {})
        todo = [f for f in dict.fromkeys(files) if f not in known]
        for i in range(0, len(todo), 16):
            with torch.no_grad():
                known.update(zip(todo[i:i + 16], self.model(self.model.load(todo[i:i + 16])).argmax(-1).tolist()))
        return [known[f] for f in files]

    def largest_class(self) -> tuple[int, list[Path]]:
        """The class the model gives most dataset images, and those images."""
        files = self.dataset_files()
        answers = self.own_answers(files)
        cls = max(set(answers), key=answers.count)
        return cls, [f for f, a in zip(files, answers) if a == cls]

    def split_files(self) -> tuple[list[Path], list[Path]]:
        """The dataset split in two by photo (crops of one photo stay on one side), for held-out measurements."""
        files = self.dataset_files()
        groups = list(dict.fromkeys(self.group(f) for f in files))
        held = set(groups[1::2])
        return [f for f in files if self.group(f) not in held], [f for f in files if self.group(f) in held]

    def probs_of_png(self, images: torch.Tensor) -> torch.Tensor:
        """The model's probabilities for optimised images as a saved 8-bit PNG holds them."""
        from ..adversarial import quantize

        with torch.no_grad():
            return self.model(self.model.preprocess.resize_tensor(quantize(images).to(self.model.device))).softmax(-1).cpu()

    def texture_sample(self) -> torch.Tensor:
        from ..images import to_pixels

        return to_pixels(shipped_photo("brick"))[None]

    def style_image(self) -> tuple[str, torch.Tensor]:
        """The user's painting, or (none ships) the shipped Starry Night network's rendering of a colourful photo."""
        from ..images import to_pixels

        if self.style is not None:
            return Path(self.style).stem, to_pixels(load_image(self.style))[None]
        if "style" not in self.cache:
            from ..synthesize.fast_style import apply_fast_style, load_fast_style, pretrained_path

            net = load_fast_style(pretrained_path())[0]
            self.cache["style"] = apply_fast_style(net, to_pixels(F.fit(shipped_photo("china"), 512))[None])
        return "Starry Night rendering", self.cache["style"]

    def style_note(self) -> str:
        return ("" if self.style is not None else "No painting ships with convlens: the style image is the shipped "
                "Starry Night network's rendering of a photo (give --style PAINTING for a real one).")

    def transfer_model(self) -> Model | None:
        """The second network adversarial images are carried to: the one given, else another embedded network with
        the same classes (none: the transfer column stays empty)."""
        if self.transfer is not None or "transfer" in self.cache:
            return self.transfer or self.cache["transfer"]
        from ..models import available_models, load_model

        other = next((n for n in available_models() if ":" not in n and "/" not in n and n != self.model.name), None)
        m = load_model(other, device=self.model.device) if other else None
        self.cache["transfer"] = m if m is not None and m.num_classes == self.model.num_classes else None
        return self.cache["transfer"]


# --------------------------------------------------------------------------------------------------------------
# sections: each calls the library recipe and the show/ renderer that its CLI command uses
# --------------------------------------------------------------------------------------------------------------
def _sec_model(ctx: TourContext, out: SectionOutput) -> None:
    model, layers = ctx.model, ctx.model.layers
    out.numbers.update({"parameters": sum(p.numel() for p in model.module.parameters()),
                        "addressable layers": len(layers), "spatial layers": len(layers.spatial()),
                        "classes": model.num_classes, "stages": len(layers.stages())})
    out.params.update({"model": model.name, "input size": "x".join(map(str, model.preprocess.size)),
                       "mean": str(tuple(round(m, 3) for m in model.preprocess.mean)),
                       "std": str(tuple(round(s, 3) for s in model.preprocess.std))})
    stages = set(layers.stages())
    rows = [[i.name, i.type, " x ".join(map(str, i.shape)),
             "whole image" if i.rf.whole else f"{i.rf.size[0]:g} px, stride {i.rf.stride[0]:g}"]
            for i in layers if "." not in i.name or i.name in stages]
    out.tables.append(Table(["layer", "type", "output", "receptive field"], rows[:60],
                            "top-level layers and stage outputs (all of them: convlens layers MODEL)"))


def _sec_predict(ctx: TourContext, out: SectionOutput) -> None:
    names = list(ctx.photos)
    preds = ctx.predictions()
    tiles, rows, wrong = [], [], 0
    for n in names:
        p, verdict = preds[n], ctx.verdict(n)
        wrong += verdict.startswith("WRONG")
        tiles.append(F.caption(F.to_rgb(ctx.pixels(n)[0]).resize((150, 150), Image.Resampling.LANCZOS),
                               f"{n}\n{p[0].label[:22]} {p[0].prob:.2f}\n{verdict.split(' (')[0]}", size=11))
        rows.append([n, PHOTO_TRUTH.get(n, ("?",))[0] if ctx.dataset is None else "-", verdict,
                     *[f"{q.label} {q.prob:.3f}" for q in p[:3]]])
    ctx.figure(out, "photos", F.grid(tiles, ncols=min(6, len(tiles))), photo=True,
               caption="The photos as the model sees them (resized, centre-cropped) with its top class. 'WRONG' "
               "marks a photo whose top class does not name what it shows; 'no class' marks a photo (a texture, a "
               "micrograph, coins) for which the model's label set has no right answer, so any answer is a guess.")
    out.tables.append(Table(["photo", "what it shows", "verdict", "top 1", "top 2", "top 3"], rows))
    out.numbers.update({"photos": len(names), "marked wrong": wrong,
                        "mean top-1 probability": float(np.mean([preds[n][0].prob for n in names]))})


def _sec_weights(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import conv_filters, render

    f = conv_filters(ctx.model)
    w = f.weight
    ctx.figure(out, "first", render.filters_figure(f), pixel=True,
               caption=f"The {w.shape[0]} filters of {f.layer} ({w.shape[2]}x{w.shape[3]}, RGB), each scaled on its "
               "own: oriented edges and colour blobs when the network is trained, noise when it is not.")
    mods = ctx.model.layers.modules
    convs = [(i.name, m) for i in ctx.model.layers if isinstance(m := mods[i.name], torch.nn.Conv2d)]
    nxt = next((n for n, m in convs[1:] if m.kernel_size[0] > 1), None)
    if nxt is not None:
        f2 = conv_filters(ctx.model, nxt)
        ctx.figure(out, "second", render.filters_figure(f2, max_out=16, max_in=16), pixel=True,
                   caption=f"{nxt} ({f2.kind}): kernels over feature maps, grayscale, far harder to read.")
    norms = w.flatten(1).norm(dim=1)
    out.params.update({"layer": f.layer, "second layer": nxt, "scaling": "per filter"})
    out.numbers.update({"filters": int(w.shape[0]), "mean filter L2 norm": float(norms.mean()),
                        "near-zero filters (norm < 1% of max)": int((norms < 0.01 * norms.max()).sum())})


def _sec_neighbors(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import embed, feature_layer, grid_assignment, neighbors
    from ..read.render import embedding_grid, embedding_scatter, neighbors_figure

    files, src, layer = ctx.dataset_files(), ctx.cache["sources"], feature_layer(ctx.model)
    queries = ctx.query_files(ctx.q(4, 6))
    res = neighbors(ctx.model, files, queries, layer=layer, k=ctx.q(6, 8), cache_dir=ctx.work / "cache",
                    progress=False)
    ctx.figure(out, "neighbors", neighbors_figure(res, size=ctx.q(88, 96), names={f.name: src[f.name] for f in files},
                                                  max_queries=len(queries)), photo=True,
               caption="Each row: a query, its nearest images by L2 distance of the CNN code, then by L2 distance "
               "of the pixels. " + ctx.dataset_note())
    codes, feat_files = ctx.codes(layer)
    emb = embed(codes, "tsne", seed=ctx.seed, perplexity=float(min(30.0, max(2.0, (len(codes) - 1) / 3.5))),
                pca_dims=min(50, len(codes) - 1))
    labels = [ctx.group(f) for f in feat_files]
    ctx.figure(out, "tsne", embedding_scatter(emb, labels), caption="t-SNE of the CNN codes, coloured by "
               + ("label." if ctx.cache.get("labels") else "source photo." if ctx.dataset is None else "file."))
    cells, side = grid_assignment(emb.xy)
    ctx.figure(out, "tsne-grid", embedding_grid(feat_files, cells, side, cell_px=ctx.q(48, 56)), photo=True,
               caption=f"The same layout snapped one-to-one onto a {side} x {side} grid of the images.")
    same = np.array([[ctx.group(res.files[j]) == ctx.group(q) for j in row] for q, row in zip(res.queries,
                                                                                            res.feature_index)])
    pix = np.array([[ctx.group(res.files[j]) == ctx.group(q) for j in row] for q, row in zip(res.queries,
                                                                                           res.pixel_index)])
    what = "label" if ctx.cache.get("labels") else "photo"
    out.params.update({"layer": layer, "database images": len(files), "queries": len(queries),
                       "embedding": "t-SNE (openTSNE)"})
    out.numbers.update({f"feature neighbours of the same {what}": float(same.mean()),
                        f"pixel neighbours of the same {what}": float(pix.mean()),
                        "trustworthiness (10 neighbours)": emb.trustworthiness})


def _sec_pca(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import embed, feature_layer
    from ..read.render import embedding_scatter

    layer = feature_layer(ctx.model)
    codes, feat_files = ctx.codes(layer)
    emb = embed(codes, "pca", seed=ctx.seed)
    ctx.figure(out, "pca", embedding_scatter(emb, [ctx.group(f) for f in feat_files]),
               caption="The first two principal components of the same codes: a linear view that keeps the large "
               "distances, where t-SNE keeps the small ones.")
    c = codes - codes.mean(0)
    var = np.linalg.svd(c, compute_uv=False) ** 2
    out.params.update({"layer": layer, "images": len(codes)})
    out.numbers.update({"variance explained by 2 components": float(var[:2].sum() / var.sum()),
                        "trustworthiness (10 neighbours)": emb.trustworthiness})


def _sec_activations(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import activation_maps, guided_patches, top_patches
    from ..read.render import activations_figure, to_rgb, top_patches_figure

    layer = ctx.patch_layer()
    acts = activation_maps(ctx.model, ctx.pixels(), layer)
    limit = ctx.q(64, 128)
    ctx.figure(out, "grid", activations_figure(acts, max_channels=limit, tile_px=48), photo=True,
               caption=f"Channels of {layer} on {ctx.main_name} ({min(limit, acts.channels)} of {acts.channels}), "
               "each scaled to its own range; a red frame marks a channel that is zero everywhere on this image.")
    files, k = ctx.dataset_files(), ctx.q(6, 9)
    channels = list(range(min(acts.channels, ctx.q(6, 12))))
    tp = top_patches(ctx.model, files, layer, channels=channels, k=k, progress=False)
    tp = guided_patches(ctx.model, tp)
    guided = [[to_rgb(t) for t in row] for row in tp.guided or []]
    ctx.figure(out, "top-patches", top_patches_figure(tp, patch_px=ctx.q(48, 64), guided=guided), photo=True,
               caption=f"Channels {channels[0]}-{channels[-1]} of {layer}: the {k} patches of the {len(files)} "
               "images that excite each most, with their guided-backprop images. " + ctx.dataset_note())
    out.params.update({"layer": layer, "image": ctx.main_name, "images": len(files), "k": k})
    out.numbers.update({"channels": acts.channels, "all-zero channels on this image": int(np.sum(acts.dead)),
                        "strongest top-1 activation": float(max(p[0].value for p in tp.patches if p))})


def _sec_dead(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import DeadUnits, dead_unit_layers, scan
    from ..read.render import dead_units_figure

    names = dead_unit_layers(ctx.model)
    files = ctx.dataset_files()
    dead = scan(ctx.model, files, [DeadUnits(names)], progress=False)["dead"]
    ctx.figure(out, "dead", dead_units_figure(dead),
               caption=f"Per rectifier layer, the share of channels that never fire on any of the {len(files)} "
               "images (dead units); a few photos can only find an upper bound.")
    out.tables.append(Table(["layer", "channels", "dead", "fraction"],
                            [[n, d.channels, len(d.dead), f"{d.fraction:.1%}"] for n, d in dead.items()][:40]))
    out.params.update({"layers": len(names), "images": len(files)})
    out.numbers["dead channels in all"] = int(sum(len(d.dead) for d in dead.values()))


def _sec_erf(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import empirical_receptive_field, top_patches
    from ..read.render import receptive_field_figure

    layer = ctx.patch_layer()
    tp = top_patches(ctx.model, ctx.dataset_files(), layer, channels=[0], k=ctx.q(3, 8), progress=False)
    x = torch.stack([ctx.model.preprocess.to_tensor(p.file) for p in tp.patches[0]])
    erf = empirical_receptive_field(ctx.model, x, layer, 0, units=[(p.y, p.x) for p in tp.patches[0]],
                                    occluder=11, stride=ctx.q(max(4, int(tp.rf_size[0]) // 12), None), seed=ctx.seed)
    ctx.figure(out, "erf", receptive_field_figure(erf, x), photo=True,
               caption=f"Channel 0 of {layer}: where a random occluder changes the unit (Zhou et al. 2015), on its "
               f"top images; the box is the theoretical receptive field ({erf.theoretical:.0f} px).")
    out.params.update({"layer": layer, "channel": 0, "images": len(x), "occluder": erf.occluder,
                       "stride": erf.stride})
    out.numbers.update({"theoretical side (px)": erf.theoretical, "empirical side (px)": erf.empirical})


def _sec_correspond(ctx: TourContext, out: SectionOutput) -> None:
    from ..read.correspond import correspondence_layers, warp_study
    from ..show.correspond import pck_figure, warp_example_figure

    kinds = ctx.q(("affine", "flip"), ("affine", "perspective", "scale-crop", "flip"))
    st = warp_study(ctx.model, ctx.originals()[: ctx.q(1, 6)], layers=correspondence_layers(ctx.model), warps=kinds,
                    points=ctx.q(8, 10), seed=ctx.seed, progress=False)
    goal = st.goal(0.05)
    ctx.figure(out, "pck", pck_figure(st, alphas=ctx.q((0.05,), None)),
               caption=f"PCK per warp on {len(st.photos)} photo(s): each layer (shallow to deep), SIFT and raw pixel "
               "patches on the same query points; +photo adds a colour, contrast and noise change.")
    warp = next((w for w in st.warps if w.endswith("+photo")), st.warps[0])
    ctx.figure(out, "example", warp_example_figure(st, warp, [goal["best_layer"], "sift", "pixels"], px=ctx.q(200, 260)),
               photo=True, caption=f"Matches into the {warp} copy: green within 0.05 x side of the truth, red not.")
    out.tables.append(Table(["warp", *st.methods], [[r[0], *[f"{v:.2f}" for v in r[1:]]] for r in st.table(0.05)],
                            "PCK@0.05 (convlens correspond DATASET --warps for the full study)"))
    out.params.update({"warps": ", ".join(st.warps), "photos": len(st.photos)})
    out.numbers.update({"best layer (PCK@0.05)": goal["best_layer"],
                        "beats pixels on every warp": goal.get("beats_pixels_on_every_warp"),
                        "beats SIFT on the photometric warps": goal.get("beats_sift_on_photometric_warps")})


def _sec_directions(ctx: TourContext, out: SectionOutput) -> None:
    from ..read import crop_patches
    from ..read.directions import units_vs_directions
    from ..show.correspond import directions_figure

    files, layer, count, k = ctx.dataset_files(), ctx.patch_layer(), ctx.q(3, 6), ctx.q(6, 9)
    dt = units_vs_directions(ctx.model, files, [layer], count=count, k=k, seed=ctx.seed, progress=False,
                             draws=ctx.q(300, 2000)).layers[layer]
    names = {f.name: ctx.cache["sources"].get(f.name, f.stem) for f in files}
    ctx.figure(out, "directions", directions_figure(dt, crop_patches(ctx.model, dt.top), px=ctx.q(44, 56), names=names),
               photo=True, caption=f"Top {k} patches along {count} single units, {count} random directions and the "
               f"{count} leading principal directions of {layer}, from one scan of {len(files)} images.")
    if dt.coherence is not None:
        for kind in ("unit", "random", "pca"):
            out.numbers[f"{kind} classifier-space similarity"] = dt.coherence.summary(
                dt.directions.rows(kind))["similarity"]
        out.numbers["chance classifier-space similarity"] = dt.coherence.chance_similarity[0]
    out.params.update({"layer": layer, "images": len(files), "directions per kind": count, "k": k})


def _explain(ctx: TourContext, out: SectionOutput, methods: Sequence[tuple[str, dict[str, Any]]], *,
             photos: Sequence[str] | None = None, key: str = "maps", caption: str = "") -> None:
    """``explain`` (the CLI's recipe) for each photo's predicted class, drawn by the CLI's renderer."""
    from ..attribute.explain import explain
    from .attribution import explanation_figure

    rows = []
    for name in photos or [ctx.main_name]:
        p = ctx.predictions()[name][0]
        exp = explain(ctx.model, ctx.pixels(name), [m for m, _ in methods], p.index, options=dict(methods),
                      generator=ctx.generator())
        rows.append(explanation_figure(exp, title_text=f"{name} ({ctx.verdict(name)})"))
        out.numbers[f"{name}: p({p.label})"] = p.prob
    ctx.figure(out, key, F.stack(rows), photo=True, caption=caption)


def _sec_occlusion(ctx: TourContext, out: SectionOutput) -> None:
    window, stride = ctx.q(48, 32), ctx.q(16, 8)
    _explain(ctx, out, [("occlusion", {"window": window, "stride": stride})], photos=ctx.pair(),
             caption="Warm colours: occluding that region lowers the probability of the predicted class most.")
    out.params.update({"window": window, "stride": stride, "score": "probability"})


def _sec_saliency(ctx: TourContext, out: SectionOutput) -> None:
    samples, steps = ctx.q(8, 25), ctx.q(16, 50)
    _explain(ctx, out, [("gradient", {}), ("deconvnet", {}), ("guided", {}),
                        ("smoothgrad", {"samples": samples}),
                        ("integrated", {"steps": steps}), ("gradcam", {}), ("guided_gradcam", {})],
             caption=f"Why {ctx.model.name} says what it says: each method's map for the predicted class.")
    out.params.update({"image": ctx.main_name, "SmoothGrad samples": samples, "IG steps": steps})


def _sec_grabcut(ctx: TourContext, out: SectionOutput) -> None:
    from ..attribute import grabcut, saliency
    from .attribution import mask_figure

    rows = []
    for name in ctx.pair():
        x, p = ctx.pixels(name), ctx.predictions()[name][0]
        m = saliency(ctx.model, x, "gradcam", p.index)
        seg = grabcut(x, m)
        rows.append(mask_figure(x[0], m[0], seg.masks[0].numpy(), title_text=f"{name}: {p.label}"))
        out.numbers[f"{name}: mask area"] = float(seg.area[0])
    ctx.figure(out, "masks", F.stack(rows), photo=True, caption="Grad-CAM seeds GrabCut (sure foreground above its "
               "95th percentile, sure background below its 30th); GrabCut's colour models draw the outline.")
    out.params.update({"seed map": "Grad-CAM", "foreground quantile": 0.95, "background quantile": 0.3})


def _sec_slice(ctx: TourContext, out: SectionOutput) -> None:
    from ..read.dataset import Dataset
    from ..study import slice_accuracy
    from .study import attribute_figure, corruption_figure

    files = ctx.dataset_files()
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(len(files), ctx.q(24, 160))).round().astype(int)]
    known = ctx.cache.get("labels") or {}
    labelled = bool(files) and all(known.get(f.name) is not None for f in files)
    labels: list[str | int | None] = [known[f.name] for f in files] if labelled else [*ctx.own_answers(files)]
    ds = Dataset(files, labels)
    attrs = ["brightness", "contrast", "sharpness", "colourfulness"] if labelled else []
    r = slice_accuracy(ctx.model, ds, attributes=attrs, bins=3,
                       corruptions=["gaussian_noise", "gaussian_blur", "contrast", "occlusion"] if ctx.quick else
                       "default", severities=ctx.q((1, 3, 5), (1, 2, 3, 4, 5)), corruption_limit=ctx.q(16, 80),
                       seed=ctx.seed)
    if attrs:
        ctx.figure(out, "attributes", attribute_figure(r, columns=len(attrs)),
                   caption=f"Top-1 / top-5 accuracy per equal-count bin of each attribute on {len(files)} photos, "
                   "with 95% Wilson intervals.")
    ctx.figure(out, "corruptions", corruption_figure(r), caption=f"Accuracy against corruption severity on "
               f"{r.corruption_n} photos (0 = clean), scored against "
               + ("their labels." if labelled else "the network's own answer on the clean photo: these photos have "
                  "no labels, so accuracy by attribute needs --images DIR with a LABELS.csv."))
    out.params.update({"images": len(files), "labelled": labelled, "corruptions": [c.name for c in r.corruptions]})
    for c in r.corruptions:
        out.numbers[f"top-1 at {c.name} severity {c.severities[-1]}"] = c.top1[-1]


def _sec_human(ctx: TourContext, out: SectionOutput) -> None:
    preds = ctx.predictions(top=5)
    rows = [[n, PHOTO_TRUTH.get(n, ("-",))[0] if ctx.dataset is None else "-", ctx.verdict(n),
             ", ".join(f"{q.label} {q.prob:.2f}" for q in preds[n][:5])] for n in ctx.photos]
    out.tables.append(Table(["photo", "what it shows", "network's top 1",
                             "network's top 5 (what a person's five guesses are scored against)"], rows))
    folder = "DIR" if ctx.dataset is None else str(ctx.dataset[0].parent)
    out.params.update({"start the study": f"convlens human-study {folder} --model {ctx.model.name} "
                                          f"--out study/  (then open http://127.0.0.1:8765)",
                       "report": f"convlens human-study {folder} --model {ctx.model.name} --out study/ --report",
                       "server": "not started by the tour; local only (127.0.0.1) unless --allow-remote"})
    top5 = [v for n in ctx.photos if (v := ctx.verdict(n, top=5)) != "no class"]
    out.numbers["photos"] = len(rows)
    if top5:
        out.numbers["network top-5 right (photos with a class)"] = float(np.mean([not v.startswith("WRONG")
                                                                                  for v in top5]))


def _sec_visualize(ctx: TourContext, out: SectionOutput) -> None:
    from ..synthesize.visualize import visualize_class, visualize_unit

    classes = ctx.classes(ctx.q(3, 4))
    res = visualize_class(ctx.model, classes, preset="lucid", size=ctx.q(128, 224), steps=ctx.q(64, 192),
                          seed=ctx.seed)
    probs = ctx.probs_of_png(res.images)
    layer, chans = ctx.pick_layer(), list(range(ctx.q(4, 8)))
    ures = visualize_unit(ctx.model, layer, chans, size=ctx.q(96, 160), steps=ctx.q(48, 128), seed=ctx.seed)
    panels = [(F.to_rgb(im), f"{ctx.model.label(c)[:20]}\np={probs[i, c]:.2f}") for i, (c, im) in
              enumerate(zip(classes, res.images.detach().cpu()))]
    panels += [(F.to_rgb(im), f"{layer} ch {c}") for c, im in zip(chans, ures.images.detach().cpu())]
    ctx.figure(out, "classes", F.side_by_side(panels, caption_size=11), photo=True,
               caption="Left: images optimised to raise the score of the classes the model gives the tour's photos "
               "(Fourier parametrisation, random shift, scale and rotation), with the probability of the saved "
               "PNG; right: images that excite single channels of a middle layer.")
    out.params.update({"classes": ", ".join(ctx.model.label(c) for c in classes), "unit layer": layer})
    for i, c in enumerate(classes):
        out.numbers[f"p({ctx.model.label(c)}) of its own image"] = float(probs[i, c])


def _sec_multifaceted(ctx: TourContext, out: SectionOutput) -> None:
    from ..synthesize.visualize import multifaceted

    cls, members = ctx.largest_class()
    k = min(ctx.q(3, 4), len(members))
    res = multifaceted(ctx.model, cls, members, k=k, preset="yosinski", size=ctx.q(128, 192), steps=ctx.q(80, 200),
                       restarts=1, seed=ctx.seed)
    probs = ctx.probs_of_png(res.result.images)
    starts = [f"start: {min(n, 15)} of {n}" for n in res.sizes]
    img = F.side_by_side([F.grid([F.to_rgb(s) for s in res.starts], ncols=k, labels=starts),
                          F.grid([F.to_rgb(im) for im in res.result.images], ncols=k,
                                 labels=[f"facet {j}: p={probs[j, cls]:.2f}" for j in range(k)])])
    ctx.figure(out, "facets", img, photo=True,
               caption=f"'{ctx.model.label(cls)}', the class the model gives most of the {len(ctx.dataset_files())} "
               f"images ({len(members)} of them): clustered into {k} groups; the mean of the (up to 15) images nearest "
               "each group's centre, at one photo's contrast, starts one visualization, which decay and clipping keep "
               "near that start (Nguyen et al. 2016; Yosinski's regularisers). The facets differ by more than the loop's randomness when their feature distance is "
               "above that of a restart with another seed. " + ctx.dataset_note())
    out.params.update({"class": ctx.model.label(cls), "images of the class": len(members), "facets": k,
                       "layer": res.layer, "preset": "yosinski", "restarts per facet": 1})
    out.numbers["cluster sizes"] = ", ".join(map(str, res.sizes))
    if res.facet_distance is not None and res.restart_distance is not None:
        out.numbers["feature distance between facets"] = res.facet_distance
        out.numbers["feature distance to a restart (other seed)"] = res.restart_distance


def _sec_dream(ctx: TourContext, out: SectionOutput) -> None:
    from ..synthesize.dream import default_dream_layer, dream

    layer, kw = default_dream_layer(ctx.model), {"octaves": ctx.q(3, 4), "steps": ctx.q(8, 10),
                                                 "max_side": ctx.q(256, 512)}
    res = dream(ctx.model, ctx.photos[ctx.main_name], layer=layer, seed=ctx.seed, **kw)
    img = res.images[0].detach().cpu()
    ctx.figure(out, "dream", F.side_by_side([(F.fit(ctx.photos[ctx.main_name], max(img.shape[1:])), "photo"),
                                             (F.to_rgb(img), f"DeepDream at {layer}")]),
               photo=True, caption="Patterns that the layer detects are amplified wherever they faintly appear.")
    out.params.update({"layer": layer, **kw})
    out.numbers.update({"steps": res.steps, "seconds": res.seconds})


def _sec_invert(ctx: TourContext, out: SectionOutput) -> None:
    from ..synthesize.invert import default_invert_layers, invert
    from .synthesize import inversion_figure

    layers = default_invert_layers(ctx.model, ctx.q(3, 5))
    res = invert(ctx.model, ctx.pixels(), layers, steps=ctx.q(80, 200))
    for name in res.images:
        out.numbers[f"relative feature error at {name}"] = res.errors[name]
        out.numbers[f"relative feature error of a grey image at {name}"] = res.grey_errors[name]
        out.numbers[f"distance to the photo at {name}"] = res.pixel_errors[name]
    ctx.figure(out, "layers", inversion_figure(res), photo=True,
               caption="Images reconstructed from the photo's code at increasing depth, the class scores last, all with "
               "one optimiser and one prior (Mahendran & Vedaldi 2015).")
    out.params.update({"layers": ", ".join(res.images), "steps": ctx.q(80, 200)})


def _sec_texture(ctx: TourContext, out: SectionOutput) -> None:
    from ..synthesize.texture import layer_sweep, synthesize_texture
    from .style import texture_figure, texture_sweep_figure

    sample, side = ctx.texture_sample(), ctx.q(128, 256)
    res = synthesize_texture(ctx.model, sample, size=(side * 2, side * 2), steps=ctx.q(60, 300), sample_size=side,
                             seed=ctx.seed)
    ctx.figure(out, "brick", texture_figure(res), photo=True,
               caption="A texture twice the sample's size, grown from noise by matching Gram matrices and the "
               "sample's Fourier amplitude (Liu et al. 2016), which keeps the rows and mortar lines; coarse to "
               "fine (half size first), so brick faces form before the mortar is sharpened.")
    small = ctx.q(96, 160)
    sweep = layer_sweep(ctx.model, sample, size=(small, small), steps=ctx.q(30, 150), seed=ctx.seed,
                        sample_size=small)
    ctx.figure(out, "sweep", texture_sweep_figure(sweep), photo=True,
               caption="The layer sweep (Gatys et al. 2015, Fig. 2): the first layers alone give small structures; "
               "as deeper layers join, larger and more regular ones appear.")
    out.params.update({"layers": ", ".join(res.layers), "steps": res.steps, "sweep sets": len(sweep)})
    out.numbers.update({"style loss": res.style_loss, "sample's period (px)": res.regularity.sample.period,
                        "synthesis's period (px)": res.regularity.synthesis.period,
                        "regularity (1 = as regular as the sample)": res.regularity.score,
                        **{f"sweep style loss up to {r.layers[-1]}": r.style_loss
                                                         for r in sweep}})


def _sec_style(ctx: TourContext, out: SectionOutput) -> None:
    from ..images import to_pixels
    from ..synthesize.style import style_transfer
    from .style import style_figure

    sname, style = ctx.style_image()
    content = to_pixels(ctx.photos[ctx.main_name])[None]
    size, steps = ctx.q(160, 256), ctx.q(60, 300)
    res = style_transfer(ctx.model, content, [style], size=size, steps=steps, seed=ctx.seed)
    ctx.cache["style_seconds"] = res.seconds
    ctx.figure(out, "result", style_figure(content, [(style, sname)], res),
               photo=True, caption="The content photo repainted with the style image's Gram statistics (L-BFGS on "
               "the pixels). " + ctx.style_note())
    change = float((res.image.cpu() - F_interp(content, res.image)).abs().mean())
    out.params.update({"size": size, "steps": res.steps, "content layer": res.content_layer,
                       "style layers": ", ".join(res.style_layers), "style image": sname})
    out.numbers.update({"content loss": res.content_loss, "style loss": res.style_loss,
                        "mean pixel change from the photo": change, "seconds": res.seconds})


class _StyleKnobs(TypedDict, total=False):
    """The keyword arguments of :func:`convlens.synthesize.style.style_transfer` the knobs section varies."""

    styles: list[torch.Tensor]
    style_scale: float
    style_weights: list[float]
    original_colors: bool
    dream_weight: float


def _sec_style_knobs(ctx: TourContext, out: SectionOutput) -> None:
    from ..images import to_pixels
    from ..synthesize.style import style_transfer

    sname, style = ctx.style_image()
    second = ctx.texture_sample()
    content = to_pixels(ctx.photos[ctx.main_name])[None]
    size, steps = ctx.q(128, 256), ctx.q(40, 200)
    runs: list[tuple[str, _StyleKnobs]] = [
        ("default", {"styles": [style]}),
        ("style scale 0.5", {"styles": [style], "style_scale": 0.5}),
        ("style scale 2", {"styles": [style], "style_scale": 2.0}),
        ("dream 0.1", {"styles": [style], "dream_weight": 0.1}),
        (f"blend {sname} 0.5 + brick 0.5", {"styles": [style, second], "style_weights": [0.5, 0.5]}),
        ("original colours", {"styles": [style], "original_colors": True})]
    panels = [(F.fit(F.to_rgb(content[0]), size), "content")]
    base = None
    for label, kw in runs[: ctx.q(4, 6)]:
        r = style_transfer(ctx.model, content, size=size, steps=steps, seed=ctx.seed, **kw)
        panels.append((F.to_rgb(r.image[0]), label))
        out.numbers[f"{label}: style loss"] = r.style_loss
        if base is None:
            base = r.image
        else:
            out.numbers[f"{label}: mean pixel change from the default"] = float((r.image - base).abs().mean())
    ctx.figure(out, "knobs", F.side_by_side(panels, height=size, caption_size=11), photo=True,
               caption="The same optimisation with one knob changed: the style image's scale (bigger = larger "
               "strokes, painted at a coarse level first), a DeepDream term, two styles blended by weight, and "
               "luminance-only transfer that keeps the photo's colours.")
    out.params.update({"size": size, "steps": steps, "style": sname, "second style": "brick"})


def _sec_fast_style(ctx: TourContext, out: SectionOutput) -> None:
    from ..images import to_pixels
    from ..synthesize.fast_style import apply_fast_style, load_fast_style, pretrained_path

    net, config, _, _ = load_fast_style(pretrained_path())
    x = to_pixels(F.fit(ctx.photos[ctx.main_name], 512))[None]
    apply_fast_style(net, x[..., :64, :64])  # warm-up
    t0 = time.perf_counter()
    y = apply_fast_style(net, x)
    secs = time.perf_counter() - t0
    ctx.figure(out, "result", F.side_by_side([(F.to_rgb(x[0]), "photo"),
                                              (F.to_rgb(y[0]), f"one forward pass: {secs:.2f} s")]), photo=True,
               caption="The network that ships with convlens, trained for Van Gogh's Starry Night on the embedded "
               "model's perceptual losses (whatever model this tour explains), applied to a photo at 512 px.")
    out.params.update({"network": pretrained_path().name, "styles": ", ".join(map(str, config.styles)),
                       "image side": 512})
    out.numbers["seconds per image"] = secs
    if "style_seconds" in ctx.cache:
        out.numbers["speed-up over the optimisation above"] = ctx.cache["style_seconds"] / max(secs, 1e-6)


def _sec_fooling(ctx: TourContext, out: SectionOutput) -> None:
    from ..adversarial import fool
    from .adversarial import fooling_figure

    x = ctx.pixels()
    o = ctx.predictions()[ctx.main_name][0]
    target = next((c for c in ctx.classes(len(ctx.photos)) if c != o.index), (o.index + 1) % ctx.model.num_classes)
    res = fool(ctx.model, x, target, eps=8 / 255, max_steps=ctx.q(40, 100))
    t = res.target[0]
    ctx.figure(out, "fooled", fooling_figure(x[0], res.adversarial[0], original_label=o.label, original_prob=o.prob,
                                             target_label=t.label, target_prob=t.prob, linf=float(res.linf[0]),
                                             l2=float(res.l2[0]), steps=int(res.steps[0])), photo=True,
               caption=f"The photo, the change (magnified), and the changed photo, sent to '{t.label}' (the class "
               "of another tour photo)." + ("" if res.success[0] else " NOT fooled within the step budget."))
    out.params.update({"target": t.label, "eps": "8/255", "norm": "L-inf"})
    out.numbers.update({"success": bool(res.success[0]), "steps": int(res.steps[0]),
                        f"p({t.label}) after": t.prob})


def _sec_attacks(ctx: TourContext, out: SectionOutput) -> None:
    from ..adversarial import evaluate_attack
    from .adversarial import attack_examples

    x = ctx.model.load(ctx.originals())
    other = ctx.transfer_model()
    rows, shown = [], None
    for method in ("fgsm", "pgd"):
        rep = evaluate_attack(ctx.model, x, None, method=method, eps=4 / 255, steps=ctx.q(5, 10),
                              generator=ctx.generator(), transfer_to=other)
        tr = rep.transfer
        rows.append([method, rep.n, f"{rep.success_rate:.2f}" if rep.success_rate is not None else "-",
                     f"{rep.mean_linf * 255:.1f}/255", "-" if tr is None or tr.transfer_rate is None
                     else f"{tr.transfer_rate:.2f} on {tr.model}"])
        out.numbers[f"{method} success rate"] = rep.success_rate
        if tr is not None:
            out.numbers[f"{method} transfer rate to {tr.model}"] = tr.transfer_rate
        shown = rep
    assert shown is not None
    fooled = shown.fooled.nonzero().flatten()[:4]
    if fooled.numel():
        ctx.figure(out, "examples", attack_examples(x[fooled], shown.adversarial[fooled],
                                                    [ctx.model.label(int(shown.clean_pred[i])) for i in fooled],
                                                    [ctx.model.label(int(shown.adv_pred[i])) for i in fooled],
                                                    clean_probs=shown.clean_prob[fooled].tolist(),
                                                    adv_probs=shown.adv_prob[fooled].tolist()),
                   photo=True, caption="PGD examples that changed the model's answer: photo, change x10, result.")
    out.tables.append(Table(["attack", "images", "success rate", "mean L-inf", "transfer"], rows,
                            "untargeted, eps 4/255, against the model's own answers" + (
                                "" if other else "; no second network with the same classes to transfer to")))
    out.params.update({"eps": "4/255", "transfer to": other.name if other else None})


def _sec_universal(ctx: TourContext, out: SectionOutput) -> None:
    from ..adversarial import fooling_rate, universal_perturbation
    from .adversarial import universal_figure

    build, hold = ctx.split_files()
    x, xh = ctx.model.load(build), ctx.model.load(hold)
    eps = 10 / 255
    res = universal_perturbation(ctx.model, x, eps=eps, epochs=ctx.q(3, 10), batch_size=16, generator=ctx.generator())
    rate, clean, pert = fooling_rate(ctx.model, xh, res.perturbation)
    fooled = (clean != pert).nonzero().flatten()[:4]
    ctx.figure(out, "universal", universal_figure(res.perturbation, [(xh[i] + res.perturbation).clamp(0, 1)
                                                                     for i in fooled], eps=eps, fooling_rate=rate,
                                                  labels=[(ctx.model.label(int(clean[i])), ctx.model.label(int(pert[i])))
                                                          for i in fooled]), photo=True,
               caption=f"One pattern built on {len(build)} images, added to {len(hold)} held-out images of other "
               "photos (Moosavi-Dezfooli et al. 2017). " + ctx.dataset_note())
    out.params.update({"eps": "10/255", "construction images": len(build), "held-out images": len(hold)})
    out.numbers.update({"held-out fooling rate": rate, "construction fooling rate": res.train_fooling_rate})


def F_interp(content: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``content`` resized to ``like``'s size (to compare a stylised image with its photo)."""
    return torch.nn.functional.interpolate(content, size=like.shape[-2:], mode="bilinear", antialias=True,
                                           align_corners=False)


def _s(key: str, title: str, text: str, run: Callable[[TourContext, SectionOutput], None]) -> Section:
    return Section(key, title, text, run)


SECTIONS: tuple[Section, ...] = (
    _s("model", "The model", "Every layer of the network is addressable by its module name, with its output shape "
       "and the input window one of its units sees (its receptive field). The later sections read, probe and "
       "optimise through these layers.", _sec_model),
    _s("predictions", "Predictions on the photos", "The network maps each photo to class scores; the softmax turns "
       "them into probabilities. These are the decisions the rest of the report tries to explain, right or wrong.",
       _sec_predict),
    _s("weights", "Weights: first-layer filters", "The first convolution looks at raw pixels, so its filters can be "
       "drawn as small RGB images: they become oriented edge, colour and blob detectors. Deeper kernels see "
       "feature maps rather than colours, so they are far harder to read.", _sec_weights),
    _s("last-layer", "Last layer: nearest neighbours and t-SNE", "The penultimate layer turns each image into a "
       "code vector; images whose codes are close look alike to the network even when their pixels differ. t-SNE "
       "lays the codes out in 2-D so that neighbours stay neighbours.", _sec_neighbors),
    _s("pca", "Last layer: principal components", "Principal component analysis projects the same codes linearly "
       "onto their two directions of largest variance. It is faithful to large distances and blind to the local "
       "structure t-SNE shows.", _sec_pca),
    _s("activations", "Activations and top patches", "Each channel of a layer is a map of where its feature occurs "
       "in the image; many are silent on any one photo. Over a set of images, the patches that excite a channel "
       "most show what it responds to (Zeiler & Fergus 2014).", _sec_activations),
    _s("dead-units", "Dead units", "A rectified channel that never fires on any image carries no information. "
       "Counting them per layer over a dataset finds wasted capacity.", _sec_dead),
    _s("receptive-field", "Empirical receptive field", "A unit's theoretical receptive field is the whole window "
       "that can reach it, but only part of it matters. Occluding random patches and recording how much the unit "
       "changes measures the part that does (Zhou et al. 2015).", _sec_erf),
    _s("correspondence", "Correspondence", "Match each point of one photo to its nearest neighbour in a layer's "
       "feature space of another (Long, Zhang & Darrell 2014). On warped copies with known ground truth, mid-level "
       "layers are the ones that match, and they localise much finer than their receptive fields.", _sec_correspond),
    _s("directions", "Units or directions?", "Szegedy et al. (2014) found that the images that maximise a random "
       "direction of a layer's feature space look as coherent as those of a single unit. Here both come from one "
       "scan, with how alike the classes of their top images are.", _sec_directions),
    _s("occlusion", "Occlusion", "Slide a grey square over the image and record how the probability of the "
       "predicted class drops: the regions that matter most are where occluding hurts most (Zeiler & Fergus 2014). "
       "It needs only forward passes, so it works on any model.", _sec_occlusion),
    _s("saliency", "Saliency, DeconvNet and guided backprop", "The gradient of the class score with respect to the "
       "pixels says which pixels would change the score most (Simonyan et al. 2014). Changing the backward rule of "
       "the rectifiers gives DeconvNet (Zeiler & Fergus) and guided backprop (Springenberg et al. 2015).",
       _sec_saliency),
    _s("grabcut", "Segmentation from saliency (GrabCut)", "A saliency map marks where the evidence for a class is, "
       "but not the object's outline. Seeding GrabCut with its strongest and weakest pixels turns it into an "
       "object mask without any segmentation training (Simonyan et al. 2014).", _sec_grabcut),
    _s("slice", "Accuracy by image attribute and corruption", "Cutting a labelled set by image attributes shows "
       "which kinds of photos the network gets wrong (Russakovsky et al. 2015). Corrupting the photos at growing "
       "severity shows how fast it breaks (Hendrycks & Dietterich 2019).", _sec_slice),
    _s("human-study", "People against the network", "Karpathy (2014) labelled ImageNet photos himself to measure "
       "how far a person is from the network. convlens human-study serves that experiment locally and its report "
       "compares the answers with the network's top-5 shown here.", _sec_human),
    _s("visualize", "Class and unit visualization", "Gradient ascent on the pixels finds an image that maximises a "
       "class score or a unit's activation. Plain ascent gives adversarial noise; regularisers and transformation "
       "robustness make the result show the parts the network looks for.", _sec_visualize),
    _s("multifaceted", "Multifaceted visualization", "A class has several faces (a whole animal, a head, a group), "
       "and one visualization averages them. Clustering the class's images and starting one visualization from "
       "each cluster shows them separately (Nguyen, Yosinski & Clune 2016).", _sec_multifaceted),
    _s("dream", "DeepDream", "Instead of one class, amplify whatever a layer already sees: ascend the L2 norm of "
       "its activations, with jitter and several octaves (Mordvintsev et al. 2015). Patterns the layer detects "
       "grow out of the photo.", _sec_dream),
    _s("invert", "Feature inversion", "Given the code of an image at some layer, find an image whose code matches "
       "it, with an image prior (Mahendran & Vedaldi 2015). Shallow layers keep almost everything; deep layers "
       "keep what matters for the class and lose exact colour and position.", _sec_invert),
    _s("texture", "Texture synthesis", "The Gram matrices of a layer's features (which channels fire together) "
       "describe a texture without saying where anything is (Gatys et al. 2015). Matching them from noise "
       "synthesises new texture of any size; matching the sample's Fourier amplitude too (Liu et al. 2016) keeps "
       "the periods of a regular one, such as brick rows.", _sec_texture),
    _s("style", "Style transfer", "Match the deep features of a content photo and the Gram matrices of a painting "
       "at once, and the photo is repainted in the painting's style (Gatys et al. 2016). It is an optimisation per "
       "image, hence slow.", _sec_style),
    _s("style-knobs", "Style knobs and blending", "The style image's scale sets the size of the strokes, a "
       "DeepDream term adds what a deeper layer sees, and several styles can be blended by weight. Transferring "
       "only the luminance keeps the photo's colours.",
       _sec_style_knobs),
    _s("fast-style", "Fast style transfer", "Train a feed-forward network once to minimise the same perceptual "
       "losses over many photos (Johnson et al. 2016). Afterwards stylising is one forward pass, orders of "
       "magnitude faster than the optimisation.", _sec_fast_style),
    _s("fooling", "Fooling the network", "A tiny, carefully chosen change to the pixels, invisible to a person, "
       "makes the network predict a class we choose (Szegedy et al. 2014). The perturbation is shown magnified.",
       _sec_fooling),
    _s("attacks", "Adversarial attacks and transfer", "FGSM takes one step along the sign of the gradient "
       "(Goodfellow et al. 2015); PGD takes many, projected back into the allowed ball (Madry et al. 2018). "
       "Adversarial images made for one network often fool another.", _sec_attacks),
    _s("universal", "Universal perturbation", "One image-agnostic pattern, small enough to be barely visible, "
       "changes the answer on many photos it was never built on (Moosavi-Dezfooli et al. 2017). Its fooling rate "
       "is measured on held-out photos.", _sec_universal),
)


# --------------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------------
# The photos that ship with convlens' dependencies (scikit-image, scikit-learn, matplotlib): what each shows and
# words that a label naming it contains. An empty tuple: no class of a usual label set fits (a texture, a micrograph).
PHOTO_TRUTH: dict[str, tuple[str, tuple[str, ...]]] = {
    "chelsea": ("a tabby cat", ("cat", "tabby", "lynx")),
    "coffee": ("a cup of coffee", ("espresso", "cup", "coffee", "mug")),
    "rocket": ("a rocket on its launch pad", ("missile", "projectile", "space shuttle", "rocket")),
    "motorcycle": ("a motorcycle", ("moped", "motor scooter", "motorcycle", "crash helmet")),
    "grace_hopper": ("Grace Hopper in navy uniform", ("military uniform", "suit", "windsor tie", "bow tie")),
    "china": ("a Chinese temple", ("palace", "monastery", "pagoda", "temple", "stupa", "church", "dome")),
    "flower": ("a flower", ("daisy", "flower", "bee", "hip")),
    "astronaut": ("an astronaut in a space suit", ()),
    "camera": ("a cameraman with a tripod (grey)", ("tripod", "camera")),
    "clock": ("a clock (grey)", ("clock", "stopwatch")),
    "coins": ("old coins (grey)", ()),
    "brick": ("a brick wall (texture)", ("wall",)),
    "gravel": ("gravel (texture)", ()),
    "grass": ("grass (texture)", ()),
    "moon": ("the moon's surface (grey)", ()),
    "hubble_deep_field": ("galaxies (Hubble)", ()),
    "immunohistochemistry": ("a stained tissue micrograph", ()),
    "retina": ("a retina photograph", ()),
}
_SOURCES = {"motorcycle": ("skimage", "motorcycle_left"), "grace_hopper": ("matplotlib", "grace_hopper.jpg"),
            "china": ("sklearn", "china.jpg"), "flower": ("sklearn", "flower.jpg")}
TOUR_PHOTOS = tuple(PHOTO_TRUTH)


def shipped_photo(name: str) -> Image.Image:
    """One of :data:`TOUR_PHOTOS`, read from the dependency that ships it."""
    lib, item = _SOURCES.get(name, ("skimage", name))
    if lib == "matplotlib":
        import matplotlib

        return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / item).convert("RGB")
    if lib == "sklearn":
        import sklearn.datasets

        return Image.open(Path(sklearn.datasets.__file__).parent / "images" / item).convert("RGB")
    if name == item:
        return demo_images([name])[name]
    from skimage import data

    return Image.open(Path(data.data_dir) / f"{item}.png").convert("RGB")


def tour_images(folder: str | Path | None = None, *, limit: int = 24) -> tuple[dict[str, Image.Image], list[Path] | None]:
    """The tour's photos: the first ``limit`` images of ``folder``, or the photos that ship with convlens'
    dependencies (:data:`TOUR_PHOTOS`). Returns ``(photos by name, all files of the folder or None)``."""
    if folder is None:
        return {n: shipped_photo(n) for n in TOUR_PHOTOS}, None
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
    """Each photo plus ``per_photo`` random crops (60-90% of the side, some mirrored), as ``(source, image)``."""
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
             only: Sequence[str] | None = None, style: str | Path | None = None, transfer_to: Model | None = None,
             progress: Callable[[int, int, SectionResult], None] | None = None) -> TourReport:
    """Run every section of the lecture on ``model`` and write the static report ``out/index.html``.

    Args:
        model: the network to explain.
        out: folder for ``index.html`` and its pictures (``img/``).
        images: a folder of the user's photos (default: the photos that ship with convlens' dependencies; the
            dataset sections then use those photos plus random crops of each).
        quick: the quick profile (small sizes, few steps; minutes on a laptop CPU) or the full one.
        seed: seeds every random choice, so the same seed gives the same report.
        only: run just these section keys (the others are listed as skipped).
        style: a painting for the style-transfer sections (default: the shipped Starry Night network's rendering
            of a photo, since no painting ships).
        transfer_to: the second network of the attacks section (default: another embedded network with the same
            classes, if there is one).
        progress: called as ``progress(i, n, result)`` before (status ``pending``) and after each section.

    Returns:
        A :class:`TourReport`; each section's status is ``ok``, ``failed`` (with the error shown in the page) or
        ``skipped``.
    """
    started = time.perf_counter()
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    photos, files = tour_images(images)
    work = Path(tempfile.mkdtemp(prefix="convlens-tour-"))
    ctx = TourContext(model, photos, out, quick=quick, seed=seed, dataset=files, work=work, style=style,
                      transfer_to=transfer_to)
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
