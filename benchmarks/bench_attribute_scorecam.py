"""Claim: convlens Score-CAM and Ablation-CAM are at least 3x faster than pytorch-grad-cam's ScoreCAM / AblationCAM
(same model, layer, image, process; medians).

Usage: python benchmarks/bench_attribute_scorecam.py [REPEATS] [LAYER] [PHOTO]

The layer defaults to ``model.layers.last_spatial()`` (``bn2`` on EfficientNet-Lite0: 1280 channels at 7 x 7);
the photo to the shared imagenet-sample tabby. The peers run with their default batch sizes (ScoreCAM 16,
AblationCAM 32); each map's Pearson correlation with ours is printed too (the peer's ScoreCAM upsamples with
``align_corners=True`` where we follow the paper's plain bilinear resize, so the two differ slightly).
"""

import sys

import torch
from _common import SAMPLE, PixelNet, median_seconds
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
      f"threads={torch.get_num_threads()} repeats={repeats} (medians, after one warm-up)")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


for name, ours_fn, peer_cls in (("Score-CAM", score_cam, ScoreCAM), ("Ablation-CAM", ablation_cam, AblationCAM)):
    peer = peer_cls(model=net, target_layers=[model.layer(layer)])
    peer_fn = (lambda p=peer: p(input_tensor=x, targets=targets))
    a = median_seconds(lambda f=ours_fn: f(model, x, t, layer=layer), repeats)
    b = median_seconds(peer_fn, repeats)
    ours, theirs = ours_fn(model, x, t, layer=layer)[0], torch.from_numpy(peer_fn()[0])
    print(f"{name:<13} convlens {a:7.3f} s   pytorch-grad-cam {b:7.3f} s   ratio = {b / a:5.2f}x   "
          f"map correlation {corr(ours, theirs):.4f}", flush=True)
