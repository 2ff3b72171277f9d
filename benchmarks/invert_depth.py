"""Feature inversion: does the relative feature error rise with depth? (issue 13, Mahendran & Vedaldi 2015)

Inverts one or more photos at the default layers (stem, four stages, class scores) with the one recipe of
:func:`convlens.invert` for every layer, and prints per layer the relative feature error ||Phi(x) - Phi_0|| / ||Phi_0|| and the pixel error
||x - x_0|| / ||x_0||. Usage:
    python benchmarks/invert_depth.py [--size 128] [--steps N] [--layers a,b] PHOTO...
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from convlens.models import load_model
from convlens.synthesize.invert import default_invert_layers, invert

p = argparse.ArgumentParser()
p.add_argument("photos", nargs="+")
p.add_argument("--size", type=int, default=128)
p.add_argument("--steps", type=int, default=200)
p.add_argument("--layers", default=None)
a = p.parse_args()
torch.set_num_threads(1)
model = load_model("efficientnet_lite0")
names = a.layers.split(",") if a.layers else default_invert_layers(model)
for photo in a.photos:
    x = F.interpolate(model.load(photo), size=(a.size, a.size), mode="bilinear", align_corners=False)
    t = time.perf_counter()
    res = invert(model, x, names, steps=a.steps)
    print(f"{photo} ({a.steps} steps, {a.size} px, {time.perf_counter() - t:.0f} s)")
    for n in names:
        print(f"  {n:>12}: feature error {res.errors[n]:.3f}   pixel error {res.pixel_errors[n]:.3f}")
