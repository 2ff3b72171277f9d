"""Claim: on 200 correctly classified ImageNet photos, convlens' FGSM and PGD (eps 2/255 and 8/255) fool
efficientnet_lite0 at least as often as torchattacks at the same settings, in no more time per batch.

Same model wrapper, same images, same batches, same eps / alpha / steps, interleaved in one process (the order
alternates batch by batch so neither side always runs on a warmer cache). Also prints the success rate after
an 8-bit PNG round trip and the transfer rate of the PGD images to efficientnet_lite2.

    python benchmarks/bench_adversarial_attacks.py [--n 200] [--batch 25] [--steps 10] [--alpha-frac 0.25]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time

import torch
import torchattacks
from _common import SAMPLE, PixelNet

import convlens
from convlens.adversarial import attack, norms, quantize, transfer


def correct_photos(model: convlens.Model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with open(SAMPLE / "LABELS.csv") as fh:
        rows = list(csv.DictReader(fh))
    xs, ys = [], []
    for i in range(0, len(rows), 50):
        chunk = rows[i:i + 50]
        x = model.load([SAMPLE / r["file"] for r in chunk])
        y = torch.tensor([int(r["class_index"]) for r in chunk])
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        xs.append(x[ok]); ys.append(y[ok])
        if sum(len(v) for v in ys) >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--alpha-frac", type=float, default=0.25, help="PGD step as a fraction of eps.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    convlens.tune_allocator()
    model = convlens.load_model("efficientnet_lite0")
    net = PixelNet(model).eval()
    x, y = correct_photos(model, args.n)
    print(f"{len(x)} correctly classified photos, batch {args.batch}, torch threads {torch.get_num_threads()}")
    rows = []
    keep = {}
    for method, k in (("fgsm", 2), ("fgsm", 8), ("pgd", 8), ("pgd", 2)):
        if True:
            eps = k / 255
            alpha = eps * args.alpha_frac
            theirs_atk = (torchattacks.FGSM(net, eps=eps) if method == "fgsm" else
                          torchattacks.PGD(net, eps=eps, alpha=alpha, steps=args.steps, random_start=True))
            gen = torch.Generator().manual_seed(0)
            torch.manual_seed(0)
            ours_adv, theirs_adv, t_ours, t_theirs = [], [], [], []
            for b, i in enumerate(range(0, len(x), args.batch)):
                xb, yb = x[i:i + args.batch], y[i:i + args.batch]
                order = ("ours", "theirs") if b % 2 == 0 else ("theirs", "ours")
                for who in order:
                    t0 = time.perf_counter()
                    if who == "ours":
                        ours_adv.append(attack(model, xb, yb, method=method, eps=eps, alpha=alpha, steps=args.steps,
                                               generator=gen))
                        t_ours.append(time.perf_counter() - t0)
                    else:
                        theirs_adv.append(theirs_atk(xb, yb).detach())
                        t_theirs.append(time.perf_counter() - t0)
            res = {}
            for who, adv in (("ours", torch.cat(ours_adv)), ("torchattacks", torch.cat(theirs_adv))):
                with torch.no_grad():
                    pred = torch.cat([model(adv[i:i + 50]).argmax(1) for i in range(0, len(adv), 50)])
                    pred_png = torch.cat([model(quantize(adv[i:i + 50])).argmax(1) for i in range(0, len(adv), 50)])
                linf, l2 = norms(adv, x)
                res[who] = {"success": float((pred != y).float().mean()), "png": float((pred_png != y).float().mean()),
                             "linf": float(linf.max()), "l2": float(l2.mean()), "adv": adv, "fooled": pred != y}
            mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
            keep[(method, k)] = res
            rows.append((f"{method} eps={k}/255", res["ours"]["success"], res["torchattacks"]["success"],
                         res["ours"]["png"], res["torchattacks"]["png"], mo, mt, res["ours"]["linf"] * 255,
                         res["torchattacks"]["linf"] * 255))
            print(f"{rows[-1][0]:<16} success ours {rows[-1][1]:.3f} torchattacks {rows[-1][2]:.3f} | after PNG "
                  f"{rows[-1][3]:.3f} / {rows[-1][4]:.3f} | median s/batch {mo:.2f} / {mt:.2f} (ratio {mo / mt:.2f}) "
                  f"| max Linf*255 {rows[-1][7]:.3f} / {rows[-1][8]:.3f} | mean L2 {res['ours']['l2']:.3f} / "
                  f"{res['torchattacks']['l2']:.3f}", flush=True)
    print("\nsetting            ours   torchattacks  ours_png  ta_png  s/batch_ours  s/batch_ta  ratio")
    for r in rows:
        print(f"{r[0]:<16} {r[1]:7.3f} {r[2]:10.3f} {r[3]:10.3f} {r[4]:7.3f} {r[5]:12.2f} {r[6]:11.2f} {r[5] / r[6]:6.2f}")
    ok = all(r[1] >= r[2] and r[5] <= r[6] for r in rows)
    print(f"claim (success >= torchattacks and median time per batch <= torchattacks, every setting): {ok}")
    lite2 = convlens.load_model("efficientnet_lite2")
    for who in ("ours", "torchattacks"):
        if ("pgd", 8) not in keep:
            break
        r = keep[("pgd", 8)][who]
        tr = transfer(lite2, x, r["adv"], y, fooled_on_source=r["fooled"])
        print(f"transfer of PGD 8/255 ({who}) to efficientnet_lite2: clean acc {tr.clean_accuracy:.3f}, "
              f"robust acc {tr.robust_accuracy:.3f}, transfer rate {tr.transfer_rate:.3f}")


if __name__ == "__main__":
    main()
