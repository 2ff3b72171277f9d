"""Pictures of saliency results: map panels, side-by-side method figures, masks and faithfulness curves.

Everything here turns already computed maps into ``PIL.Image`` objects; nothing runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .figures import ArrayLike, colorize, heatmap_overlay, side_by_side, to_rgb

__all__ = ["OVERLAY_METHODS", "map_panel", "saliency_figure", "mask_figure", "curves_figure", "sanity_figure",
           "sanity_maps_figure"]

OVERLAY_METHODS = ("gradcam", "occlusion", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam",
                   "eigencam")
LABELS = {"gradient": "gradient (Simonyan)", "deconvnet": "DeconvNet", "guided": "guided backprop",
          "smoothgrad": "SmoothGrad", "integrated": "integrated gradients", "gradcam": "Grad-CAM",
          "guided_gradcam": "guided Grad-CAM", "occlusion": "occlusion", "random": "random", "edge": "edge",
          "gradcampp": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM", "layercam": "LayerCAM",
          "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM", "eigencam": "Eigen-CAM"}


def _clip(m: np.ndarray, q: float = 99.5) -> np.ndarray:
    hi = float(np.percentile(m, q))
    lo = float(m.min())
    return np.clip((m - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(m)


def map_panel(image: ArrayLike, saliency: ArrayLike, method: str, raw: torch.Tensor | None = None) -> Image.Image:
    """One method's panel: coarse maps (Grad-CAM, occlusion) over the photo; pixel maps on their own --
    the raw ``3 x H x W`` attribution as colour when given (the DeconvNet / guided backprop look), else the
    map in gray, clipped at its 99.5th percentile so a few extreme pixels do not hide the rest."""
    m = saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if method in OVERLAY_METHODS:
        return heatmap_overlay(image, np.clip(m, 0, None), alpha=0.5, cmap="jet")
    if raw is not None:
        r = raw.detach().float().cpu()
        r = r / (3 * r.std().clamp(min=1e-12)) * 0.5 + 0.5  # Springenberg et al.'s normalisation for display
        return to_rgb(r.clamp(0, 1))
    return to_rgb(_clip(m))


def saliency_figure(image: ArrayLike, panels: Sequence[tuple[str, ArrayLike, torch.Tensor | None]], *,
                    title_text: str | None = None, height: int = 224) -> Image.Image:
    """The photo followed by one panel per ``(method, map, raw-or-None)``, captions underneath."""
    items: list[tuple[ArrayLike, str]] = [(to_rgb(image), "input")]
    for method, m, raw in panels:
        items.append((map_panel(image, m, method, raw), LABELS.get(method, method)))
    return side_by_side(items, height=height, title_text=title_text, caption_size=12)


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
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")



# --- sanity checks (Adebayo et al. 2018) -----------------------------------------------------------------------

def sanity_figure(result, *, title_text: str | None = None) -> Image.Image:  # noqa: ANN001 -- a SanityCheck
    """Rank correlation and SSIM between the trained model's maps and the randomised models' maps, per step
    (mean over images, a band for the spread), one line per method (matplotlib, Agg)."""
    import io

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def sanity_maps_figure(result, image: ArrayLike, index: int = 0, *, columns: int = 7,  # noqa: ANN001
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
