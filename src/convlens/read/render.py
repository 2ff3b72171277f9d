"""Pictures of what the read functions return (no computing here: every function takes a finished result)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..images import load_image
from ..show.figures import (
    bar_chart,
    caption,
    colorize,
    draw_box,
    fit,
    font,
    grid,
    heatmap_overlay,
    scatter,
    side_by_side,
    stack,
    tile,
    title,
    to_rgb,
)
from .activations import ActivationMaps
from .embedding import Embedding
from .neighbors import Neighbors
from .patches import FALLBACKS, TopPatches
from .receptive_field import EmpiricalRF
from .reducers import DeadCount
from .weights import Filters

__all__ = [
    "activations_figure",
    "dead_units_figure",
    "embedding_grid",
    "embedding_scatter",
    "filters_figure",
    "neighbors_figure",
    "receptive_field_figure",
    "templates_figure",
    "top_patches_figure",
]


def filters_figure(filters: Filters, *, scaling: str = "filter", max_out: int = 64, max_in: int = 16,
                   tile_px: int = 48) -> Image.Image:
    """First-layer filters as colour tiles; deeper kernels as an out x in grid of grayscale tiles.

    ``scaling``: ``filter`` scales each tile on its own, ``global`` uses one scale for all (zero is mid-gray
    for both), so weak filters look weak.
    """
    w = filters.weight
    gmax = float(w.abs().max())
    vmax = None if scaling == "filter" else gmax
    if filters.kind == "rgb":
        tiles = [tile(f, size=tile_px, mode="symmetric", vmax=vmax) for f in w[:max_out]]
        img = grid(tiles, ncols=min(16, math.ceil(math.sqrt(len(tiles)) * 1.4)), pad=2, background=(40, 40, 40))
        head = f"{filters.layer}: {min(len(w), max_out)} of {w.shape[0]} filters, {w.shape[-2]}x{w.shape[-1]}x3"
    elif filters.kind == "depthwise":
        tiles = [tile(f[0], size=tile_px, mode="symmetric", vmax=vmax) for f in w[:max_out]]
        img = grid(tiles, ncols=min(16, math.ceil(math.sqrt(len(tiles)))), pad=2, background=(40, 40, 40))
        head = f"{filters.layer}: depthwise, one {w.shape[-2]}x{w.shape[-1]} kernel per channel " \
               f"({min(len(w), max_out)} of {w.shape[0]})"
    else:
        o, i = min(w.shape[0], max_out), min(w.shape[1], max_in)
        # "filter" scaling shares one scale across an output filter's kernels, so 1x1 kernels stay comparable
        tiles = [tile(w[a, b], size=max(12, tile_px // 2), mode="symmetric",
                      vmax=vmax if vmax is not None else float(w[a].abs().max()))
                 for a in range(o) for b in range(i)]
        img = grid(tiles, ncols=i, pad=1, background=(40, 40, 40))
        head = f"{filters.layer}: {o} outputs (rows) x {i} inputs (columns) of {w.shape[0]}x{w.shape[1]} kernels " \
               f"{w.shape[-2]}x{w.shape[-1]}"
    scale_note = ("each filter scaled on its own" if scaling == "filter" else f"one scale, |w| <= {gmax:.3g}")
    return caption(title(img, head, size=14), f"gray = 0, {scale_note}", size=11)


def templates_figure(templates: torch.Tensor, labels: Sequence[str] | None = None, *, tile_px: int = 64
                     ) -> Image.Image:
    """Rows of a linear classifier reshaped to images, one tile per class, labelled."""
    tiles = [tile(t, size=tile_px, mode="minmax") for t in templates]
    return grid(tiles, ncols=min(10, len(tiles)), labels=list(labels) if labels else None, label_size=11)


def activations_figure(acts: ActivationMaps, *, max_channels: int = 256, tile_px: int = 56,
                       input_px: int = 224) -> Image.Image:
    """The input beside a grid of every channel's map (numbered, shared-nothing scaling, dead maps framed red)."""
    maps = acts.maps[:max_channels]
    dead = acts.dead[:max_channels]
    tiles = [tile(m, size=tile_px, mode="minmax") for m in maps]
    ncols = min(32, math.ceil(math.sqrt(len(tiles) * 1.6)))
    g = grid(tiles, ncols=ncols, labels=[str(c) for c in range(len(tiles))], label_size=9, marks=list(dead))
    h, w = acts.maps.shape[-2:]
    note = (f"{acts.layer}: {acts.channels} channels of {h}x{w}"
            + (f" (first {max_channels})" if acts.channels > max_channels else "")
            + (f"; {int(dead.sum())} all-zero (red frame)" if acts.rectified else
               f"; linear (not rectified) layer: {int(acts.nonpositive[:max_channels].sum())} maps nowhere "
               "positive, which is not 'dead' here")
            + "; each map scaled to its own max")
    inp = fit(to_rgb(acts.pixels), input_px)
    return side_by_side([(inp, "input"), (g, note)], caption_size=12)


