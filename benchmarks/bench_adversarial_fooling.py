"""Claim: fooling images for five (photo, target) pairs succeed on efficientnet_lite0 with L-inf below 8/255.

Each photo is nudged towards its target (``fool``: signed steps of 0.5/255 on the target's log-probability,
inside the 8/255 ball) and stops at the first step at which the target is the top class with p >= 0.5. Also
says whether the saved 8-bit PNG still fools the network.

    python benchmarks/bench_adversarial_fooling.py
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

import convlens
from convlens.adversarial import fool, quantize

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
PAIRS = [("chelsea", "koala"), ("astronaut", "ostrich"), ("rocket", "school bus"), ("coffee", "pizza"),
         (str(SAMPLE / "n01443537_goldfish.JPEG"), "tiger shark")]


def main() -> None:
    convlens.tune_allocator()
    model = convlens.load_model("efficientnet_lite0")
    demos = convlens.demo_images([p for p, _ in PAIRS if "/" not in p])
    ok_all = True
    for src, target in PAIRS:
        x = model.load(demos.get(src, src))
        t = model.class_index(target)
        t0 = time.perf_counter()
        r = fool(model, x, t, eps=8 / 255, max_steps=100, confidence=0.5)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            png = model(quantize(r.adversarial)).softmax(1)[0]
        o, g = r.original[0], r.target[0]
        ok = bool(r.success[0]) and float(r.linf[0]) < 8 / 255
        ok_all &= ok
        print(f"{Path(src).stem:<20} {o.label} ({o.prob:.2f}) -> {g.label} ({g.prob:.2f}): steps {int(r.steps[0])}, "
              f"Linf {float(r.linf[0]) * 255:.2f}/255, L2 {float(r.l2[0]):.3f}, {dt:.1f} s; after PNG "
              f"{model.label(int(png.argmax()))} p_target {float(png[t]):.2f}; {'ok' if ok else 'FAILED'}", flush=True)
    print(f"claim (all five succeed with Linf < 8/255): {ok_all}")


if __name__ == "__main__":
    main()
