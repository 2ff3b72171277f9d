"""Attribution commands: ``saliency``, ``segment``, ``evaluate-saliency``."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from ..attribute import METHODS, Unit, deletion_insertion, grabcut, saliency
from ..attribute._common import resolve_targets
from ..attribute.cam import guided_grad_cam
from ..attribute.gradients import guided_backprop
from ..core.taps import RuleReport
from ..errors import UserError
from ..images import list_images, read_images
from ..show.attribution import curves_figure, mask_figure, saliency_figure
from ..show.figures import save
from ..results import atomic_write, save_array, save_image
from .common import COUNT, main, model_options

RAW = {"guided": guided_backprop, "guided_gradcam": guided_grad_cam}  # shown in colour
ALL = list(METHODS)


def _methods(text: str, *, baselines: bool = False) -> list[str]:
    names = ALL if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    known = ALL + (["random", "edge"] if baselines else [])
    for m in names:
        if m not in known:
            raise UserError(f"unknown method {m!r}; choose from {', '.join(known)} or all")
    return names


def _options(method: str, run, samples: int, steps: int, window: int, stride: int, layer: str | None) -> dict:  # noqa: ANN001
    if method == "smoothgrad":
        return {"samples": samples, "generator": run.generator()}
    if method == "integrated":
        return {"steps": steps}
    if method == "occlusion":
        return {"window": window, "stride": stride}
    opts: dict = {}
    if method in ("deconvnet", "guided", "guided_gradcam"):  # result.json: how many rectifier calls the rule changed
        opts["report"] = RuleReport("deconv" if method == "deconvnet" else "guided")
    if method in ("gradcam", "guided_gradcam") and layer:
        opts["layer"] = layer
    return opts


def _check_occluder(names: list[str], window: int, stride: int) -> None:
    if "occlusion" in names and stride > window:
        raise UserError(f"--stride {stride} is larger than --window {window}: pixels between the occluders "
                        f"would never be covered")


def _crop_info(model) -> dict:  # noqa: ANN001
    p = model.preprocess
    return {"size": list(p.size), "resize_shorter_side": p.resize, "center_crop": True,
            "interpolation": p.interpolation}


@main.command("saliency")
@click.argument("image")
@model_options("saliency")
@click.option("--method", default="all", show_default=True,
              help=f"{'|'.join(ALL)}|all, or several separated by commas.")
@click.option("--target", default=None, help="Class index or name to explain [default: the predicted class].")
@click.option("--unit", default=None, help="Explain a unit instead: LAYER:CHANNEL or LAYER:CHANNEL:Y:X.")
@click.option("--compare", is_flag=True, help="Maps for the top-2 classes side by side (bias check).")
@click.option("--samples", type=COUNT, default=25, show_default=True, help="SmoothGrad noisy samples.")
@click.option("--steps", type=COUNT, default=50, show_default=True, help="Integrated-gradients steps.")
@click.option("--window", type=COUNT, default=32, show_default=True, help="Occluder side in pixels.")
@click.option("--stride", type=COUNT, default=8, show_default=True, help="Occluder stride in pixels.")
@click.option("--layer", default=None, help="Grad-CAM layer [default: the last spatial layer].")
def saliency_cmd(run, image: str, method: str, target: str | None, unit: str | None, compare: bool,  # noqa: ANN001
                 samples: int, steps: int, window: int, stride: int, layer: str | None) -> None:
    """Which pixels matter: saliency maps of one image (gradient, DeconvNet, guided backprop, SmoothGrad,
    integrated gradients, Grad-CAM, guided Grad-CAM, occlusion), saved as <method>.npy and one figure."""
    model = run.model
    names = _methods(method)
    _check_occluder(names, window, stride)
    if unit and (target or compare):
        raise UserError("--unit explains a unit; it cannot be combined with --target or --compare")
    x = model.load(image)
    probs = model(x).softmax(-1)[0] if not unit else None
    if unit:
        u = Unit.parse(unit)
        resolve_targets(model, x, u)  # validates layer / channel / position
        names = [n for n in names if n not in ("gradcam", "guided_gradcam")]
        targets: list = [u]
    elif compare:
        targets = [int(i) for i in probs.topk(2).indices]
    else:
        targets = [model.class_index(target) if target is not None else int(probs.argmax())]
    rows, result = [], {"image": str(image), "crop": _crop_info(model), "targets": []}
    for ti, t in enumerate(targets):
        panels, entry = [], {"methods": {}}
        if isinstance(t, Unit):
            entry.update({"unit": str(t)})
        else:
            entry.update({"class": t, "label": model.label(t), "probability": float(probs[t])})
        for name in names:
            opts = _options(name, run, samples, steps, window, stride, layer)
            start = time.perf_counter()
            m = saliency(model, x, name, t, **opts)[0]
            seconds = time.perf_counter() - start
            raw = RAW[name](model, x, t, **({"layer": layer} if name == "guided_gradcam" and layer else {}))[0] \
                if name in RAW else None
            suffix = "" if len(targets) == 1 else f"_top{ti + 1}"
            path = run.out / f"{name}{suffix}.npy"
            save_array(path, m.detach().cpu().numpy().astype(np.float32))
            entry["methods"][name] = {"map": path.name, "seconds": round(seconds, 4), "shape": list(m.shape),
                                      **{k: v for k, v in opts.items() if k != "generator"}}
            panels.append((name, m, raw))
            click.echo(f"{name}: {seconds:.2f} s", err=True)
        what = str(t) if isinstance(t, Unit) else f"{model.label(t)} ({t}) p={float(probs[t]):.3f}"
        rows.append(saliency_figure(x[0], panels, title_text=f"{Path(image).name}: {what}"))
        result["targets"].append(entry)
    from ..show.figures import stack

    fig = rows[0] if len(rows) == 1 else stack(rows)
    save(fig, run.out / "saliency.png")
    first = result["targets"][0]
    result.update({"target": first.get("class", first.get("unit")), "label": first.get("label"),
                   "probability": first.get("probability"), "methods": first["methods"]})
    run.save({"saliency": result})


@main.command("segment")
@click.argument("image")
@model_options("segment")
@click.option("--method", default="gradcam", show_default=True, help="Saliency method that seeds GrabCut.")
@click.option("--target", default=None, help="Class index or name [default: the predicted class].")
def segment_cmd(run, image: str, method: str, target: str | None) -> None:  # noqa: ANN001
    """Segment the object without labels: GrabCut seeded by a saliency map; writes mask.png and cutout.png."""
    from PIL import Image

    model = run.model
    _methods(method)
    x = model.load(image)
    probs = model(x).softmax(-1)[0]
    t = model.class_index(target) if target is not None else int(probs.argmax())
    m = saliency(model, x, method, t)
    seg = grabcut(x, m)
    mask = seg.masks[0].numpy()
    save_image(Image.fromarray((mask * 255).astype(np.uint8)), run.out / "mask.png")
    save(model.preprocess.to_image(seg.cutout(x)[0]), run.out / "cutout.png")
    save(mask_figure(x[0], m[0], mask, title_text=f"{model.label(t)} ({t})"), run.out / "segment.png")
    save_array(run.out / f"{method}.npy", m[0].cpu().numpy().astype(np.float32))
    click.echo(f"mask covers {float(seg.area[0]):.1%} of the image", err=True)
    run.save({"segment": {"image": str(image), "crop": _crop_info(model), "method": method, "target": t,
                          "label": model.label(t), "probability": float(probs[t]), "area": float(seg.area[0]),
                          "mask": "mask.png", "cutout": "cutout.png"}})


@main.command("evaluate-saliency")
@click.argument("dataset")
@model_options("evaluate-saliency")
@click.option("--methods", default="gradient,guided,integrated,gradcam,occlusion,random,edge", show_default=True,
              help="Comma-separated methods (random and edge are the sanity floors), or all.")
@click.option("--limit", type=COUNT, default=50, show_default=True, help="Use at most this many images.")
@click.option("--steps", type=COUNT, default=50, show_default=True, help="Deletion / insertion steps.")
@click.option("--window", type=COUNT, default=32, show_default=True, help="Occluder side.")
@click.option("--stride", type=COUNT, default=8, show_default=True, help="Occluder stride.")
def evaluate_cmd(run, dataset: str, methods: str, limit: int, steps: int, window: int,  # noqa: ANN001
                 stride: int) -> None:
    """Faithfulness of saliency methods on a folder of images: deletion / insertion AUC (Petsiuk et al. 2018)."""
    from tqdm import tqdm

    model = run.model
    names = _methods(methods, baselines=True) if methods != "all" else ALL + ["random", "edge"]
    for b in ("random", "edge"):
        if b not in names:
            names.append(b)
    _check_occluder(names, window, stride)
    files = list_images(dataset)[:limit]
    if not files:
        raise UserError(f"no images in {dataset}")
    read = read_images(files, model.load)  # an unreadable or oversized file is skipped and listed
    files, skipped = read.files, read.skipped_json()
    dele = {m: [] for m in names}
    ins = {m: [] for m in names}
    secs = {m: 0.0 for m in names}
    fractions = None
    gen = run.generator()
    for f, x in zip(tqdm(files, desc="images", unit="img"), read.items):
        t = model(x).argmax(-1)
        for name in names:
            opts = _options(name, run, 25, 50, window, stride, None)
            if name == "random":
                opts = {"generator": gen}
            start = time.perf_counter()
            m = saliency(model, x, name, t, **opts)
            secs[name] += time.perf_counter() - start
            res = deletion_insertion(model, x, m, t, steps=steps, generator=gen)
            fractions = res.fractions
            dele[name].append(res.deletion[0])
            ins[name].append(res.insertion[0])
    table = {}
    click.echo(f"{'method':<16} {'deletion':>9} {'insertion':>9} {'s/img':>7}")
    for name in names:
        d, i = torch.stack(dele[name]), torch.stack(ins[name])
        table[name] = {"deletion_auc": float(torch.trapezoid(d, fractions).mean()),
                       "insertion_auc": float(torch.trapezoid(i, fractions).mean()),
                       "seconds_per_image": secs[name] / len(files)}
        r = table[name]
        click.echo(f"{name:<16} {r['deletion_auc']:>9.3f} {r['insertion_auc']:>9.3f} {r['seconds_per_image']:>7.2f}")
    with atomic_write(run.out / "table.md", "w") as fh:
        fh.write("| method | deletion AUC (lower is better) | insertion AUC (higher is better) | s / image |\n")
        fh.write("|---|---|---|---|\n")
        for name, r in table.items():
            fh.write(f"| {name} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | "
                     f"{r['seconds_per_image']:.2f} |\n")
    fig = curves_figure(fractions.tolist(), {m: torch.stack(dele[m]).mean(0).tolist() for m in names},
                        {m: torch.stack(ins[m]).mean(0).tolist() for m in names},
                        title_text=f"{len(files)} images, {model.name}")
    save(fig, run.out / "curves.png")
    run.save({"images": len(files), "methods": table, "steps": steps, "skipped": skipped})
