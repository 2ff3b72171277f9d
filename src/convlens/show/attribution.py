"""Pictures of saliency results: map panels, side-by-side method figures, masks and faithfulness curves.

Everything here turns already computed maps into ``PIL.Image`` objects; nothing runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .figures import ArrayLike, colorize, figure_to_image, heatmap_overlay, side_by_side, to_rgb

if TYPE_CHECKING:
    from ..attribute.explain import Explanation

__all__ = ["OVERLAY_METHODS", "map_panel", "saliency_figure", "mask_figure", "curves_figure", "sanity_figure",
           "sanity_maps_figure"]

OVERLAY_METHODS: tuple[str, ...] = ("gradcam", "occlusion", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam",
                                    "ablationcam", "eigencam")
LABELS = {"gradient": "gradient (Simonyan)", "deconvnet": "DeconvNet", "guided": "guided backprop",
          "smoothgrad": "SmoothGrad", "integrated": "integrated gradients", "gradcam": "Grad-CAM",
          "guided_gradcam": "guided Grad-CAM", "occlusion": "occlusion", "random": "random", "edge": "edge",
          "gradcampp": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM", "layercam": "LayerCAM",
          "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM", "eigencam": "Eigen-CAM"}


def _clip(m: np.ndarray, q: float = 99.5) -> np.ndarray:
    hi = float(np.percentile(m, q))
    lo = float(m.min())
    return np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)


def map_panel(image: ArrayLike, saliency: ArrayLike, method: str, raw: torch.Tensor | None = None, *,
              colorbar: bool = True) -> Image.Image:
    """One method's panel: coarse maps (Grad-CAM, occlusion) over the photo; pixel maps on their own --
    the raw ``3 x H x W`` attribution as colour when given (the DeconvNet / guided backprop look, scaled by the
    shared :func:`~convlens.show.figures.display_signed`), else the map in gray, clipped at its 99.5th percentile
    so a few extreme pixels do not hide the rest. Every heat map gets a colour bar in its units (:data:`UNITS`:
    probability drop, gradient magnitude, class score), so a 0.09 drop is not painted like a collapse."""
    m = saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if method in OVERLAY_METHODS:
        m = np.clip(m, 0, None)
        if not colorbar:
            return heatmap_overlay(image, m, alpha=0.5, cmap="jet")
        photo = to_rgb(image)
        return overlay_with_colorbar(photo, m, (0, 0, photo.width, photo.height), method=method)
    if raw is not None:
        from .figures import display_signed

        return to_rgb(display_signed(raw))  # the one guided / DeconvNet display scaling
    panel = to_rgb(_clip(m))
    if not colorbar:
        return panel
    lo, hi = float(m.min()), float(np.percentile(m, 99.5))
    if hi <= lo:
        hi = _flat(m, lo)
    bar = _colorbar(panel.height, lo, hi, UNITS.get(method, method), "gray")
    out = Image.new("RGB", (panel.width + bar.width, panel.height), (255, 255, 255))
    out.paste(panel, (0, 0))
    out.paste(bar, (panel.width, 0))
    return out


def saliency_figure(image: ArrayLike, panels: Sequence[tuple[str, ArrayLike, torch.Tensor | None]], *,
                    title_text: str | None = None, height: int = 224) -> Image.Image:
    """The photo followed by one panel per ``(method, map, raw-or-None)``, captions underneath."""
    items: list[tuple[ArrayLike, str]] = [(to_rgb(image), "input")]
    for method, m, raw in panels:
        label = LABELS.get(method, method) + (" (signed, grey = 0; 99th pct of |g| at full colour)"
                                              if raw is not None else "")
        items.append((map_panel(image, m, method, raw), label))
    fig = side_by_side(items, height=height, title_text=title_text, caption_size=12)
    if any(method == "deconvnet" for method, _, _ in panels):
        from .figures import caption

        fig = caption(fig, DECONV_NOTE, size=12)
    return fig


def explanation_figure(exp: Explanation, *, title_text: str | None = None, height: int = 224) -> Image.Image:
    """An :class:`~convlens.attribute.explain.Explanation`: one :func:`saliency_figure` row per target, titled
    ``title_text: <target>``."""
    from .figures import stack

    rows = []
    for t in exp.targets:
        panels = [(name, m.map, m.raw) for name, m in t.maps.items()]
        head = f"{title_text}: " if title_text else ""
        rows.append(saliency_figure(exp.image[0], panels, title_text=head + t.describe(), height=height))
    return rows[0] if len(rows) == 1 else stack(rows)


DECONV_NOTE = ("DeconvNet: the regular checkerboard is the method, not a defect (it matches Captum's Deconvolution "
               "exactly on ReLU networks). Its backward pass applies each strided convolution transposed, and a "
               "stride-2 kernel whose size is not a multiple of 2 covers output pixels unevenly (Odena et al. 2016); "
               "DeconvNet rectifies the signal instead of gating it by the forward pass, so nothing image-specific "
               "masks the pattern. Guided backprop gates by the forward pass and shows it far less.")


def mask_figure(image: ArrayLike, saliency: ArrayLike, mask: ArrayLike, *, title_text: str | None = None
                ) -> Image.Image:
    """Photo, seeding saliency, mask and cut-out side by side."""
    img = to_rgb(image)
    msk = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    arr = np.asarray(img).copy()
    arr[~msk] = 255
    return side_by_side([(img, "input"), (colorize(saliency, "inferno"), "saliency seed"),
                         (to_rgb(msk.astype(np.float32)), "GrabCut mask"), (Image.fromarray(arr), "cut-out")],
                        title_text=title_text)


def curves_figure(fractions: Sequence[float], deletion: dict[str, Sequence[float]],
                  insertion: dict[str, Sequence[float]], *, title_text: str | None = None) -> Image.Image:
    """Mean deletion and insertion curves of several methods, two panels (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, curves, name in ((axes[0], deletion, "deletion"), (axes[1], insertion, "insertion")):
        for method, ys in curves.items():
            style = "--" if method in ("random", "edge") else "-"
            ax.plot(fractions, ys, style, label=LABELS.get(method, method), lw=1.5)
        ax.set_xlabel(f"fraction of pixels {'removed' if name == 'deletion' else 'inserted'}")
        ax.set_ylabel("mean probability of the target")
        ax.set_title(name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, None)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    if title_text:
        fig.suptitle(title_text)
    fig.tight_layout()
    return figure_to_image(fig)



# --- sanity checks (Adebayo et al. 2018) -----------------------------------------------------------------------

def sanity_figure(result, *, title_text: str | None = None) -> Image.Image:
    """Rank correlation and SSIM between the trained model's maps and the randomised models' maps, per step
    (mean over images, a band for the spread), one line per method (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = list(result.steps)
    xs = np.arange(len(steps))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.55 * len(steps) + 4) * 1.4, 4.6), dpi=100)
    for ax, metric, name in ((axes[0], "spearman", "Spearman rank correlation"), (axes[1], "ssim", "SSIM")):
        for method in result.methods:
            v = getattr(result, metric)[method]
            mean, lo, hi = v.mean(1), v.min(1), v.max(1)
            line = ax.plot(xs, mean, "o-", lw=1.8, ms=4, label=LABELS.get(method, method))[0]
            if v.shape[1] > 1:
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.12)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(xs)
        ax.set_xticklabels(steps, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(min(-0.2, float(ax.get_ylim()[0])), 1.05)
        ax.set_ylabel(f"{name} with the trained map")
        ax.set_xlabel("randomised from the top down to ..." if result.test.startswith("cascading") else "")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title_text or f"{result.test} (Adebayo et al. 2018), {result.spearman[result.methods[0]].shape[1]} "
                 f"images")
    fig.tight_layout()
    return figure_to_image(fig)


def sanity_maps_figure(result, image: ArrayLike, index: int = 0, *, columns: int = 7,
                       height: int = 112) -> Image.Image:
    """The paper's figure 2: one row per method, its map on the trained model and after more and more layers
    are randomised (``columns`` steps picked evenly, the last one always), for image ``index``."""
    from .figures import stack

    n = len(result.steps)
    picks = sorted({round(i * (n - 1) / max(1, columns - 1)) for i in range(min(columns, n))})
    rows = []
    for method in result.methods:
        items: list[tuple[ArrayLike, str]] = [(to_rgb(image), LABELS.get(method, method))]
        for j in picks:
            m = result.maps[method][j, index]
            items.append((map_panel(image, m, method), result.steps[j]))
        rows.append(side_by_side(items, height=height, caption_size=10))
    return stack(rows)


# --- folders: full-resolution overlays with a colour bar, transparent overlays, contact sheets ---------------------

UNITS = {"gradient": "|d logit / d pixel|", "deconvnet": "|DeconvNet signal|", "guided": "|guided gradient|",
         "smoothgrad": "mean |d logit / d pixel|", "integrated": "|attribution| (logit units)",
         "gradcam": "Grad-CAM (logit units)", "guided_gradcam": "|guided Grad-CAM|",
         "occlusion": "drop in probability", "rise": "expected probability when kept",
         "greedy": "reveal order (1 = first)", "random": "uniform noise",
         "edge": "image gradient magnitude"}
"""What a map's numbers mean, per method (the colour bar's label)."""
LABELS["rise"] = "RISE"
LABELS["greedy"] = "greedy insertion"
OVERLAY_METHODS = OVERLAY_METHODS + ("rise", "greedy")  # coarse, like Grad-CAM: drawn over the photo

__all__ += ["UNITS", "FLOATING", "display_range", "overlay_with_colorbar", "alpha_overlay", "contact_sheet",
            "compare_figure", "audit_figure", "audit_gallery"]


FLOATING = ("rise",)
"""Methods whose maps sit on a baseline rather than on 0 (RISE: the mean score over all masks, e.g. 0.25 to 0.5):
their colour scale starts at the map's own low end, or the whole map would be one colour."""


