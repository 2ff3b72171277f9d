"""Pictures and pages of the accuracy studies: accuracy by attribute bin, accuracy against corruption severity,
the CSV tables, and the human-vs-network report (HTML)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..images import load_image
from .figures import figure_to_image
from .html import render, save_image, slug

__all__ = ["attribute_figure", "corruption_figure", "write_slice_csv", "write_human_report", "CELL_TITLES"]

_TOP1, _TOP5, _REF = "#3b6ea5", "#c0504d", "#7f7f7f"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def attribute_figure(result: Any, *, dpi: int = 100, columns: int = 4) -> Image.Image:
    """Small multiples, one panel per attribute of a :class:`~convlens.study.SliceResult`: top-1 and top-5
    accuracy per bin with 95% Wilson intervals as error bars, the bin's image count under it, and the overall
    accuracy as dotted lines."""
    plt = _plt()
    slices = [s for s in result.slices if s.bins]
    cols = max(1, min(columns, len(slices)))
    rows = max(1, math.ceil(len(slices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(slices):]:
        ax.axis("off")
    for ax, s in zip(axes.flat, slices):
        pos = np.arange(len(s.bins))
        for key, colour, dx, name in (("top1", _TOP1, -0.08, "top-1"), ("top5", _TOP5, 0.08, "top-5")):
            v = np.array([getattr(b, key) for b in s.bins])
            ci = np.array([getattr(b, f"{key}_ci") for b in s.bins], dtype=float)
            ax.errorbar(pos + dx, v, yerr=np.abs(np.stack([v - ci[:, 0], ci[:, 1] - v])), fmt="o-", ms=4, lw=1.2,
                        capsize=3, color=colour, label=name)
        ax.axhline(result.overall.top1, color=_TOP1, ls=":", lw=0.9)
        ax.axhline(result.overall.top5, color=_TOP5, ls=":", lw=0.9)
        labels = [f"{b.label}\nn={b.n}" for b in s.bins]
        ax.set_xticks(pos, labels, fontsize=6.5, rotation=30 if s.kind == "categorical" else 0,
                      ha="right" if s.kind == "categorical" else "center")
        ax.set_ylim(0, 1.02)
        ax.set_title(s.name.replace("_", " ") + (f" ({s.missing} missing)" if s.missing else ""), fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(axis="y", labelsize=8)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result.model}: accuracy by image attribute ({len(result.files)} images, "
                 f"top-1 {result.overall.top1:.1%}, 95% Wilson intervals)", fontsize=11)
    fig.tight_layout()
    return figure_to_image(fig, dpi)


def corruption_figure(result: Any, *, dpi: int = 100) -> Image.Image:
    """Top-1 accuracy against severity (0 = clean) for every corruption of a :class:`~convlens.study.SliceResult`,
    one panel per corruption with 95% intervals, the reference model dashed when there is one; CE in the title."""
    plt = _plt()
    curves = result.corruptions
    if not curves:
        raise ValueError("the result has no corruption curves (run with corruptions=...)")
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    clean_idx = _clean_positions(result)
    clean1 = float(np.mean(result.correct1[clean_idx])) if len(clean_idx) else math.nan
    clean5 = float(np.mean(result.correct5[clean_idx])) if len(clean_idx) else math.nan
    for ax, c in zip(axes.flat, curves):
        sev = [0] + list(c.severities)
        for key, clean, colour, name in (("top1", clean1, _TOP1, "top-1"), ("top5", clean5, _TOP5, "top-5")):
            v = np.array([clean] + list(getattr(c, key)))
            ci = np.array(getattr(c, f"{key}_ci"), dtype=float)
            ax.plot(sev, v, "o-", ms=3.5, lw=1.3, color=colour, label=name)
            ax.fill_between(c.severities, ci[:, 0], ci[:, 1], color=colour, alpha=0.15, lw=0)
        if c.reference_top1 is not None and result.reference_overall is not None:
            ax.plot(sev, [result.reference_overall.top1] + list(c.reference_top1), "s--", ms=3, lw=1, color=_REF,
                    label=f"{result.reference} top-1")
        title = c.name.replace("_", " ") + ("" if c.source == "ImageNet-C" else " *")
        if c.ce is not None and math.isfinite(c.ce):
            title += f"  CE {c.ce:.0f}%"
        ax.set_title(title, fontsize=9.5)
        ax.set_xticks(sev)
        ax.set_ylim(0, 1.02)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=6.5, loc="lower left")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)", fontsize=8)
    head = f"{result.model}: accuracy against corruption severity ({result.corruption_n} images)"
    if result.mce is not None:
        head += f"; mCE {result.mce:.0f}%, relative mCE {result.relative_mce:.0f}% vs {result.reference}"
    fig.suptitle(head + "\n* not in ImageNet-C (defined by convlens)", fontsize=10)
    fig.tight_layout()
    return figure_to_image(fig, dpi)


def _clean_positions(result: Any) -> np.ndarray:
    n, k = len(result.files), result.corruption_n
    if not k:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def write_slice_csv(result: Any, directory: str | Path) -> list[Path]:
    """``attributes.csv`` (one row per attribute bin), ``images.csv`` (one row per image with every attribute) and,
    with corruptions, ``corruptions.csv`` (one row per corruption and severity)."""
    d = Path(directory)
    out = [d / "attributes.csv", d / "images.csv"]
    with open(out[0], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attribute", "kind", "bin", "lo", "hi", "median", "n", "top1", "top1_lo", "top1_hi", "top5",
                    "top5_lo", "top5_hi"])
        for s in result.slices:
            for b in s.bins:
                w.writerow([s.name, s.kind, b.label, b.lo, b.hi, b.median, b.n, b.top1, *b.top1_ci, b.top5,
                            *b.top5_ci])
    with open(out[1], "w", newline="") as f:
        w = csv.writer(f)
        keys = list(result.values)
        w.writerow(["file", "label", "top1_class", "top1_prob", "correct1", "correct5", *keys])
        for i, name in enumerate(result.files):
            w.writerow([name, int(result.labels[i]), int(result.top5[i, 0]), float(result.probs[i, 0]),
                        int(result.correct1[i]), int(result.correct5[i]), *[result.values[k][i] for k in keys]])
    if result.corruptions:
        out.append(d / "corruptions.csv")
        with open(out[2], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["corruption", "source", "severity", "n", "top1", "top1_lo", "top1_hi", "top5", "top5_lo",
                        "top5_hi", "reference_top1", "ce", "relative_ce"])
            for c in result.corruptions:
                for i, s in enumerate(c.severities):
                    w.writerow([c.name, c.source, s, c.n, c.top1[i], *c.top1_ci[i], c.top5[i], *c.top5_ci[i],
                                None if c.reference_top1 is None else c.reference_top1[i], c.ce, c.relative_ce])
    return out


# --- the human study report -------------------------------------------------------------------------------------

CELL_TITLES = {"both_right": "both right", "only_human": "only the person right",
               "only_network": "only the network right", "both_wrong": "both wrong"}


def write_human_report(report: Any, dataset_root: str | Path | None, directory: str | Path, *,
                       thumb: int = 128, per_cell: int = 48, cases: int = 12) -> Path:
    """Write ``report.html`` for a :class:`~convlens.study.HumanStudyReport` with photo thumbnails in ``thumbs/``:
    the accuracy table, the agreement tables (top-1 and top-5) with up to ``per_cell`` photos per cell, the network's
    most confident mistakes the person got right and the reverse (``cases`` each), and every reason given."""
    d = Path(directory)
    (d / "thumbs").mkdir(parents=True, exist_ok=True)
    root = Path(dataset_root) if dataset_root is not None else None
    made: dict[str, str] = {}

    def thumb_of(file: str) -> str:
        if file not in made:
            src = (root / file) if root is not None else Path(file)
            name = f"thumbs/{len(made):05d}_{slug(Path(file).stem, 40)}.jpg"
            img = load_image(src)
            img.thumbnail((thumb, thumb))
            save_image(img, d / name, quality=82)
            made[file] = name
        return made[file]

    used = set()
    for k in ("top1", "top5"):
        for cell in report.agreement[k].values():
            used.update(cell[:per_cell])
    used.update(report.network_mistakes_human_right[:cases])
    used.update(report.human_mistakes_network_right[:cases])
    used.update(report.reasons)
    thumbs = {j: thumb_of(report.cases[j].file) for j in sorted(used)}
    return render("study_report.html", d / "report.html", report=report, thumbs=thumbs, per_cell=per_cell,
                  cases=cases, cell_titles=CELL_TITLES)
