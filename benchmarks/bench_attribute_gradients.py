"""Claim: vanilla gradient, guided backprop, SmoothGrad (25 samples) and integrated gradients (50 steps) are each
no slower than Captum's Saliency / GuidedBackprop / NoiseTunnel(Saliency) / IntegratedGradients, and a vanilla
gradient map costs at most 1.2x one plain forward + backward pass.

EfficientNet-Lite0, chelsea at 224, same batch sizes for both (SmoothGrad 25 noisy copies in one batch, IG 50
steps in batches of 25), same process and allocator. Usage: python benchmarks/bench_attribute_gradients.py [REPEATS]
"""

import sys

import torch
from _common import median_seconds
from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency

import convlens
from convlens.attribute import guided_backprop, integrated_gradients, smoothgrad, vanilla_gradient

convlens.tune_allocator()
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
model = convlens.load_model("efficientnet_lite0")
x = model.load(convlens.demo_images(["chelsea"])["chelsea"])
t = int(model(x).argmax())
norm = model.preprocess.normalize


def plain_fwd_bwd():
    xg = x.clone().requires_grad_(True)
    model(xg)[0, t].backward()


pairs = {
    "vanilla": (lambda: vanilla_gradient(model, x, t), lambda: Saliency(model).attribute(x, target=t, abs=False)),
    "guided": (lambda: guided_backprop(model, x, t),
               lambda: GuidedBackprop(model.module).attribute(norm(x), target=t)),
    "smoothgrad(25)": (lambda: smoothgrad(model, x, t, samples=25, batch_size=25),
                       lambda: NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=25,
                                                                      nt_samples_batch_size=25, stdevs=0.15,
                                                                      target=t, abs=False)),
    "integrated(50)": (lambda: integrated_gradients(model, x, t, steps=50, batch_size=25),
                       lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=50,
                                                                    internal_batch_size=25)),
}
print(f"threads={torch.get_num_threads()} repeats={repeats} (medians)")
for name, (ours, theirs) in pairs.items():
    a, b = median_seconds(ours, repeats), median_seconds(theirs, repeats)
    print(f"{name:<15} convlens {a:7.3f} s   captum {b:7.3f} s   ratio captum/convlens = {b / a:.2f}x")
fb = median_seconds(plain_fwd_bwd, repeats)
van = median_seconds(lambda: vanilla_gradient(model, x, t), repeats)
print(f"floor: vanilla {van:.3f} s / plain forward+backward {fb:.3f} s = {van / fb:.2f}x (claim <= 1.2x)")
