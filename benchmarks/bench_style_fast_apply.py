"""Claim: fast-style apply of a 512 px image is at least 100x faster than style transfer by optimisation.

Both in one process on the same photo (tubingen, longer side 512), the same loss network (the embedded
EfficientNet-Lite0) and the same style (starry_night, the network convlens ships). Fast style: the median of 5
forward passes of the shipped transformation network. Optimisation: ``style_transfer`` with the library's
defaults at 512 px (two octaves, as ``convlens style --size 512`` runs it) for ``--steps N`` steps in all
(default 60; the steps are split between the octaves in the same proportion as for 200), and the time scaled
linearly to the default 200 steps. Pass ``--steps 200`` for the unscaled figure.

    python benchmarks/bench_style_fast_apply.py [--steps 60]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import convlens
from convlens.images import load_image, to_pixels
from convlens.synthesize.fast_style import apply_fast_style, load_fast_style, pretrained_path
from convlens.synthesize.style import style_transfer
from convlens.synthesize.texture import _resize_long

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60, help="optimisation steps timed (scaled to 200)")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = convlens.load_model("efficientnet_lite0")
    content = _resize_long(to_pixels(load_image(DATA / "content" / "tubingen.jpg"))[None], args.size)
    style = to_pixels(load_image(DATA / "styles" / "starry_night.jpg"))[None]
    net, cfg, _, _ = load_fast_style(pretrained_path())

    apply_fast_style(net, content)  # warm-up
    fast = []
    for _ in range(5):
        t = time.perf_counter()
        apply_fast_style(net, content)
        fast.append(time.perf_counter() - t)
    fast_s = statistics.median(fast)

    t = time.perf_counter()
    style_transfer(model, content, [style], size=args.size, steps=args.steps, octaves=2)
    opt_s = time.perf_counter() - t
    full = opt_s * 200 / args.steps
    h, w = content.shape[-2:]
    print(f"image {w}x{h}; fast-style network {cfg.styles} width {net.width}, {net.n_blocks} blocks")
    print(f"fast-style apply     median {fast_s:.3f} s  (5 runs: {', '.join(f'{v:.3f}' for v in fast)})")
    print(f"optimisation         {args.steps} steps {opt_s:.1f} s -> 200 steps {full:.1f} s"
          f"{'' if args.steps == 200 else ' (scaled)'}")
    print(f"ratio optimisation / fast-style: {full / fast_s:.0f}x (claim: >= 100x)")


if __name__ == "__main__":
    main()
