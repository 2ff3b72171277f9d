"""How much of a photo's layout does each layer's code hold? (issue 13, feature inversion from the class scores)

For each photo, the relative code distance ``||Phi(x') - Phi(x)|| / ||Phi(x)||`` at the default inversion layers of
three images x' that keep the photo's content but not its layout -- the mirror image, the photo with its four
quadrants swapped -- and of a grey image, which keeps nothing. Where the mirror or the swapped photo is as close
as a reconstruction gets (``invert_depth.py`` prints those errors), the code cannot pin the layout down.
Usage: python benchmarks/invert_layout.py PHOTO...
"""

from __future__ import annotations

import sys

import torch

from convlens.core.taps import Tap
from convlens.models import load_model
from convlens.synthesize.invert import default_invert_layers

torch.set_num_threads(1)
model = load_model("efficientnet_lite0")
names = default_invert_layers(model)
for photo in sys.argv[1:]:
    x = model.load(photo)
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    swapped = torch.cat([torch.cat([x[..., h:, w:], x[..., h:, :w]], -1),
                         torch.cat([x[..., :h, w:], x[..., :h, :w]], -1)], -2)
    batch = torch.cat([x, x.flip(-1), swapped, torch.full_like(x, 0.5)])
    print(photo)
    with Tap(model, names, detach=True) as tap:
        tap.run(batch)
        for n in names:
            a = tap.outputs[n].flatten(1)
            d = ((a[1:] - a[:1]).norm(dim=1) / a[0].norm()).tolist()
            print(f"  {n:>12}: mirrored {d[0]:.3f}   quadrants swapped {d[1]:.3f}   grey {d[2]:.3f}")
