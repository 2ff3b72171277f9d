"""Faithfulness (deletion / insertion AUC, Petsiuk et al. 2018) of every convlens method and of Captum's and
pytorch-grad-cam's maps on the same shared photos -- same metric code for all, so equal methods must agree.

Usage: python benchmarks/bench_attribute_faithfulness.py [N_IMAGES=50] [STEPS=50] [OCCLUSION_STRIDE=8]
"""

import sys
import time

import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import convlens
from convlens.attribute import deletion_insertion, saliency

from _common import SAMPLE, PixelNet

convlens.tune_allocator()
n_images = int(sys.argv[1]) if len(sys.argv) > 1 else 50
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
stride = int(sys.argv[3]) if len(sys.argv) > 3 else 8
files = convlens.list_images(SAMPLE)[:n_images]
model = convlens.load_model("efficientnet_lite0")
layer = model.layers.last_spatial()

cam_peer = GradCAM(model=PixelNet(model), target_layers=[model.layer(layer)])
gen = torch.Generator().manual_seed(0)
ours = {"gradient": {}, "deconvnet": {}, "guided": {}, "smoothgrad": {"samples": 25}, "integrated": {"steps": 50},
        "gradcam": {}, "guided_gradcam": {}, "occlusion": {"window": 32, "stride": stride}, "random": {},
        "edge": {}}
peers = {
    "captum:Saliency": lambda x, t: Saliency(model).attribute(x, target=t).amax(1),
    "captum:IntegratedGradients": lambda x, t: IntegratedGradients(model).attribute(
        x, target=t, n_steps=50, internal_batch_size=25).abs().amax(1),
    "captum:Occlusion": lambda x, t: Occlusion(lambda z: model(z).softmax(-1)).attribute(
        x, sliding_window_shapes=(3, 32, 32), strides=(3, stride, stride), target=t, perturbations_per_eval=64)[:, 0],
    "grad-cam:GradCAM": lambda x, t: torch.from_numpy(cam_peer(input_tensor=x.clone().requires_grad_(True), targets=[
        ClassifierOutputTarget(int(t))])),
}
rows = {name: [] for name in list(ours) + list(peers)}
secs = {name: 0.0 for name in rows}
for f in files:
    x = model.load(f)
    t = model(x).argmax(-1)
    for name in rows:
        s = time.perf_counter()
        if name in ours:
            opts = dict(ours[name])
            if name in ("smoothgrad", "random"):
                opts["generator"] = gen
            m = saliency(model, x, name, t, **opts)
        else:
            m = peers[name](x, t)
        secs[name] += time.perf_counter() - s
        r = deletion_insertion(model, x, m.float(), t, steps=steps, generator=torch.Generator().manual_seed(1))
        rows[name].append((float(r.deletion_auc[0]), float(r.insertion_auc[0])))
print(f"{len(files)} images, {steps} steps, occlusion window 32 stride {stride}, model {model.name}")
print(f"{'method':<28} {'deletion':>9} {'insertion':>9} {'s/img':>7}")
for name, vals in rows.items():
    d = sum(v[0] for v in vals) / len(vals)
    i = sum(v[1] for v in vals) / len(vals)
    print(f"{name:<28} {d:>9.3f} {i:>9.3f} {secs[name] / len(files):>7.2f}")