def _thumb(path: Path, size: int, crop: Any = None) -> Image.Image:
    img = load_image(path, draft=(size * 2, size * 2))
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS)


def neighbors_figure(result: Neighbors, *, size: int = 96, max_queries: int = 6,
                     names: dict[str, str] | None = None) -> Image.Image:
    """One row per query: the query, its feature-space neighbours, then its pixel-space neighbours."""
    k = result.feature_index.shape[1]
    rows = []
    for q in range(min(len(result.queries), max_queries)):
        def named(p: Path) -> str:
            return (names or {}).get(Path(p).name, Path(p).stem.split("_", 1)[-1])[:14]
        query = caption(_thumb(result.queries[q], size), "query: " + named(result.queries[q]), size=10)
        feat = grid([_thumb(result.files[i], size) for i in result.feature_index[q]], ncols=k,
                    labels=[named(result.files[i]) for i in result.feature_index[q]], label_size=9)
        pix = grid([_thumb(result.files[i], size) for i in result.pixel_index[q]], ncols=k,
                   labels=[named(result.files[i]) for i in result.pixel_index[q]], label_size=9)
        rows.append(side_by_side([(query, ""), (feat, f"feature space ({result.layer})" if q == 0 else ""),
                                  (pix, "pixel space (L2 on 32x32 thumbnails)" if q == 0 else "")], pad=6))
    return stack(rows, pad=2)


def embedding_scatter(emb: Embedding, labels: Sequence[Any] | None = None, *, legend: dict | None = None,
                      title_text: str | None = None) -> Image.Image:
    """The 2-D points, coloured by label when labels exist."""
    tw = f", trustworthiness {emb.trustworthiness:.3f}" if emb.trustworthiness is not None else ""
    name = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}.get(emb.method, emb.method)
    many = labels is not None and len(set(labels)) > 20
    colour = " (colour: label" + (", a hue per class index" if many else "") + ")" if labels is not None else ""
    return scatter(emb.xy, labels, legend=legend, size=10,
                   title_text=title_text or f"{name} of {len(emb.xy)} CNN codes{tw}{colour}")


def embedding_grid(files: Sequence[Path], cells: np.ndarray, side: int, *, cell_px: int = 48) -> Image.Image:
    """The mosaic: each grid cell shows the image assigned to it (empty cells stay white)."""
    canvas = Image.new("RGB", (side * cell_px, side * cell_px), (255, 255, 255))
    for f, c in zip(files, cells):
        if c < 0:
            continue
        r, col = divmod(int(c), side)
        canvas.paste(_thumb(Path(f), cell_px), (col * cell_px, r * cell_px))
    return canvas


def _pad_tile(piece: Image.Image, cw: int, ch: int, off: tuple[int, int], px: int) -> Image.Image:
    """``piece`` pasted at ``off`` on a grey ``cw x ch`` canvas (a clipped crop keeps its unit centred), to px."""
    if cw <= 2048 and ch <= 2048:
        canvas = Image.new("RGB", (cw, ch), (128, 128, 128))
        canvas.paste(piece, off)
    else:
        canvas = piece
    return canvas.resize((px, px), Image.Resampling.LANCZOS if max(cw, ch) > px else Image.Resampling.NEAREST)


