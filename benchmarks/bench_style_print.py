"""How long does ``convlens style --print A4`` take on one CPU core, and does the full-size level still change the
picture? (issue 13)

One style transfer of tubingen x starry_night (``../shared/data``) on the embedded model at ``--size`` (1754 px: A4
at 150 dpi), ``--steps`` in all, the octaves the CLI picks (one per doubling above 384 px). The full-size level is
snapshotted every L-BFGS chunk (by wrapping the coarse-to-fine loop's callback), and each snapshot's mean and max
absolute difference from the final picture is printed with the loss and the seconds so far: how much the remaining
full-level steps still change. Prints CPU seconds and the peak memory.

    OMP_NUM_THREADS=1 python benchmarks/bench_style_print.py [--size 1754] [--steps 200]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import torch

import convlens
import convlens.synthesize.style as style_module
from convlens.images import load_image, to_pil, to_pixels
from convlens.runtime import tune_allocator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1754)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--save", default=None, help="Write the final picture here (PNG).")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tune_allocator()  # as the CLI: without it page faults add about as much system time as the work itself
    octaves = 1
    while args.size / 2 ** (octaves - 1) > 384:  # as the CLI
        octaves += 1
    model = convlens.load_model("efficientnet_lite0")
    content = to_pixels(load_image(DATA / "content" / "tubingen.jpg"))[None]
    style = to_pixels(load_image(DATA / "styles" / "starry_night.jpg"))[None]
    loop = style_module.coarse_to_fine
    snaps: dict[int, tuple[torch.Tensor, float, float]] = {}
    levels: dict[tuple[int, int], list[int]] = {}
    t0 = time.perf_counter()

    def wrapped(model_: Any, size: tuple[int, int], factors: Any, objective_at: Any, start: Any, *,
                callback: Any = None, **kw: Any) -> torch.Tensor:
        def cb(i: int, img: torch.Tensor, loss: float) -> None:
            hw = (int(img.shape[-2]), int(img.shape[-1]))
            levels.setdefault(hw, []).append(i)
            if hw == tuple(size):
                snaps[i] = (img.detach().cpu().clone(), loss, time.perf_counter() - t0)
            if callback is not None:
                callback(i, img, loss)
        return loop(model_, size, factors, objective_at, start, callback=cb, **kw)

    style_module.coarse_to_fine = wrapped
    try:
        res = style_module.style_transfer(model, content, [style], size=args.size, steps=args.steps,
                                          octaves=octaves, seed=0)
    finally:
        style_module.coarse_to_fine = loop
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{args.size} px, {args.steps} steps, {octaves} octaves: {res.seconds:.1f} s wall, CPU {cpu.ru_utime:.0f} s "
          f"user + {cpu.ru_stime:.0f} s system, peak RSS {cpu.ru_maxrss / 1e6:.1f} GB; content {res.content_loss:.4f}, "
          f"style {res.style_loss:.5f}")
    for hw, steps in levels.items():
        print(f"  level {hw[1]}x{hw[0]}: steps {steps[0]}-{steps[-1]}")
    before = max((s for hw, st in levels.items() if hw != tuple(res.image.shape[-2:]) for s in st), default=0)
    for i, (img, loss, t) in sorted(snaps.items()):
        d = (img - res.image).abs()
        print(f"  full-level step {i - before:3d} of {args.steps - before}: {t:6.0f} s, loss {loss:.4f}, mean |x - final| "
              f"{float(d.mean()):.4f}, max {float(d.amax()):.3f}", flush=True)
    if args.save:
        to_pil(res.image).save(args.save)


if __name__ == "__main__":
    main()
