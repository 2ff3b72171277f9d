"""Faithfulness (deletion / insertion AUC, Petsiuk et al. 2018) of every convlens method, RISE included, and of
Captum's and pytorch-grad-cam's maps on the same shared photos -- same metric code for all, so equal methods must
agree -- and the cost of the curves per image before (one map at a time, eager PyTorch) and after (all maps of an
image in one batched stream with shared end points, on the fastest checked engine).

Usage: python benchmarks/bench_attribute_faithfulness.py [N_IMAGES=50] [STEPS=50] [OCCLUSION_STRIDE=8]
           [METHODS=all] [BEFORE_IMAGES=2] [RISE_MASKS=2000] [PEERS=1] [PAPER_CANVAS=0]

METHODS is a comma-separated list of convlens methods (``all``: every registered one plus random and edge);
``BASE@blurS`` adds the map of method BASE (which must be listed before it) blurred by a Gaussian of sigma S
pixels -- a post-processing tried to raise insertion (it costs only its curves);
BEFORE_IMAGES is how many images also run the old one-map-at-a-time curves for the before/after timing (0: none).
PAPER_CANVAS=1 also scores every map with the insertion canvas of Petsiuk et al.'s released code (a Gaussian of about
1.1 px instead of convlens' 8 px), to compare with the paper's published numbers.
Per-image numbers are appended to ``faithfulness_rows.jsonl`` as they come, so a long run can be read part-way.
"""

import json
import sys
import time

import torch
from _common import SAMPLE, PixelNet

import convlens
from convlens.attribute import METHODS, deletion_insertion_many, saliency
from convlens.attribute.methods import RANDOM_METHODS
from convlens.attribute.occlusion import _filler


def before(model, x, maps, target, steps, generator, batch_size=64):
    """The curves as convlens computed them before: one map at a time, every step image (end points too) run
    through eager PyTorch in batches of 64 -- kept here verbatim as the 'before' of the timing."""
    n, _, H, W = x.shape
    total = H * W
    counts = [round(total * k / steps) for k in range(steps + 1)]
    black, blurred = torch.zeros_like(x), _filler(x, "blur")
    out = {}
    for name, m in maps.items():
        dele, ins = torch.empty(n, steps + 1), torch.empty(n, steps + 1)
        for i in range(n):
            noise = torch.rand(total, generator=generator) * 1e-6 * (m[i].abs().max().item() + 1e-12)
            order = torch.argsort(m[i].flatten().float().cpu() + noise, descending=True)
            rank = torch.empty(total, dtype=torch.long)
            rank[order] = torch.arange(total)
            rank = rank.view(1, 1, H, W)
            thresholds = torch.tensor(counts).view(-1, 1, 1, 1)
            for curve, start, end in ((dele, x[i], black[i]), (ins, blurred[i], x[i])):
                probs = []
                for s0 in range(0, steps + 1, batch_size):
                    chosen = rank < thresholds[s0:s0 + batch_size]
                    batch = torch.where(chosen, end.unsqueeze(0), start.unsqueeze(0))
                    with torch.no_grad():
                        probs.append(model(batch).float().softmax(-1)[:, int(target[i])])
                curve[i] = torch.cat(probs)
        fr = torch.tensor(counts, dtype=torch.float32) / total
        out[name] = (float(torch.trapezoid(dele, fr).mean()), float(torch.trapezoid(ins, fr).mean()))
    return out