def display_range(m: np.ndarray, method: str = "", q: float = 99.5) -> tuple[float, float]:
    """The colour scale of ``method``'s map: from ``min(0, min)`` (a method of :data:`FLOATING`: from its
    ``100 - q``-th percentile) to its ``q``-th percentile (a few extreme pixels of a gradient map would otherwise
    leave the rest dark); both in the map's own units."""
    lo = float(np.percentile(m, 100 - q)) if method in FLOATING else min(0.0, float(np.min(m)))
    hi = float(np.percentile(m, q))
    if hi <= lo:
        hi = _flat(m, lo)
    return lo, hi


def _flat(m: np.ndarray, lo: float) -> float:
    """The top of the scale of a map whose percentile does not exceed ``lo``: its maximum, or -- a flat map (e.g.
    an occlusion map where no occluder lowered the probability) -- a span of one millionth, so the colour bar reads
    the map's real value instead of inventing a 0-1 range."""
    top = float(np.max(m))
    return top if top > lo else lo + 1e-6 * max(1.0, abs(lo))


def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def _map_on_photo(m: np.ndarray, size: tuple[int, int], box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The map resampled (bilinear) onto the photo's pixels inside ``box``; and where it is defined."""
    W, H = size
    x0, y0, x1, y1 = (float(v) for v in box)
    t = torch.from_numpy(np.ascontiguousarray(m, np.float32))[None, None]
    ys = ((torch.arange(H) + 0.5 - y0) / (y1 - y0)) * 2 - 1
    xs = ((torch.arange(W) + 0.5 - x0) / (x1 - x0)) * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    out = torch.nn.functional.grid_sample(t, torch.stack([gx, gy], -1)[None], mode="bilinear",
                                          align_corners=False, padding_mode="border")[0, 0].numpy()
    inside = (gx.abs() <= 1).numpy() & (gy.abs() <= 1).numpy()
    return out, inside


def _colorbar(height: int, lo: float, hi: float, label: str, cmap: str) -> Image.Image:
    """A vertical colour bar ``height`` pixels tall with ticks in the map's units and its label."""
    from PIL import ImageDraw

    from .figures import font

    fs = max(11, height // 40)
    fnt = font(fs)
    bar_w = max(14, height // 30)
    ticks = [hi - (hi - lo) * k / 4 for k in range(5)]
    texts = [f"{v:.3g}" for v in ticks]
    # textbbox is typed float (Pillow stubs) but our fonts measure in whole pixels
    tw = int(max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), s, font=fnt)[2] for s in texts))
    pad = fs // 2 + 2
    W = bar_w + tw + 3 * pad + fs + 4
    canvas = Image.new("RGB", (W, height), (255, 255, 255))
    top, bottom = pad + fs // 2, height - pad - fs // 2
    grad = _lut(cmap)[np.linspace(255, 0, max(1, bottom - top)).round().astype(int)]
    strip = Image.fromarray(np.repeat(grad[:, None], bar_w, 1), "RGB")
    canvas.paste(strip, (pad, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([pad, top, pad + bar_w - 1, bottom - 1], outline=(0, 0, 0))
    for k, s in enumerate(texts):
        y = top + (bottom - top - 1) * k / 4
        draw.line([pad + bar_w, y, pad + bar_w + 4, y], fill=(0, 0, 0))
        draw.text((pad + bar_w + 6, y - fs // 2 - 1), s, fill=(0, 0, 0), font=fnt)
    # the label, written vertically along the right edge
    lab = Image.new("RGB", (bottom - top, fs + 4), (255, 255, 255))
    ImageDraw.Draw(lab).text((2, 0), label, fill=(0, 0, 0), font=fnt)
    canvas.paste(lab.rotate(90, expand=True), (W - fs - 4, top))
    return canvas


def overlay_with_colorbar(photo: Image.Image, saliency: ArrayLike, box: Sequence[float], *, method: str,
                          caption_text: str | None = None, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """The map over the photo at the photo's full resolution (drawn inside ``box``, the model's centre crop in
    photo pixels; outside it the photo is dimmed), a colour bar in the map's units beside it, and a caption
    (e.g. the class and its probability) under it."""
    from .figures import caption

    m = saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    lo, hi = display_range(m, method)
    base = photo.convert("RGB")
    on, inside = _map_on_photo(m, base.size, box)
    idx = (np.clip((on - lo) / (hi - lo), 0, 1) * 255).round().astype(np.int64)
    colour = _lut(cmap)[idx].astype(np.float32)
    arr = np.asarray(base, np.float32)
    out = np.where(inside[..., None], (1 - alpha) * arr + alpha * colour, 0.55 * arr + 0.45 * 255)
    img = Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")
    bar = _colorbar(img.height, lo, hi, UNITS.get(method, method), cmap)
    canvas = Image.new("RGB", (img.width + bar.width, img.height), (255, 255, 255))
    canvas.paste(img, (0, 0))
    canvas.paste(bar, (img.width, 0))
    if caption_text:
        canvas = caption(canvas, caption_text, size=max(12, img.height // 36))
    return canvas


def alpha_overlay(size: tuple[int, int], saliency: ArrayLike, box: Sequence[float], *, method: str = "",
                  cmap: str = "jet", max_alpha: float = 0.8) -> Image.Image:
    """A transparent RGBA layer of the photo's ``size`` for compositing: the map's colour, opacity rising with
    its value (same scale as :func:`overlay_with_colorbar`), fully transparent outside the crop ``box``."""
    m = saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    lo, hi = display_range(m, method)
    on, inside = _map_on_photo(m, size, box)
    v = np.clip((on - lo) / (hi - lo), 0, 1)
    rgb = _lut(cmap)[(v * 255).round().astype(np.int64)]
    a = (v * max_alpha * 255 * inside).round().astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")


def contact_sheet(tiles: Sequence[tuple[Image.Image, str]], *, cell: int = 200, ncols: int | None = None,
                  title_text: str | None = None) -> Image.Image:
    """Thumbnails (each fitted into ``cell`` pixels) in a near-square grid, each with its label."""
    from .figures import grid, title

    pics = [t[0] for t in tiles]
    sheet = grid(pics, ncols=ncols, labels=[t[1] for t in tiles], cell=cell, pad=4, label_size=11)
    return title(sheet, title_text) if title_text else sheet


def compare_figure(crop: ArrayLike, map_a: ArrayLike, map_b: ArrayLike, disagreement: ArrayLike, *, names: tuple[str, str],
                   method: str, rho: float, title_text: str | None = None, height: int = 224) -> Image.Image:
    """Photo, model A's and model B's maps over it, and where they disagree: ``rank_A - rank_B`` in
    [-1, 1] (red: A relies on the region more than B; blue: less), with the maps' Spearman correlation."""
    panels = [(to_rgb(crop), "input"), (map_panel(crop, map_a, method), names[0]),
              (map_panel(crop, map_b, method), names[1]),
              (colorize(disagreement, "RdBu_r", mode="minmax", vmin=-1, vmax=1), f"rank A - rank B (rho {rho:.2f})")]
    return side_by_side(panels, height=height, title_text=title_text, caption_size=12)


def audit_figure(shares: Sequence[float] | np.ndarray, per_class: Sequence[dict], *, title_text: str | None = None,
                 top: int = 15) -> Image.Image:
    """Two panels: the distribution of the background share of saliency over the folder, and the classes
    whose maps rely most on the background (mean share, image count in brackets)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = list(per_class)[:top]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(4, 0.3 * len(rows) + 1.5)), dpi=100)
    axes[0].hist(list(shares), bins=20, range=(0, 1), color="#4477aa", edgecolor="white")
    axes[0].axvline(float(np.mean(shares)) if len(shares) else 0, color="k", ls="--", lw=1, label="mean")
    axes[0].set_xlabel("share of saliency mass on the background")
    axes[0].set_ylabel("images")
    axes[0].legend()
    axes[0].set_title("over the folder")
    labels = [f"{r['label']} ({r['images']})" for r in rows][::-1]
    vals = [r["background"] for r in rows][::-1]
    area = [1 - r["area"] for r in rows][::-1]
    y = np.arange(len(rows))
    axes[1].barh(y, vals, color="#cc6677", label="saliency on background")
    axes[1].scatter(area, y, color="k", marker="|", s=120, label="background share of pixels", zorder=3)
    axes[1].set_yticks(y, labels, fontsize=8)
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("mean share")
    axes[1].legend(fontsize=8, loc="lower right")
    axes[1].set_title("most background-reliant predicted classes")
    if title_text:
        fig.suptitle(title_text)
    fig.tight_layout()
    return figure_to_image(fig)


def audit_gallery(entries: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, str]], *, cell: int = 200,
                  title_text: str | None = None) -> Image.Image:
    """The images that rely most on the background: each ``(crop, map, mask, caption)`` as the map over the
    photo with the object's outline drawn in white."""
    tiles = []
    for crop, m, mask, text in entries:
        over = map_panel(crop, m, "gradcam", colorbar=False)  # the outline is drawn on the photo's pixels
        msk = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
        edge = msk ^ _erode(msk)
        arr = np.asarray(over).copy()
        arr[edge] = 255
        tiles.append((Image.fromarray(arr), text))
    return contact_sheet(tiles, cell=cell, title_text=title_text)


def _erode(m: np.ndarray, r: int = 1) -> np.ndarray:
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out &= np.roll(np.roll(m, dy, 0), dx, 1)
    return out