def top_patches_figure(tp: TopPatches, *, patch_px: int = 64, guided: Sequence[Sequence[Image.Image]] | None = None
                       ) -> Image.Image:
    """One row per channel: its top patches (clipped patches padded gray, red corner mark).

    Receptive-field crops (``tp.crop == "rf"``) share one scale. Effective-field crops (``"erf"``) are each scaled
    to the tile and labelled with their side; they lie inside the theoretical receptive field, whose size the title
    gives. Guided tiles are padded like their patches, so both show the same pixels."""
    side_h, side_w = int(tp.rf_size[0]), int(tp.rf_size[1])
    erf = tp.crop == "erf"
    rows = []
    sides: list[int] = []
    for r, (c, patches) in enumerate(zip(tp.channels, tp.patches)):
        tiles = []
        for j, p in enumerate(patches):
            fx0, fy0, fx1, fy1 = p.full
            ch, cw = (fy1 - fy0, fx1 - fx0) if erf else (side_h, side_w)
            sides.append(max(ch, cw))
            off = (p.box[0] - fx0, p.box[1] - fy0)
            t = _pad_tile(to_rgb(p.pixels), cw, ch, off, patch_px)
            if p.clipped:
                ImageDraw.Draw(t).polygon([(patch_px - 12, 0), (patch_px, 0), (patch_px, 12)], fill=(220, 40, 40))
            tiles.append(t)
            if guided is not None:
                gi = guided[r][j]
                tiles.append(_pad_tile(gi, cw, ch, off, patch_px) if gi.size == p.pixels.shape[:0:-1] else gi.resize((patch_px, patch_px)))
        tied = tp.ties[r] if r < len(tp.ties) else 0

        def label(p, tied: int = tied) -> str:
            s = f"{p.value:.2f}" + (f" m{p.mean:.2f}" if tied and p.mean is not None else "")
            return s + (f" {p.full[2] - p.full[0]}px" if erf else "")
        labels = [label(p) if i == 0 else ("guided" if p.fallback is None else f"0 ({p.fallback})")
                  for p in patches for i in range(2 if guided is not None else 1)]
        g = grid(tiles, ncols=len(tiles), labels=labels, label_size=9, pad=2)
        lab = Image.new("RGB", (46, g.height), (255, 255, 255))
        ImageDraw.Draw(lab).text((4, g.height // 2 - 8), f"ch {c}", fill=(0, 0, 0), font=font(11, True))
        if patches and all(p.fallback == "resting" for p in patches):
            ImageDraw.Draw(lab).text((4, g.height // 2 + 6), "at rest", fill=(200, 30, 30), font=font(9))
        rows.append(side_by_side([lab, g], pad=0))
    body = stack(rows, pad=1)
    n = max(len(p) for p in tp.patches)
    if erf:
        ih = max(tp.input_size) if tp.input_size else 0
        whole = f" (at least the {ih}px input: the whole photo)" if min(side_h, side_w) >= ih > 0 else ""
        head = (f"{tp.layer}: top {n} patches per channel, each cropped to the square around its unit holding "
                f"{100 * (tp.mass or 0.9):.0f}% of its guided-backprop mass ({min(sides or [0])}-{max(sides or [0])} "
                f"px, labelled)\ntheoretical receptive field {side_h}x{side_w} px{whole} "
                f"(red corner: clipped at the border, padded grey)")
    else:
        head = (f"{tp.layer}: top {n} patches per channel, "
                f"cropped to the {side_h}x{side_w} receptive field (red corner: clipped at the border)")
    if any(tp.ties):
        head += (f"\n{sum(tp.ties)} patches share their maximum with another (a unit clipped at its ceiling, or at "
                 f"rest): equal maxima ranked by the {tp.secondary} ('m' value)")
    for why, text in FALLBACKS.items():
        n_fb = sum(p.fallback == why for ps in tp.patches for p in ps)
        if n_fb:
            head += f"\n{n_fb} guided maps are zero, crops = theoretical field ('0 ({why})'): {text}"
    if guided is not None:
        head += "\nguided backprop: signed, grey = 0, 99th percentile of |g| = full contrast"
    return title(body, head, size=13)


def receptive_field_figure(erf: EmpiricalRF, images: torch.Tensor, *, px: int = 200, show: int = 4) -> Image.Image:
    """Left: the averaged, unit-centred discrepancy map with the theoretical window drawn; right: a few images
    with their own discrepancy map over them and the unit's theoretical window."""
    side = erf.map.shape[0]
    heat = colorize(erf.map, "inferno").resize((px, px), Image.Resampling.NEAREST)
    s = px / side
    c = side / 2
    th = erf.theoretical
    heat = draw_box(heat, [(c - th / 2) * s, (c - th / 2) * s, (c + th / 2) * s, (c + th / 2) * s],
                    color=(80, 200, 255), width=2)
    em = erf.empirical
    py, px_ = c + erf.peak[0], c + erf.peak[1]
    heat = draw_box(heat, [(px_ - em / 2) * s, (py - em / 2) * s, (px_ + em / 2) * s, (py + em / 2) * s],
                    color=(255, 255, 255), width=1, dashed=True)
    panels: list[tuple[Image.Image, str]] = [
        (heat, f"mean of {len(erf.maps)} maps: empirical ~{em:.0f}px (dashed) vs theoretical {th:.0f}px (blue)")]
    for i in range(min(show, len(erf.maps))):
        over = heatmap_overlay(images[i], erf.maps[i], alpha=0.55, cmap="inferno")
        panels.append((fit(over, px), f"image {i + 1}, unit {erf.units[i]}"))
    return side_by_side(panels, caption_size=11,
                        title_text=f"empirical receptive field of {erf.layer} channel {erf.channel} "
                                   f"(Zhou et al. 2015; {erf.occluder}px random occluder, stride {erf.stride})")


def dead_units_figure(dead: dict[str, DeadCount]) -> Image.Image:
    """A bar chart of the fraction of never-firing channels per layer."""
    names = list(dead)
    values = [dead[n].fraction for n in names]
    n_img = max((d.images for d in dead.values()), default=0)
    return bar_chart([100 * v for v in values], names, ylabel="% of the layer's channels",
                     texts=[f"{len(dead[n].dead)} of {dead[n].channels}" for n in names],
                     title_text=f"channels that never fire on any of {n_img} images")
