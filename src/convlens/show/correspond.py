"""Pictures of correspondence (Long, Zhang & Darrell 2014) and of units vs directions (Szegedy et al. 2014).

- :func:`matches_figure` / :func:`correspondence_figure`: two photos side by side with a line from every query
  point to its match (mutual matches only when the filter is on); coloured by query position, or green / red
  for right / wrong when the true positions are known.
- :func:`pck_figure`: PCK per warp, one bar per layer beside SIFT and pixels, one panel per alpha.
- :func:`localisation_figure`: each layer's median localisation error against its receptive-field size.
- :func:`warp_example_figure`: the study's first photo and one warped copy, matches of a few methods.
- :func:`directions_figure`: rows of top patches along units, random and principal directions.

Nothing here computes; every function draws a result that was already computed.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..read.correspond import Correspondence, WarpStudy
from ..read.directions import DirectionTop
from ..read.patches import TopPatches
from .figures import caption, figure_to_image, font, grid, side_by_side, stack, title, to_rgb

__all__ = ["correspondence_figure", "directions_figure", "localisation_figure", "matches_figure", "pck_figure",
           "warp_example_figure"]

GOOD, BAD = (40, 200, 60), (230, 40, 40)


def _hue(i: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i / max(1, n)) * 0.85, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def matches_figure(a: torch.Tensor, b: torch.Tensor, points_a: np.ndarray, points_b: np.ndarray, *,
                   keep: np.ndarray | None = None, truth: np.ndarray | None = None, within: float | None = None,
                   px: int = 300, gap: int = 16, label: str = "") -> Image.Image:
    """Photo ``a`` (left) and ``b`` (right), ``px`` pixels high, with a line from each kept query point of ``a``
    to its match in ``b``. With ``truth`` (true positions in ``b``) and ``within`` (pixels), lines are green when
    the match is within that distance of the truth, red otherwise; without, each query has its own hue."""
    h, w = a.shape[1:]
    s = px / h
    left, right = to_rgb(a).resize((round(w * s), px), Image.Resampling.LANCZOS), \
        to_rgb(b).resize((round(w * s), px), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (left.width * 2 + gap, px), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    draw = ImageDraw.Draw(canvas)
    n = len(points_a)
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    off = left.width + gap
    for i in range(n):
        if not keep[i]:
            continue
        if truth is not None and within is not None:
            ok = np.linalg.norm(points_b[i] - truth[i]) <= within
            colour = GOOD if ok else BAD
        else:
            colour = _hue(i, n)
        (xa, ya), (xb, yb) = points_a[i] * s, points_b[i] * s
        draw.line([(xa, ya), (xb + off, yb)], fill=colour, width=1)
        for cx, cy in ((xa, ya), (xb + off, yb)):
            draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=colour, outline=(0, 0, 0))
    return caption(canvas, label, size=12) if label else canvas


def correspondence_figure(corr: Correspondence, *, px: int = 300, rf: dict[str, tuple[float, float]] | None = None
                          ) -> Image.Image:
    """One row per method of :func:`matches_figure`, labelled with the layer's receptive field and how many
    matches the mutual filter kept."""
    rows = []
    for name, m in corr.matches.items():
        geo = f" (receptive field {rf[name][0]:g} px, stride {rf[name][1]:g})" if rf and name in rf else ""
        kept = (f"{int(m.mutual.sum())} of {len(m.mutual)} matches are mutual nearest neighbours (tolerance "
                f"{corr.tol[name]:g} px), drawn" if corr.mutual_filter else f"all {len(m.mutual)} matches drawn")
        rows.append(matches_figure(corr.a, corr.b, m.points_a, m.points_b,
                                   keep=m.mutual if corr.mutual_filter else None, px=px,
                                   label=f"{name}{geo}: {kept}; colour = query position"))
    return title(stack(rows, pad=6), "Nearest-neighbour correspondence, left photo -> right photo", size=14)


def _colours(methods: Sequence[str], layers: Sequence[str]) -> list[str]:
    import matplotlib

    blues = matplotlib.colormaps["viridis"]
    out = []
    for m in methods:
        if m == "sift":
            out.append("#e07020")
        elif m == "pixels":
            out.append("#888888")
        else:
            i = list(layers).index(m)
            out.append(matplotlib.colors.to_hex(blues(0.15 + 0.75 * i / max(1, len(layers) - 1))))
    return out


def pck_figure(study: WarpStudy, *, alphas: Sequence[float] | None = None, dpi: int = 100) -> Image.Image:
    """Grouped bars: for every warp, PCK@alpha of each layer (shallow to deep), SIFT (orange) and pixels (grey)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    alphas = list(alphas or study.alphas)
    fig, axes = plt.subplots(len(alphas), 1, figsize=(max(8, 1.3 * len(study.warps) + 2), 2.6 * len(alphas)),
                             squeeze=False)
    cols = _colours(study.methods, study.layers)
    nm = len(study.methods)
    width = 0.8 / nm
    x = np.arange(len(study.warps))
    for ax, a in zip(axes[:, 0], alphas):
        for j, m in enumerate(study.methods):
            ax.bar(x + (j - (nm - 1) / 2) * width, [study.pck[m][w][a] for w in study.warps], width, color=cols[j],
                   label=m)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"PCK@{a:g}")
        ax.set_xticks(x, study.warps, fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(ncol=min(nm, 7), fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02), frameon=False)
    fig.suptitle(f"Correspondence on known warps: fraction of points within alpha x {max(study.size)} px "
                 f"({len(study.photos)} photos)", fontsize=10, y=1.0 + 0.02 * (3 - len(alphas)))
    fig.tight_layout()
    return figure_to_image(fig, dpi)


