"""Pictures of adversarial results: the lecture's three-panel fooling figure, universal patterns, attack examples.

Rendering only: every function takes results that were already computed and returns a ``PIL.Image``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from .figures import grid, side_by_side, stack, title, to_rgb

__all__ = ["attack_examples", "fooling_figure", "magnify", "universal_figure"]


def magnify(delta: torch.Tensor, factor: float | None = 10.0, *, eps: float | None = None) -> torch.Tensor:
    """A perturbation ``3xHxW`` made visible: ``0.5 + factor * delta`` (grey is "no change"), clipped to [0, 1].

    With ``factor=None`` the pattern is stretched so that ``eps`` (or its largest value) reaches full contrast.
    """
    d = delta.detach().float().cpu()
    if d.dim() == 4:
        d = d[0]
    if factor is None:
        top = eps if eps is not None else float(d.abs().max())
        factor = 0.5 / max(top, 1e-12)
    return (0.5 + factor * d).clamp(0, 1)


def _fmt_eps(v: float) -> str:
    return f"{v:.4f} ({v * 255:.1f}/255)"


def fooling_figure(original: torch.Tensor, fooled: torch.Tensor, *, original_label: str, original_prob: float,
                   target_label: str, target_prob: float, linf: float, l2: float, steps: int | None = None,
                   factor: float = 10.0, height: int = 224) -> Image.Image:
    """The lecture's figure: original (class, probability) | perturbation x``factor`` (L-inf, L2) | fooled image.

    ``original``/``fooled`` are pixel tensors ``3xHxW`` (or ``1x3xHxW``) in [0, 1].
    """
    o = original.detach()[0] if original.dim() == 4 else original.detach()
    f = fooled.detach()[0] if fooled.dim() == 4 else fooled.detach()
    pert = magnify(f - o, factor)
    step_text = f", {steps} steps" if steps is not None else ""
    panels = [
        (to_rgb(o), f"{original_label}\np = {original_prob:.3f}"),
        (to_rgb(pert), f"perturbation x{factor:g}{step_text}\nLinf {_fmt_eps(linf)}, L2 {l2:.3f}"),
        (to_rgb(f), f"{target_label}\np = {target_prob:.3f}"),
    ]
    return side_by_side(panels, height=height, caption_size=13)


def universal_figure(perturbation: torch.Tensor, examples: Sequence[torch.Tensor], *, eps: float,
                     labels: Sequence[tuple[str, str]] = (), fooling_rate: float | None = None,
                     cell: int = 160) -> Image.Image:
    """The universal pattern stretched to full contrast beside perturbed photos captioned ``clean -> now``."""
    pattern = to_rgb(magnify(perturbation, None, eps=eps))
    rate = f", fools {fooling_rate:.0%} of held-out photos" if fooling_rate is not None else ""
    top = side_by_side([(pattern, f"universal perturbation (Linf <= {eps * 255:.0f}/255, magnified){rate}")],
                       height=cell * 2 if examples else 224)
    if not examples:
        return top
    caps = [f"{a} -> {b}" for a, b in labels] if labels else None
    pics = [to_rgb(e) for e in examples]
    g = grid(pics, ncols=min(4, len(pics)), labels=caps, cell=cell, label_size=11, pad=4)
    return stack([top, g])


def attack_examples(clean: torch.Tensor, adversarial: torch.Tensor, clean_labels: Sequence[str],
                    adv_labels: Sequence[str], *, clean_probs: Sequence[float] | None = None,
                    adv_probs: Sequence[float] | None = None, title_text: str | None = None,
                    factor: float = 10.0, cell: int = 150) -> Image.Image:
    """Rows of (clean, perturbation x``factor``, adversarial), each photo captioned with its predicted class and,
    when given, the model's confidence in it (``clean_probs`` / ``adv_probs``); ``title_text`` over the grid
    (e.g. how many of the attacked images were fooled)."""
    pics, caps = [], []
    cp = list(clean_probs) if clean_probs is not None else [None] * len(clean_labels)
    ap = list(adv_probs) if adv_probs is not None else [None] * len(adv_labels)
    for c, a, cl, al, pc, pa in zip(clean, adversarial, clean_labels, adv_labels, cp, ap):
        pics += [to_rgb(c), to_rgb(magnify(a - c, factor)), to_rgb(a)]
        caps += [f"clean: {cl}" + (f" p={pc:.2f}" if pc is not None else ""), f"perturbation x{factor:g}",
                 f"adversarial: {al}" + (f" p={pa:.2f}" if pa is not None else "")]
    g = grid(pics, ncols=3, labels=caps, cell=cell, label_size=11, pad=4)
    return title(g, title_text, size=13) if title_text else g