def blur_map(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """A map ``(N, H, W)`` smoothed by a Gaussian of ``sigma`` pixels (reflecting borders)."""
    r = max(1, round(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(m.dtype)
    y = torch.nn.functional.pad(m[:, None], (r, r, r, r), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))[:, 0]


def main() -> None:
    convlens.tune_allocator()
    a = sys.argv[1:]
    n_images = int(a[0]) if len(a) > 0 else 50
    steps = int(a[1]) if len(a) > 1 else 50
    stride = int(a[2]) if len(a) > 2 else 8
    names = list(METHODS) + ["random", "edge"] if len(a) <= 3 or a[3] == "all" else a[3].split(",")
    n_before = int(a[4]) if len(a) > 4 else 2
    rise_masks = int(a[5]) if len(a) > 5 else 2000
    with_peers = (int(a[6]) if len(a) > 6 else 1) == 1
    paper = (int(a[7]) if len(a) > 7 else 0) == 1
    files = convlens.list_images(SAMPLE)[:n_images]
    model = convlens.load_model("efficientnet_lite0")
    options = {"smoothgrad": {"samples": 25}, "integrated": {"steps": 50}, "occlusion": {"window": 32, "stride": stride},
               "rise": {"masks": rise_masks}}
    peers = {}
    if with_peers:
        from captum.attr import IntegratedGradients, Occlusion, Saliency
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam_peer = GradCAM(model=PixelNet(model), target_layers=[model.layer(model.layers.last_spatial())])
        peers = {
            "captum:Saliency": lambda x, t: Saliency(model).attribute(x, target=t).amax(1),
            "captum:IntegratedGradients": lambda x, t: IntegratedGradients(model).attribute(
                x, target=t, n_steps=50, internal_batch_size=25).abs().amax(1),
            "captum:Occlusion": lambda x, t: Occlusion(lambda z: model(z).softmax(-1)).attribute(
                x, sliding_window_shapes=(3, 32, 32), strides=(3, stride, stride), target=t,
                perturbations_per_eval=64)[:, 0],
            "grad-cam:GradCAM": lambda x, t: torch.from_numpy(cam_peer(input_tensor=x.clone().requires_grad_(True),
                                                                       targets=[ClassifierOutputTarget(int(t))])),
        }
    gen = torch.Generator().manual_seed(0)
    rows = {name: [] for name in names + list(peers)}
    paper_rows = {name: [] for name in rows}
    secs = {name: 0.0 for name in rows}
    curve_secs, before_secs, after_secs, engine = [], [], [], "torch"
    curve_cpu, p_clean = [], []
    log = open("faithfulness_rows.jsonl", "a")  # noqa: SIM115 -- appended to while the run goes
    for k, f in enumerate(files):
        x = model.load(f)
        t = model(x).argmax(-1)
        maps = {}
        for name in rows:
            s = time.perf_counter()
            if name in peers:
                m = peers[name](x, t)
            elif "@blur" in name:
                base, sigma = name.split("@blur")
                m = blur_map(maps[base], float(sigma))
            else:
                opts = dict(options.get(name, {}))
                if name in RANDOM_METHODS:
                    opts["generator"] = gen
                m = saliency(model, x, name, t, **opts)
            secs[name] += time.perf_counter() - s
            maps[name] = m.detach().float()
        s, c = time.perf_counter(), time.process_time()
        res = deletion_insertion_many(model, x, maps, t, steps=steps, generator=torch.Generator().manual_seed(1))
        curve_secs.append(time.perf_counter() - s)
        curve_cpu.append(time.process_time() - c)
        p_clean.append(float(model(x).softmax(-1)[0, int(t)]))
        engine = next(iter(res.values())).engine
        for name, r in res.items():
            rows[name].append((float(r.deletion_auc[0]), float(r.insertion_auc[0])))
        if paper:
            for name, r in deletion_insertion_many(model, x, maps, t, steps=steps, blur=1.1,
                                                   generator=torch.Generator().manual_seed(1)).items():
                paper_rows[name].append(float(r.insertion_auc[0]))
        if k < n_before:  # the same curves the old way, for the before/after timing (ours only, as before)
            ours = {m: v for m, v in maps.items() if m not in peers}
            s = time.perf_counter()
            old = before(model, x, ours, t, steps, torch.Generator().manual_seed(1))
            before_secs.append(time.perf_counter() - s)
            s = time.perf_counter()
            deletion_insertion_many(model, x, ours, t, steps=steps, generator=torch.Generator().manual_seed(1))
            after_secs.append(time.perf_counter() - s)
            worst = max(max(abs(old[m][0] - rows[m][-1][0]), abs(old[m][1] - rows[m][-1][1])) for m in ours)
            print(f"image {k}: {len(ours)} maps, curves before {before_secs[-1]:.1f} s, after {after_secs[-1]:.1f} s "
                  f"({engine}); largest AUC difference {worst:.1e}", flush=True)
        log.write(json.dumps({"file": f.name, "target": int(t), "curve_seconds": curve_secs[-1],
                              "aucs": {m: rows[m][-1] for m in rows}}) + "\n")
        log.flush()
    print(f"{len(files)} images, {steps} steps, occlusion window 32 stride {stride}, RISE {rise_masks} masks, "
          f"model {model.name}, curves on {engine}")
    print(f"{'method':<28} {'deletion':>9} {'insertion':>9} {'s/img':>7}"
          + (f" {'insertion, paper canvas':>24}" if paper else ""))
    for name, vals in rows.items():
        d = sum(v[0] for v in vals) / len(vals)
        i = sum(v[1] for v in vals) / len(vals)
        extra = f" {sum(paper_rows[name]) / len(vals):>24.3f}" if paper else ""
        print(f"{name:<28} {d:>9.3f} {i:>9.3f} {secs[name] / len(files):>7.2f}{extra}")
    print(f"curves of all {len(rows)} maps: {sum(curve_secs) / len(curve_secs):.1f} s per image (wall), "
          f"{sum(curve_cpu) / len(curve_cpu):.1f} CPU-s per image over {torch.get_num_threads()} threads "
          f"(wall on {torch.get_num_threads()} free cores: about {sum(curve_cpu) / len(curve_cpu) / torch.get_num_threads():.1f} s)")
    print(f"mean probability of the explained class on the full image: {sum(p_clean) / len(p_clean):.3f}")
    if before_secs:
        b, af = sum(before_secs) / len(before_secs), sum(after_secs) / len(after_secs)
        print(f"curves of our {len(rows) - len(peers)} maps per image: before {b:.1f} s, after {af:.1f} s "
              f"({b / af:.1f}x), {len(before_secs)} images")


if __name__ == "__main__":
    main()
