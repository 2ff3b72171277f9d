"""Claim: convlens occlusion (incremental inference) is >= 2x faster than Captum's Occlusion.

Same image (chelsea, 224x224, EfficientNet-Lite0), window 32, stride 8 (625 occluders), batches of 64
(Captum: perturbations_per_eval=64), both in this one process under the same allocator settings
(convlens.tune_allocator() applies to both). Also times convlens without incremental inference, so the ratio
that comes from the method alone is visible.
Usage: python benchmarks/bench_attribute_occlusion.py [REPEATS] [THREADS]   (THREADS applies to both)
"""

import statistics
import sys
import time

import torch
from captum.attr import Occlusion

import convlens
from convlens.attribute import occlusion

convlens.tune_allocator()
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 1
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
model = convlens.load_model("efficientnet_lite0")
x = model.load(convlens.demo_images(["chelsea"])["chelsea"])
target = int(model(x).argmax())
captum = Occlusion(lambda z: model(z).softmax(-1))


def timed(fn):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


with torch.no_grad():
    t_ours, ours = timed(lambda: occlusion(model, x, target, window=32, stride=8, batch_size=64))
    t_plain, plain = timed(lambda: occlusion(model, x, target, window=32, stride=8, batch_size=64,
                                             incremental=False))
    t_cap, ref = timed(lambda: captum.attribute(x, sliding_window_shapes=(3, 32, 32), strides=(3, 8, 8),
                                                target=target, perturbations_per_eval=64)[:, 0])
err = float((ours - ref).abs().max() / ref.abs().max())
print(f"threads={torch.get_num_threads()} repeats={repeats} occluders=625 batch=64")
print(f"convlens incremental : {t_ours:8.2f} s")
print(f"convlens full batches: {t_plain:8.2f} s")
print(f"captum Occlusion     : {t_cap:8.2f} s")
print(f"max relative difference of maps: {err:.2e}")
print(f"ratio captum / convlens incremental = {t_cap / t_ours:.2f}x  (method alone: full / incremental = "
      f"{t_plain / t_ours:.2f}x)")
