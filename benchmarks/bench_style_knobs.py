"""Do the style knobs change the output visibly? (issue 13: ``--style-scale 2`` and ``--dream 0.1`` looked the same.)

Prints the mean absolute pixel difference (0-1 scale) between the default output and each knob's output, for
tubingen x starry_night (``../shared/data``) on the embedded model, and saves every output to ``--save-dir``.

    OMP_NUM_THREADS=1 python benchmarks/bench_style_knobs.py [--size 256] [--steps 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import convlens
from convlens.images import load_image, to_pil, to_pixels
from convlens.synthesize.style import style_transfer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KNOBS: dict[str, dict[str, float]] = {"default": {}, "style_scale 2": {"style_scale": 2.0},
                                      "style_scale 0.5": {"style_scale": 0.5}, "dream 0.1": {"dream_weight": 0.1}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--save-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = convlens.load_model("efficientnet_lite0")
    content = to_pixels(load_image(DATA / "content" / "tubingen.jpg"))[None]
    style = to_pixels(load_image(DATA / "styles" / "starry_night.jpg"))[None]
    base = None
    for name, kw in KNOBS.items():
        t0 = time.perf_counter()
        img = style_transfer(model, content, [style], size=args.size, steps=args.steps, seed=0, **kw).image
        base = img if base is None else base
        print(f"{name:16s} {time.perf_counter() - t0:6.1f} s   mean |difference| from default "
              f"{float((img - base).abs().mean()):.4f}", flush=True)
        if args.save_dir:
            Path(args.save_dir).mkdir(parents=True, exist_ok=True)
            to_pil(img).save(Path(args.save_dir) / f"{name.replace(' ', '_')}.png")


if __name__ == "__main__":
    main()
