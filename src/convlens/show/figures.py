"""Rendering helpers shared by every command: grids, tiles, colour maps, overlays, captions, charts.

Everything here turns data that was already computed into ``PIL.Image`` objects; nothing runs a model.
Inputs may be a ``PIL.Image``, a torch tensor or a numpy array:

- ``3xHxW`` / ``HxWx3`` arrays are RGB (float in [0, 1] or uint8); ``HxW`` arrays are maps (any range).
- Maps become pictures through :func:`tile` (grayscale, scaled) or :func:`colorize` (a matplotlib colour map).

Typical use::

    from convlens.show.figures import grid, tile, heatmap_overlay, side_by_side, save
    img = grid([tile(m, 4) for m in maps], ncols=8, labels=[str(c) for c in range(len(maps))])
    save(side_by_side([(photo, "input"), (img, "conv1 channels")], title="activations"), "out.png")
"""

from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "ArrayLike",
    "bar_chart",
    "caption",
    "colorize",
    "draw_box",
    "fit",
    "font",
    "grid",
    "heatmap_overlay",
    "save",
    "scale_map",
    "scatter",
    "side_by_side",
    "tile",
    "title",
    "to_map",
    "to_rgb",
]

ArrayLike = Union[Image.Image, torch.Tensor, np.ndarray]  # noqa: UP007 - a runtime alias on Python 3.10

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GRAY = (128, 128, 128)


# -- text --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def font(size: int = 12, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font of ``size`` pixels (DejaVu Sans from matplotlib, else the system, else Pillow's own)."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    candidates = []
    try:
        import matplotlib

        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    candidates.append(Path("/usr/share/fonts/truetype/dejavu") / name)
    for path in candidates:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _text_size(text: str, fnt: Any) -> tuple[int, int]:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=fnt)
    return int(box[2] - box[0]), int(box[3] - box[1])


def _wrap(text: str, fnt: Any, width: int) -> str:
    """Break ``text`` into lines no wider than ``width`` pixels (on spaces, and after the dots of a dotted name
    such as ``blocks.1.0.bn2`` that is too wide for a line of its own)."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            parts = re.findall(r"[^.]*\.|[^.]+$", word) if _text_size(word, fnt)[0] > width else [word]
            for k, part in enumerate(parts):
                trial = (f"{line} {part}" if k == 0 else line + part) if line else part
                if line and _text_size(trial, fnt)[0] > width:
                    lines.append(line)
                    line = part
                else:
                    line = trial
        lines.append(line)
    return "\n".join(lines)


def _fit_label(text: str, fnt: Any, width: int, max_lines: int = 3) -> str:
    """A cell label wrapped onto at most ``max_lines`` lines of ``width`` pixels; only a word that cannot fit
    even on its own line (or a fourth line) is shortened, with an ellipsis."""
    lines = _wrap(text, fnt, width).split("\n")
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    out = []
    for line in lines:
        while len(line) > 1 and _text_size(line, fnt)[0] > width:
            line = line[:-2] + "…"
        out.append(line)
    return "\n".join(out)


# -- conversions -------------------------------------------------------------------------------------------
def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Image.Image):
        return np.asarray(x.convert("RGB"))
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def to_rgb(x: ArrayLike) -> Image.Image:
    """An RGB picture from a PIL image, a ``3xHxW``/``HxWx3`` tensor or array (float [0, 1] or uint8).

    A 2-D input is treated as a grayscale picture already in [0, 1] (uint8: 0-255); use :func:`tile` or
    :func:`colorize` for maps of any range.
    """
    if isinstance(x, Image.Image):
        return x.convert("RGB")
    arr = _numpy(x)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an image HxW, HxWx3 or 3xHxW, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def to_map(x: ArrayLike) -> np.ndarray:
    """A 2-D float map from a tensor or array ``HxW`` (or ``1xHxW``)."""
    arr = _numpy(x).astype(np.float32)
    arr = arr.squeeze()
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {arr.shape}")
    return arr


def scale_map(x: np.ndarray, mode: str = "minmax", *, vmin: float | None = None,
              vmax: float | None = None) -> np.ndarray:
    """Scale values to [0, 1] for display.

    ``minmax`` maps [min, max] (or [vmin, vmax] when given) to [0, 1]; ``symmetric`` maps [-a, a] with
    ``a = max |x|`` to [0, 1] so zero is mid-gray (for weights); ``none`` only clips.
    """
    x = np.asarray(x, dtype=np.float32)
    if mode == "none":
        return np.clip(x, 0, 1)
    if mode == "symmetric":
        a = float(np.abs(x).max()) if vmax is None else float(vmax)
        return np.clip(0.5 + 0.5 * x / a, 0, 1) if a > 0 else np.full_like(x, 0.5)
    if mode != "minmax":
        raise ValueError(f"mode must be minmax, symmetric or none, got {mode!r}")
    lo = float(x.min()) if vmin is None else float(vmin)
    hi = float(x.max()) if vmax is None else float(vmax)
    return np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)


def fit(image: Image.Image, size: int | tuple[int, int], *, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Resize keeping the aspect ratio so the image fits a ``size`` box (an int means a square box)."""
    w, h = (size, size) if isinstance(size, int) else size
    s = min(w / image.width, h / image.height)
    return image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), resample)