def localisation_figure(study: WarpStudy, *, dpi: int = 100) -> Image.Image:
    """Median localisation error of the correct matches (within 0.1 x side) against receptive-field size,
    per layer (clipped to the image side), with the lines error = RF size and error = RF size / 10."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = {r["method"]: r for r in study.localisation()}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cols = dict(zip(study.methods, _colours(study.methods, study.layers)))
    xs = [float(rows[m]["rf_size"]) for m in study.methods]
    lo, hi = max(1.0, min(xs) / 1.5), max(xs) * 1.5
    line = np.geomspace(lo, hi, 20)
    ax.plot(line, line, ":", color="#999", label="error = receptive field")
    ax.plot(line, line / 10, "--", color="#bbb", label="error = receptive field / 10")
    for m in study.methods:
        r = rows[m]
        marker = "s" if m in ("sift", "pixels") else "o"
        ax.scatter([r["rf_size"]], [r["median_error_inliers"]], color=cols[m], marker=marker, s=50, zorder=3)
        stride = f", stride {r['stride']:g}" if m in study.layers else " (descriptor size)"
        ax.annotate(f"{m}{stride}", (float(r["rf_size"]), float(r["median_error_inliers"])), fontsize=7,
                    xytext=(5, 3), textcoords="offset points")
    ax.axvline(max(study.size), color="#ddd", lw=1)
    ax.text(max(study.size), ax.get_ylim()[0] if ax.get_ylim()[0] > 0 else 0.3, " image side", fontsize=7,
            color="#999", rotation=90, va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("receptive field (px, from the layer index)")
    ax.set_ylabel("median error of correct matches (px)")
    ax.set_title("Features localise much finer than their receptive fields", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_image(fig, dpi)


def warp_example_figure(study: WarpStudy, warp: str, methods: Sequence[str], *, alpha: float = 0.05,
                        px: int = 260) -> Image.Image:
    """The study's first photo and its ``warp`` copy: one row of matches per method, green when within
    ``alpha * side`` of the true position, red otherwise."""
    ex = study.example
    w = ex["warps"][warp]
    within = alpha * max(study.size)
    q = ex["query"][w["inside"]]
    rows = []
    for m in methods:
        pred = w["pred"][m]
        ok = float((np.linalg.norm(pred - w["gt"][w["inside"]], axis=1) <= within).mean())
        rows.append(matches_figure(ex["a"], w["b"], q, pred, truth=w["gt"][w["inside"]], within=within, px=px,
                                   label=f"{m}: {ok:.0%} of {len(q)} points within {within:.1f} px "
                                         f"(green) on this photo"))
    return title(stack(rows, pad=6), f"{ex['photo'].name}: {warp}, true positions known", size=13)


def _patch_tile(p: object, side_h: int, side_w: int, px: int) -> Image.Image:
    canvas = Image.new("RGB", (min(side_w, 4096), min(side_h, 4096)), (128, 128, 128))
    x0, y0, _, _ = p.box  # type: ignore[attr-defined]
    piece = to_rgb(p.pixels)  # type: ignore[attr-defined]
    if side_w <= 4096 and side_h <= 4096:
        canvas.paste(piece, (x0 - p.full[0], y0 - p.full[1]))  # type: ignore[attr-defined]
    else:
        canvas = piece
    return canvas.resize((px, px), Image.Resampling.LANCZOS if side_w > px else Image.Resampling.NEAREST)


def directions_figure(dt: DirectionTop, tp: TopPatches, *, px: int = 56, names: dict[str, str] | None = None
                      ) -> Image.Image:
    """Blocks of rows -- single units, random directions, principal directions -- each row the top patches of
    one direction cropped to the receptive field, labelled with its class-coherence numbers when known."""
    ds = dt.directions
    side_h, side_w = int(tp.rf_size[0]), int(tp.rf_size[1])
    coh = dt.coherence
    blocks = []
    for kind in dict.fromkeys(ds.kind):
        rows = []
        for i in ds.rows(kind):
            patches = tp.patches[i]
            if not patches:
                continue
            tiles = [_patch_tile(p, side_h, side_w, px) for p in patches]
            labels = [(names or {}).get(p.file.name, p.file.stem.split("_", 1)[-1])[:12] for p in patches]
            g = grid(tiles, ncols=len(tiles), labels=labels, label_size=8, pad=2)
            text = ds.label(i)
            if coh is not None:
                text += f"\nsim {coh.similarity[i]:.2f}" + (" (flat)" if coh.flat[i] else "")
            lab = Image.new("RGB", (92, g.height), (255, 255, 255))
            ImageDraw.Draw(lab).multiline_text((4, max(0, g.height // 2 - 14)), text, fill=(0, 0, 0), font=font(10))
            rows.append(side_by_side([lab, g], pad=0))
        if not rows:
            continue
        head = {"unit": "single units", "random": "random directions", "pca": "principal directions"}[kind]
        if coh is not None:
            s = coh.summary(ds.rows(kind))
            head += (f": top-{coh.k} pairs of the same or a neighbouring class {s['near_class']:.1%} (chance "
                     f"{coh.chance_near_class[0]:.1%}), classifier-space similarity {s['similarity']:.3f} (chance "
                     f"{coh.chance_similarity[0]:.3f})")
        blocks.append(caption(stack(rows, pad=1), head, size=12, above=True, bold=True))
    return title(stack(blocks, pad=6), f"{ds.layer}: top images along units and directions, one scan "
                 f"(receptive field {side_h} px)", size=13)
