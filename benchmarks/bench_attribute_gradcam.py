"""Claim: convlens Grad-CAM is no slower than pytorch-grad-cam's GradCAM (same model, layer, image, process).

Usage: python benchmarks/bench_attribute_gradcam.py [REPEATS]
"""

import sys

import torch
from _common import PixelNet, median_seconds
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import convlens
from convlens.attribute import grad_cam

convlens.tune_allocator()
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
model = convlens.load_model("efficientnet_lite0")
x = model.load(convlens.demo_images(["chelsea"])["chelsea"])
t = int(model(x).argmax())
layer = model.layers.last_spatial()

peer = GradCAM(model=PixelNet(model), target_layers=[model.layer(layer)])
# convlens' zoo models keep their weights frozen; pytorch-grad-cam needs something upstream of the layer to require
# a gradient, so give it the cheapest such thing: the input (weight gradients would cost it more).
x_peer = x.clone().requires_grad_(True)

a = median_seconds(lambda: grad_cam(model, x, t, layer=layer), repeats)
b = median_seconds(lambda: peer(input_tensor=x_peer, targets=[ClassifierOutputTarget(t)]), repeats)
ours, theirs = grad_cam(model, x, t, layer=layer)[0], torch.from_numpy(peer(input_tensor=x_peer, targets=[
    ClassifierOutputTarget(t)])[0])
corr = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]
print(f"layer={layer} threads={torch.get_num_threads()} repeats={repeats} (medians)")
print(f"convlens {a:.3f} s   pytorch-grad-cam {b:.3f} s   ratio = {b / a:.2f}x   map correlation {corr:.4f}")