def tile(x: ArrayLike, scale: int = 1, *, mode: str = "minmax", vmin: float | None = None,
         vmax: float | None = None, size: int | None = None) -> Image.Image:
    """One small picture of a map or a filter, enlarged with nearest-neighbour so single pixels stay visible.

    A 2-D map becomes grayscale after :func:`scale_map` (``mode``); a ``3xHxW`` tensor (an RGB filter) is
    scaled as a whole with the same ``mode``, so colours keep their balance. ``scale`` is the integer blow-up;
    ``size`` instead picks the largest integer scale that keeps the side at or under ``size`` pixels.
    """
    if isinstance(x, Image.Image):
        img = x.convert("RGB")
    else:
        arr = _numpy(x).astype(np.float32)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 0)
        if arr.ndim not in (2, 3):
            raise ValueError(f"expected HxW, 3xHxW or HxWx3, got shape {arr.shape}")
        img = to_rgb(scale_map(arr, mode, vmin=vmin, vmax=vmax))
    if size is not None:
        scale = max(1, size // max(img.width, img.height))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def colorize(x: ArrayLike, cmap: str = "inferno", *, mode: str = "minmax", vmin: float | None = None,
             vmax: float | None = None) -> Image.Image:
    """A map drawn through a matplotlib colour map (``inferno``, ``jet``, ``RdBu_r``, ...) after :func:`scale_map`."""
    import matplotlib

    arr = scale_map(to_map(x), mode, vmin=vmin, vmax=vmax)
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return Image.fromarray(lut[(arr * 255).round().astype(np.int64)], "RGB")


