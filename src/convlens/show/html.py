"""HTML building blocks shared by the tour and the microscope.

One Jinja2 environment with autoescaping switched on for every template, so anything that comes from a user's
files (file names, folder names, labels, layer names of their own network) is escaped where it is printed and
can never run. Pictures are written as files next to the pages (never inlined, never from a CDN); the CSS is
inlined, so a page opens from disk without a server or internet.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import torch
from markupsafe import Markup
from PIL import Image

from ..images import to_pil

__all__ = ["environment", "render", "write_text", "save_image", "slug", "svg_histogram", "fmt_number"]

_ENV: jinja2.Environment | None = None


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number as a short string: integers as they are, floats with ``digits`` significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(value)


def environment() -> jinja2.Environment:
    """The Jinja2 environment of convlens' templates (autoescape on, undefined names are errors)."""
    global _ENV
    if _ENV is None:
        env = jinja2.Environment(loader=jinja2.PackageLoader("convlens.show", "templates"),
                                 autoescape=True, undefined=jinja2.StrictUndefined,
                                 trim_blocks=True, lstrip_blocks=True)
        env.filters["num"] = fmt_number
        env.globals["inline_css"] = lambda: Markup(  # our own file, never user input
            (Path(__file__).parent / "templates" / "style.css").read_text())
        _ENV = env
    return _ENV


def write_text(path: str | Path, text: str) -> Path:
    """Write a file atomically (a reader or an interrupted run never sees half a page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def render(template: str, path: str | Path, **context: Any) -> Path:
    """Render ``template`` with ``context`` (autoescaped) to ``path``."""
    return write_text(path, environment().get_template(template).render(**context))


def save_image(image: Image.Image | torch.Tensor | np.ndarray, path: str | Path, *, quality: int = 88) -> Path:
    """Save a picture (PIL image, pixel tensor ``3xHxW`` in [0, 1], or ``HxW[x3]`` uint8/float array) atomically.

    The format follows the suffix (``.jpg`` for photos, ``.png`` for maps and figures).
    """
    path = Path(path)
    if isinstance(image, torch.Tensor):
        image = to_pil(image)
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(arr)
    from ..results import save_image

    if path.suffix.lower() in (".jpg", ".jpeg"):
        return save_image(image.convert("RGB"), path, quality=quality)
    return save_image(image, path, format="PNG", optimize=False)


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text`` (layer names, labels): ``blocks.4.0`` -> ``blocks.4.0``, ``a/b c`` -> ``a_b_c``."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return out[:limit]


def svg_histogram(counts: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray, *, width: int = 360,
                  height: int = 120, log: bool = True) -> Markup:
    """An inline SVG bar chart of a histogram (numbers only go into the markup, so it is safe to inline)."""
    c = np.asarray(counts, dtype=float)
    e = np.asarray(edges, dtype=float)
    if c.size == 0:
        return Markup("")
    v = np.log1p(c) if log else c
    top = v.max() if v.max() > 0 else 1.0
    bw = width / c.size
    bars = []
    for i, val in enumerate(v):
        bh = (height - 16) * val / top
        bars.append(f'<rect x="{i * bw:.2f}" y="{height - 14 - bh:.2f}" width="{max(bw - 0.5, 0.5):.2f}" '
                    f'height="{bh:.2f}"><title>[{e[i]:.3g}, {e[i + 1]:.3g}): {int(c[i])}</title></rect>')
    zero = ""
    if e[0] < 0 < e[-1]:
        zx = width * (0 - e[0]) / (e[-1] - e[0])
        zero = f'<line x1="{zx:.1f}" x2="{zx:.1f}" y1="0" y2="{height - 14}" class="zero"/>'
    labels = (f'<text x="0" y="{height - 2}">{e[0]:.3g}</text>'
              f'<text x="{width}" y="{height - 2}" text-anchor="end">{e[-1]:.3g}</text>')
    scale = "log(1+count)" if log else "count"
    return Markup(f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'role="img" aria-label="activation histogram, {scale}">{"".join(bars)}{zero}{labels}</svg>')
