"""Claim: convlens Score-CAM and Ablation-CAM are at least 3x faster than pytorch-grad-cam's ScoreCAM / AblationCAM
(same model, layer, image, process; medians).

Usage: python benchmarks/bench_attribute_scorecam.py [REPEATS] [LAYER] [PHOTO]

The layer defaults to ``model.layers.last_spatial()`` (``bn2`` on EfficientNet-Lite0: 1280 channels at 7 x 7);
the photo to the shared imagenet-sample tabby. The peers run with their default batch sizes (ScoreCAM 16,
AblationCAM 32); each map's Pearson correlation with ours is printed too (the peer's ScoreCAM upsamples with
``align_corners=True`` where we follow the paper's plain bilinear resize, so the two differ slightly).
"""

import statistics
import sys
import time

import torch
from _common import SAMPLE, PixelNet
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import convlens
from convlens.attribute import ablation_cam, score_cam

convlens.tune_allocator()
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
model = convlens.load_model("efficientnet_lite0")
layer = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else model.layers.last_spatial()
photo = sys.argv[3] if len(sys.argv) > 3 else str(SAMPLE / "n02123045_tabby.JPEG")
x = model.load(photo)
t = int(model(x).argmax())
net = PixelNet(model)
targets = [ClassifierOutputTarget(t)]
print(f"photo={photo.split('/')[-1]} class={t} layer={layer} {tuple(model.layers[layer].shape)} "
      f"threads={torch.get_num_threads()} repeats={repeats} (medians)")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


def timed(fn, repeats: int, *, first: bool):
    """Median seconds of ``repeats`` calls and the last call's result; with ``first``, one more call before them,
    timed apart (ours: it may compile the forward engine, cached afterwards; the peer compiles nothing)."""
    out, t_first = None, float("nan")
    if first:
        t0 = time.perf_counter()
        out = fn()
        t_first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), t_first, out


with torch.no_grad():
    model(x)  # warm the eager network once for both
for name, ours_fn, peer_cls in (("Score-CAM", score_cam, ScoreCAM), ("Ablation-CAM", ablation_cam, AblationCAM)):
    peer = peer_cls(model=net, target_layers=[model.layer(layer)])
    a, a_first, ours = timed(lambda f=ours_fn: f(model, x, t, layer=layer)[0], repeats, first=True)
    b, _, theirs = timed(lambda p=peer: torch.from_numpy(p(input_tensor=x, targets=targets)[0]), repeats, first=False)
    print(f"{name:<13} convlens {a:7.3f} s (first call {a_first:.3f} s)   pytorch-grad-cam {b:7.3f} s   "
          f"ratio = {b / a:5.2f}x   map correlation {corr(ours, theirs):.4f}", flush=True)