# -- layout ------------------------------------------------------------------------------------------------
def grid(images: Sequence[ArrayLike], ncols: int | None = None, labels: Sequence[str] | None = None, pad: int = 2,
         *, background: tuple[int, int, int] = WHITE, label_size: int = 10, cell: int | None = None,
         label_color: tuple[int, int, int] = BLACK, marks: Sequence[bool] | None = None,
         mark_color: tuple[int, int, int] = (220, 40, 40)) -> Image.Image:
    """Lay pictures out in rows of ``ncols`` (default: near-square), each with an optional label underneath.

    Pictures of different sizes are centred in a cell as big as the largest (or fitted into ``cell`` pixels).
    ``marks`` draws a coloured frame around the chosen cells (e.g. dead channels).
    """
    pics = [to_rgb(im) if not isinstance(im, Image.Image) else im.convert("RGB") for im in images]
    if not pics:
        raise ValueError("grid() needs at least one image")
    if cell is not None:
        pics = [fit(p, cell, resample=Image.Resampling.NEAREST if max(p.size) < cell else Image.Resampling.LANCZOS)
                for p in pics]
    n = len(pics)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    cw, ch = max(p.width for p in pics), max(p.height for p in pics)
    fnt = font(label_size)
    cw0 = max(p.width for p in pics)
    texts = [_fit_label(str(t), fnt, cw0 + pad) if t else "" for t in labels] if labels is not None else None
    lines = max((t.count("\n") + 1 for t in texts if t), default=1) if texts else 0
    lh = (_text_size("\n".join(["Ag"] * lines), fnt)[1] + 4) if texts else 0
    W = ncols * cw + (ncols + 1) * pad
    H = nrows * (ch + lh) + (nrows + 1) * pad
    canvas = Image.new("RGB", (W, H), background)
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(pics):
        r, c = divmod(i, ncols)
        x0 = pad + c * (cw + pad)
        y0 = pad + r * (ch + lh + pad)
        canvas.paste(p, (x0 + (cw - p.width) // 2, y0 + (ch - p.height) // 2))
        if marks is not None and i < len(marks) and marks[i]:
            draw.rectangle([x0, y0, x0 + cw - 1, y0 + ch - 1], outline=mark_color, width=max(1, pad))
        if texts is not None and i < len(texts) and texts[i]:
            tw = _text_size(texts[i], fnt)[0]
            draw.multiline_text((x0 + (cw - tw) // 2, y0 + ch + 1), texts[i], fill=label_color, font=fnt,
                                align="center")
    return canvas


def caption(image: Image.Image, text: str, *, size: int = 13, above: bool = False, width: int | None = None,
            background: tuple[int, int, int] = WHITE, color: tuple[int, int, int] = BLACK,
            bold: bool = False) -> Image.Image:
    """The image with ``text`` (wrapped to the image width, or ``width``) centred underneath (or above)."""
    fnt = font(size, bold)
    w = max(image.width, width or 0)
    text = _wrap(text, fnt, w - 4)
    tw, th = _text_size(text, fnt)
    canvas = Image.new("RGB", (w, image.height + th + 8), background)
    ty = 2 if above else image.height + 3
    canvas.paste(image.convert("RGB"), ((w - image.width) // 2, th + 8 if above else 0))
    ImageDraw.Draw(canvas).multiline_text(((w - tw) // 2, ty), text, fill=color, font=fnt, align="center")
    return canvas


def title(image: Image.Image, text: str, *, size: int = 16) -> Image.Image:
    """The image with a bold title line above it."""
    return caption(image, text, size=size, above=True, bold=True)


def side_by_side(panels: Sequence[tuple[ArrayLike, str] | ArrayLike], *, pad: int = 8, caption_size: int = 13,
                 title_text: str | None = None, background: tuple[int, int, int] = WHITE,
                 height: int | None = None, align: str = "top") -> Image.Image:
    """Panels in one row, each with its caption underneath, and an optional title over the whole figure.

    ``panels`` are ``(image, caption)`` pairs (or bare images). ``height`` rescales every panel to the same
    height first (keeping aspect ratio); ``align`` is ``top`` or ``center``.
    """
    pics = []
    for p in panels:
        img, text = (p if isinstance(p, tuple) else (p, ""))
        img = to_rgb(img)
        if height is not None and img.height != height:
            s = height / img.height
            img = img.resize((max(1, round(img.width * s)), height),
                             Image.Resampling.NEAREST if s >= 2 else Image.Resampling.LANCZOS)
        pics.append(caption(img, text, size=caption_size) if text else img)
    W = sum(p.width for p in pics) + pad * (len(pics) + 1)
    H = max(p.height for p in pics) + 2 * pad
    canvas = Image.new("RGB", (W, H), background)
    x = pad
    for p in pics:
        y = pad if align == "top" else pad + (H - 2 * pad - p.height) // 2
        canvas.paste(p, (x, y))
        x += p.width + pad
    return title(canvas, title_text) if title_text else canvas


def stack(images: Sequence[Image.Image], *, pad: int = 8, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Images one under another, left-aligned."""
    W = max(i.width for i in images) + 2 * pad
    H = sum(i.height for i in images) + pad * (len(images) + 1)
    canvas = Image.new("RGB", (W, H), background)
    y = pad
    for i in images:
        canvas.paste(i.convert("RGB"), (pad, y))
        y += i.height + pad
    return canvas


__all__.append("stack")


def heatmap_overlay(image: ArrayLike, heat: ArrayLike, *, alpha: float = 0.5, cmap: str = "jet",
                    mode: str = "minmax") -> Image.Image:
    """A map drawn in colour over a picture (the Grad-CAM / occlusion look); the map is resized to the picture."""
    base = to_rgb(image)
    colour = colorize(heat, cmap, mode=mode).resize(base.size, Image.Resampling.BILINEAR)
    return Image.blend(base, colour, alpha)


def draw_box(image: Image.Image, box: Sequence[float], *, color: tuple[int, int, int] = (255, 40, 40),
             width: int = 2, dashed: bool = False) -> Image.Image:
    """A copy of the image with the rectangle ``(x0, y0, x1, y1)`` (exclusive ends) outlined."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not dashed:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=width)
        return out
    dash = 4
    for a, b in (((x0, y0), (x1 - 1, y0)), ((x0, y1 - 1), (x1 - 1, y1 - 1)), ((x0, y0), (x0, y1 - 1)),
                 ((x1 - 1, y0), (x1 - 1, y1 - 1))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        steps = max(1, int(length // dash))
        for s in range(0, steps, 2):
            t0, t1 = s / steps, min(1.0, (s + 1) / steps)
            draw.line([(a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                       (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1)], fill=color, width=width)
    return out


# -- charts (matplotlib, rendered to PIL) --------------------------------------------------------------------
def figure_to_image(fig: Any, dpi: int | None = None) -> Image.Image:
    """A Matplotlib figure as an RGB image (closed afterwards); ``dpi`` defaults to the figure's own."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def scatter(xy: ArrayLike, labels: Sequence[Any] | None = None, *, title_text: str | None = None,
            size: float = 8.0, figsize: tuple[float, float] = (7, 6), dpi: int = 100,
            legend: dict[Any, str] | None = None, annotate: Sequence[str] | None = None) -> Image.Image:
    """A 2-D scatter plot, coloured by ``labels`` when given (a legend when there are at most 20 labels)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pts = _numpy(xy).astype(np.float32)
    fig, ax = plt.subplots(figsize=figsize)
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=size, c="#3b6ea5", alpha=0.8, linewidths=0)
    else:
        keys = list(dict.fromkeys(labels))
        cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20" if len(keys) <= 20 else "turbo"]
        idx = {k: i for i, k in enumerate(keys)}
        colours = [cmap(idx[k] / max(1, len(keys) - 1)) if len(keys) > 20 else cmap(idx[k]) for k in labels]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, c=colours, alpha=0.85, linewidths=0)
        if len(keys) <= 20:
            for k in keys:
                ax.scatter([], [], s=30, color=cmap(idx[k]), label=(legend or {}).get(k, str(k)))
            ax.legend(loc="best", fontsize=8, frameon=True, markerscale=1.0)
    if annotate is not None:
        for (x, y), text in zip(pts, annotate):
            if text:
                ax.annotate(text, (x, y), fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title_text:
        ax.set_title(title_text)
    return figure_to_image(fig, dpi)


def bar_chart(values: Sequence[float], names: Sequence[str], *, title_text: str | None = None,
              ylabel: str = "", horizontal: bool | None = None, dpi: int = 100,
              figsize: tuple[float, float] | None = None, color: str = "#c0504d",
              value_format: str | None = "{:.0%}", texts: Sequence[str] | None = None) -> Image.Image:
    """A bar chart of named values (horizontal when there are many names), values (or ``texts``) on the bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(values)
    horizontal = n > 8 if horizontal is None else horizontal
    figsize = figsize or ((7, max(2.5, 0.28 * n + 1)) if horizontal else (max(5, 0.5 * n + 2), 4))
    fig, ax = plt.subplots(figsize=figsize)
    pos = np.arange(n)
    if horizontal:
        ax.barh(pos, values, color=color)
        ax.set_yticks(pos, list(names), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.bar(pos, values, color=color)
        ax.set_xticks(pos, list(names), rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
    if value_format or texts is not None:
        labels = list(texts) if texts is not None else [value_format.format(v) for v in values]  # type: ignore[union-attr]
        for p, v, text in zip(pos, values, labels):
            if horizontal:
                ax.text(float(v), float(p), " " + text, va="center", fontsize=7)
            else:
                ax.text(float(p), float(v), text, ha="center", va="bottom", fontsize=7)
    if title_text:
        ax.set_title(title_text)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_image(fig, dpi)


# -- signed gradients for display ---------------------------------------------------------------------------
def display_signed(g: torch.Tensor, *, percentile: float = 99.0) -> torch.Tensor:
    """A signed ``3 x h x w`` gradient (guided backprop, DeconvNet) for display in [0, 1]: zero at grey 0.5,
    ``+-`` the ``percentile``-th percentile of ``|g|`` at 0 and 1 (brighter values clip).

    The one normalisation every guided / DeconvNet picture uses (saliency figures, ``top-patches --guided``, the
    microscope, the tour). A percentile instead of ``max |g|`` keeps one outlier pixel from greying out the rest.
    """
    g = g.detach().float().cpu()
    a = g.abs().flatten()
    if a.numel() == 0:
        return g
    s = float(torch.quantile(a[:16_777_216], percentile / 100.0))
    if not s > 0:
        s = float(a.max())
    return (0.5 + 0.5 * g / s).clamp(0, 1) if s > 0 else torch.full_like(g, 0.5)


# -- saving ------------------------------------------------------------------------------------------------
def save(image: Image.Image, path: str | Path) -> Path:
    """Write a lossless, optimised PNG at the image's own resolution, atomically.

    A figure is never resized to meet a file-size budget: shrinking it silently made photos in mosaics unreadable
    and cut labels. Size is a matter of format and compression (PNG ``optimize``, zlib level 9), not of pixels.
    """
    from ..results import write_bytes

    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=True, compress_level=9)
    return write_bytes(Path(path), buf.getvalue())
