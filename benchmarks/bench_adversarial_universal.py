"""Claim: a universal perturbation at eps 10/255 built by convlens (batched SGD variant) on 400 ImageNet photos
fools efficientnet_lite0 on at least 50% of 400 *other* photos, reaches at least the held-out fooling rate of
IBM ART's UniversalPerturbation (DeepFool-based, one image at a time) built on the same 400 photos, and takes at
most a fifth of ART's time.

ART is capped so that it finishes on a CPU: one pass over the 400 photos (``max_iter=1``) with DeepFool as in
the original UAP code (``max_iter=10`` per image, overshoot ``0.02``, 10 candidate classes). Both fooling rates
are measured by the same function on the same held-out photos (split: even / odd rows of LABELS.csv).

    python benchmarks/bench_adversarial_universal.py [--epochs 2] [--art-passes 1] [--art-images 400]

With ``--art-images K`` the head-to-head (ours vs ART, time and held-out rate) uses the first K construction photos
for both, while the >= 50% claim still uses ours on all 400.
"""

from __future__ import annotations

import argparse
import csv
import random
import time

import numpy as np
import torch
from _common import SAMPLE, PixelNet
from torch import nn

import convlens
from convlens.adversarial import check_disjoint, fooling_rate, universal_perturbation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--art-passes", type=int, default=1)
    ap.add_argument("--eps", type=float, default=10 / 255)
    ap.add_argument("--save", default=None, help="Write our perturbation (.pt) here.")
    ap.add_argument("--art-images", type=int, default=400,
                    help="Build the head-to-head pair on the first K construction photos (ART is slow on CPU).")
    ap.add_argument("--subset-epochs", type=int, default=4, help="Our epochs on the K-photo subset.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    convlens.tune_allocator()
    model = convlens.load_model("efficientnet_lite0")
    with open(SAMPLE / "LABELS.csv") as fh:
        rows = list(csv.DictReader(fh))
    files = [SAMPLE / r["file"] for r in rows]
    x = torch.cat([model.load(files[i:i + 50]) for i in range(0, len(files), 50)])
    train, hold = x[0::2].contiguous(), x[1::2].contiguous()
    check_disjoint(train, hold)
    print(f"{len(train)} construction / {len(hold)} held-out photos, eps {args.eps * 255:.1f}/255, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    def ours_on(photos: torch.Tensor, epochs: int):  # built on ``photos``, measured on the held-out ones
        t0 = time.perf_counter()
        res = universal_perturbation(model, photos, eps=args.eps, epochs=epochs, batch_size=32,
                                     generator=torch.Generator().manual_seed(0))
        return res, time.perf_counter() - t0, fooling_rate(model, hold, res.perturbation)[0]

    ours, t_ours, rate_ours = ours_on(train, args.epochs)
    print(f"convlens SGD-UAP ({args.epochs} epochs, batch 32): {t_ours:.1f} s, train fooling "
          f"{ours.train_fooling_rate:.3f}, held-out fooling {rate_ours:.3f}, Linf*255 "
          f"{float(ours.perturbation.abs().max()) * 255:.3f}", flush=True)
    if args.save:
        torch.save(ours.perturbation, args.save)

    sub = train[:args.art_images]
    if len(sub) < len(train):  # head-to-head on a subset: ours again, on exactly ART's photos
        _, t_ours, rate_ours = ours_on(sub, args.subset_epochs)
        print(f"convlens SGD-UAP on the first {len(sub)} photos ({args.subset_epochs} epochs): {t_ours:.1f} s, "
              f"held-out fooling {rate_ours:.3f}", flush=True)

    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=PixelNet(model).eval(), loss=nn.CrossEntropyLoss(), input_shape=(3, 224, 224),
                            nb_classes=1000, clip_values=(0.0, 1.0), device_type="cpu")
    uap = UniversalPerturbation(clf, attacker="deepfool",
                                attacker_params={"max_iter": 10, "epsilon": 0.02, "nb_grads": 10, "verbose": False},
                                delta=0.2, max_iter=args.art_passes, eps=args.eps, norm=np.inf, batch_size=32,
                                verbose=False)
    random.seed(0)
    seen = [0]
    real_predict = clf.predict
    t_start = time.perf_counter()

    def counting_predict(x_np, batch_size=128, **kw):
        if len(x_np) == 1:
            seen[0] += 1
            if seen[0] % 25 == 0:
                print(f"  ART: {seen[0]} single-image predictions, {time.perf_counter() - t_start:.0f} s", flush=True)
        return real_predict(x_np, batch_size=batch_size, **kw)

    clf.predict = counting_predict  # type: ignore[method-assign]
    t0 = time.perf_counter()
    uap.generate(sub.numpy())
    t_art = time.perf_counter() - t0
    v_art = torch.from_numpy(np.asarray(uap.noise, dtype=np.float32))[0]
    rate_art = fooling_rate(model, hold, v_art)[0]
    print(f"ART UniversalPerturbation (DeepFool, {args.art_passes} pass over {len(sub)} photos): {t_art:.1f} s, "
          f"train fooling {uap.fooling_rate:.3f}, held-out fooling {rate_art:.3f}, "
          f"Linf*255 {float(v_art.abs().max()) * 255:.3f}")
    print(f"time ratio ours/ART {t_ours / t_art:.3f} (claim <= 0.2); held-out fooling ours {rate_ours:.3f} vs ART "
          f"{rate_art:.3f} (claim ours >= ART and >= 0.5)")
    print(f"claim holds: {t_ours <= 0.2 * t_art and rate_ours >= rate_art and rate_ours >= 0.5}")


if __name__ == "__main__":
    main()
