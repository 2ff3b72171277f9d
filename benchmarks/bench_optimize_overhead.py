"""Claim: the ``optimize`` loop costs < 10 % more per step than a hand-written PyTorch loop doing the same work,
and its memory does not grow with the number of steps.

Peer: Adam on raw 224x224 pixels maximising the flamingo logit of the embedded EfficientNet-Lite0, written out
by hand (forward, loss, backward, step, clamp). Ours: ``optimize(model, class_logit(130), PixelImage(...))``.
Both run interleaved in one process (rounds of ``--steps`` steps, ABAB...), so machine load hits both alike.
Memory: resident set size after step 10 and after the last step of one long ``optimize`` run.

    python benchmarks/bench_optimize_overhead.py [--rounds 6] [--steps 10] [--threads 1] [--long 150]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import convlens
from convlens.core import PixelImage, class_logit, optimize


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def hand_loop(model: convlens.Model, steps: int) -> float:
    x = torch.full((1, 3, 224, 224), 0.5, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = -model(x)[:, 130].sum()
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        float(loss.detach())  # the loop records the loss too
    return (time.perf_counter() - t) / steps


def ours(model: convlens.Model, steps: int) -> float:
    res = optimize(model, class_logit(130), PixelImage(size=224), steps=steps, optimizer="adam", lr=0.05)
    return res.seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long", type=int, default=150)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    convlens.tune_allocator()
    model = convlens.load_model("efficientnet_lite0")
    hand_loop(model, 3), ours(model, 3)  # warm up
    hand, mine = [], []
    for _ in range(args.rounds):
        hand.append(hand_loop(model, args.steps))
        mine.append(ours(model, args.steps))
    h, m = statistics.median(hand), statistics.median(mine)
    print(f"hand-written loop: median {1 / h:.2f} steps/s ({h * 1000:.1f} ms/step)")
    print(f"convlens optimize: median {1 / m:.2f} steps/s ({m * 1000:.1f} ms/step)")
    print(f"overhead: {100 * (m / h - 1):+.1f} %  (claim: < 10 %)  {'PASS' if m / h < 1.10 else 'FAIL'}")

    marks: dict[int, float] = {}
    optimize(model, class_logit(130), PixelImage(size=224), steps=args.long,
             callback=lambda step, img, loss: marks.__setitem__(step, rss_mb()) if step in (10, args.long) else None)
    grow = marks[args.long] - marks[10]
    print(f"memory: RSS {marks[10]:.0f} MB after step 10, {marks[args.long]:.0f} MB after step {args.long} "
          f"({grow:+.1f} MB)  (claim: flat, < 20 MB)  {'PASS' if grow < 20 else 'FAIL'}")


if __name__ == "__main__":
    main()
