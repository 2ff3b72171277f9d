"""Multifaceted visualization (Nguyen, Yosinski & Clune 2016): are the facets different, and more different than
restarts of one facet with other seeds? (issue 13)

Members: every dog photo of the shared ImageNet sample (classes 151-268, about 95 breeds, one photo each), the
concept; each facet's target is its own breed (the class the model gives its start's photos most), or with
--class one breed for all (--class most: the breed the model gives most of the photos). Prints the cluster
sizes, the mean cosine distance between the facets' penultimate features and between each facet and its restart,
and the model's p(target) per facet. Usage:
    python benchmarks/bench_multifaceted.py [--preset yosinski] [--size 160] [--steps N] [--k 3] [--out facets.png]
"""

from __future__ import annotations

import argparse
import csv
import time

import torch
from _common import SAMPLE

import convlens
from convlens.show import figures as F
from convlens.synthesize.visualize import judge_probs, multifaceted

p = argparse.ArgumentParser()
p.add_argument("--preset", default="yosinski")
p.add_argument("--class", dest="cls", default=None,
               help="one target for every facet ('most': the breed the model gives most photos)")
p.add_argument("--size", type=int, default=160)
p.add_argument("--steps", type=int, default=None)
p.add_argument("--k", type=int, default=3)
p.add_argument("--nearest", type=int, default=15)
p.add_argument("--restarts", type=int, default=1)
p.add_argument("--free", action="store_true", help="decay and clip towards grey, not the start")
p.add_argument("--out", default=None)
a = p.parse_args()
torch.set_num_threads(1)
model = convlens.load_model("efficientnet_lite0")
with open(SAMPLE / "LABELS.csv") as fh:
    dogs = [SAMPLE / r["file"] for r in csv.DictReader(fh) if 151 <= int(r["class_index"]) <= 268]
target: int | str | None = a.cls
if a.cls == "most":
    with torch.no_grad():
        answers = model(model.load(dogs)).argmax(-1).tolist()
    target = max(set(answers), key=answers.count)
t = time.perf_counter()
res = multifaceted(model, target, dogs, k=a.k, nearest=a.nearest, restarts=a.restarts, preset=a.preset,
                   anchored=not a.free, size=a.size, steps=a.steps, seed=0)
probs = judge_probs(model, res.result.images, res.targets)
names = ", ".join(model.label(c) for c in res.targets)
print(f"{len(dogs)} dog photos -> {names}, preset {a.preset}, {a.size} px, k={a.k}, "
      f"nearest={a.nearest}, {time.perf_counter() - t:.0f} s")
print(f"  cluster sizes {res.sizes}   p(target) per facet {' '.join(f'{v:.3f}' for v in probs)}")

def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


print(f"  facet distance {fmt(res.facet_distance)}   restart distance {fmt(res.restart_distance)}")
if a.out:
    rows = [F.grid([F.to_rgb(s) for s in res.starts], ncols=a.k, labels=[f"start: {min(n, a.nearest)} of {n} photos" for n in res.sizes]),
            F.grid([F.to_rgb(im) for im in res.result.images.cpu()], ncols=a.k,
                   labels=[f"{model.label(c)[:18]}: p={v:.2f}" for c, v in zip(res.targets, probs)])]
    rows += [F.grid([F.to_rgb(im) for im in r.images.cpu()], ncols=a.k,
                    labels=[f"facet {j}, seed {i + 1}" for j in range(a.k)]) for i, r in enumerate(res.restarts)]
    F.stack(rows).save(a.out)
