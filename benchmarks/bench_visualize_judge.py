"""Class visualization presets: does a network that did not make the image recognise it? (issue 13)

Makes one image per class with each preset (simonyan, yosinski, lucid) on the embedded EfficientNet-Lite0, at the
presets' default steps and the model's input size, and prints p(class) under two judges that did not make them
(EfficientNet-Lite1 and -Lite2, same ImageNet labels), measured on the 8-bit PNG's pixels, per class and the mean.
Default classes: those the tour visualizes (the model's answers on the tour photos, full profile). Usage:
    python benchmarks/bench_visualize_judge.py [--presets yosinski,lucid] [--classes flamingo,pelican]
        [--size 224] [--steps N] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import convlens
from convlens.show import figures as F
from convlens.show.tour import TourContext, tour_images
from convlens.synthesize.visualize import judge_probs, visualize_class

p = argparse.ArgumentParser()
p.add_argument("--presets", default="simonyan,yosinski,lucid")
p.add_argument("--classes", default=None, help="comma-separated names or indices (default: the tour's classes)")
p.add_argument("--size", type=int, default=None)
p.add_argument("--steps", type=int, default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default=None, help="folder for one PNG row per preset")
a = p.parse_args()
torch.set_num_threads(1)
model = convlens.load_model("efficientnet_lite0")
judges = [convlens.load_model("efficientnet_lite1"), convlens.load_model("efficientnet_lite2")]
if a.classes:
    classes = [model.class_index(int(c) if c.isdigit() else c) for c in a.classes.split(",")]
else:
    photos, _ = tour_images(None)
    ctx = TourContext(model, photos, Path(tempfile.mkdtemp()), quick=False, seed=0)
    classes = ctx.classes(4)
print(f"classes: {', '.join(f'{model.label(c)} ({c})' for c in classes)}; judges lite1 / lite2; "
      f"size {a.size or model.preprocess.size[0]}, seed {a.seed}")
table: dict[str, list[list[float]]] = {}
for name in a.presets.split(","):
    t = time.perf_counter()
    res = visualize_class(model, classes, preset=name, size=a.size, steps=a.steps, seed=a.seed)
    table[name] = [judge_probs(j, res.images, classes) for j in judges]
    std = res.images.std(dim=(1, 2, 3)).mul(255).mean()
    print(f"  {name}: {time.perf_counter() - t:.0f} s, mean pixel std {std:.1f}/255")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        labels = [f"{model.label(c)[:18]}\n{table[name][0][i]:.2f} / {table[name][1][i]:.2f}"
                  for i, c in enumerate(classes)]
        F.grid([F.to_rgb(im) for im in res.images.cpu()], ncols=len(classes), labels=labels).save(
            Path(a.out) / f"{name}.png")
width = max(len(model.label(c)) for c in classes) + 2
print(f"{'class':<{width}}" + "".join(f"{n:>16}" for n in table))
for i, c in enumerate(classes):
    print(f"{model.label(c):<{width}}" + "".join(f"{v[0][i]:>8.3f}{v[1][i]:>8.3f}" for v in table.values()))
print(f"{'mean':<{width}}" + "".join(f"{sum(v[0]) / len(classes):>8.3f}{sum(v[1]) / len(classes):>8.3f}"
                                     for v in table.values()))
