"""Attribution commands: ``saliency`` (an image or a folder), ``segment``, ``audit``, ``evaluate-saliency``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..attribute import CAM_METHODS, METHODS, Unit, grabcut, saliency
from ..attribute.explain import explain
from ..errors import UserError
from ..images import list_images, read_images
from ..results import atomic_write, save_array, save_image
from ..show.attribution import curves_figure, explanation_figure, mask_figure
from ..show.figures import save
from .common import COUNT, POSITIVE, main, model_options

ALL = list(METHODS)


def _methods(text: str, *, baselines: bool = False) -> list[str]:
    names = ALL if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    known = ALL + (["random", "edge"] if baselines else [])
    for m in names:
        if m not in known:
            raise UserError(f"unknown method {m!r}; choose from {', '.join(known)} or all")
    return names


def _options(method: str, samples: int, steps: int, window: int, stride: int, layer: str | None,
             masks: int = 2000) -> dict:
    """The command-line knobs that apply to ``method``."""
    if method == "smoothgrad":
        return {"samples": samples}
    if method == "integrated":
        return {"steps": steps}
    if method == "occlusion":
        return {"window": window, "stride": stride}
    if method == "rise":
        return {"masks": masks}
    if method in CAM_METHODS and layer:
        return {"layer": layer}
    return {}


def _check_occluder(names: list[str], window: int, stride: int) -> None:
    if "occlusion" in names and stride > window:
        raise UserError(f"--stride {stride} is larger than --window {window}: pixels between the occluders "
                        f"would never be covered")


def _crop_info(model) -> dict:
    p = model.preprocess
    return {"size": list(p.size), "resize_shorter_side": p.resize, "center_crop": True,
            "interpolation": p.interpolation}


@main.command("saliency")
@click.argument("image")
@model_options("saliency")
@click.option("--method", default=None,
              help=f"{'|'.join(ALL)}|all, or several separated by commas [default: all for an image, gradcam for a "
                   f"folder].")
@click.option("--target", default=None, help="Class index or name to explain [default: the predicted class].")
@click.option("--unit", default=None, help="Explain a unit instead: LAYER:CHANNEL or LAYER:CHANNEL:Y:X.")
@click.option("--compare", is_flag=True, help="Maps for the top-2 classes side by side (bias check).")
@click.option("--samples", type=COUNT, default=25, show_default=True, help="SmoothGrad noisy samples.")
@click.option("--steps", type=COUNT, default=50, show_default=True, help="Integrated-gradients steps.")
@click.option("--window", type=COUNT, default=32, show_default=True, help="Occluder side in pixels.")
@click.option("--stride", type=COUNT, default=8, show_default=True, help="Occluder stride in pixels.")
@click.option("--layer", default=None, help="CAM layer(s), separated by commas [default: the last spatial layer].")
@click.option("--masks", "rise_masks", type=COUNT, default=2000, show_default=True, help="RISE random masks.")
@click.option("--compare-model", default=None,
              help="Folder only: a second model; its maps beside the first's, their rank correlation per image.")
@click.option("--batch-size", type=COUNT, default=8, show_default=True, help="Folder only: images per batch.")
@click.option("--fresh", is_flag=True, help="Folder only: recompute every map (default: reuse maps whose model, "
                                           "method, options and class are unchanged).")
@click.option("--cell", type=COUNT, default=180, show_default=True, help="Folder only: contact-sheet cell side.")
def saliency_cmd(run, image: str, method: str | None, target: str | None, unit: str | None,
                 compare: bool, samples: int, steps: int, window: int, stride: int, layer: str | None,
                 rise_masks: int, compare_model: str | None, batch_size: int, fresh: bool, cell: int) -> None:
    """Which pixels matter: saliency maps of one image or of every image of a folder (gradient, DeconvNet, guided
    backprop, SmoothGrad, integrated gradients, Grad-CAM, guided Grad-CAM, occlusion, RISE), saved as
    <method>.npy and figures; a folder also gets full-resolution overlays with a colour bar, transparent
    overlays and one contact sheet, and --compare-model B compares two models' maps."""
    if Path(image).is_dir():
        if unit or compare:
            raise UserError("--unit and --compare explain one image; for a folder use --target or --compare-model")
        _saliency_folder(run, image, _methods(method or "gradcam"), target, samples, steps, window, stride, layer,
                         rise_masks, compare_model, batch_size, fresh, cell)
        return
    if compare_model:
        raise UserError("--compare-model compares two models over a folder: give a folder")
    names = _methods(method or "all")
    _check_occluder(names, window, stride)
    if unit and (target or compare):
        raise UserError("--unit explains a unit; it cannot be combined with --target or --compare")
    model = run.model
    x = model.load(image)
    opts = {m: _options(m, samples, steps, window, stride, layer, rise_masks) for m in names}
    exp = explain(model, x, names, Unit.parse(unit) if unit else target, compare=2 if compare else 1, options=opts,
                  generator=run.generator(), progress=lambda m, s: click.echo(f"{m}: {s:.2f} s", err=True))
    files = {}
    for i, t in enumerate(exp.targets):
        for name, m in t.maps.items():
            path = run.out / f"{name}{'' if len(exp.targets) == 1 else f'_top{i + 1}'}.npy"
            save_array(path, m.map.cpu().numpy().astype(np.float32))
            files[(i, name)] = path.name
    save(explanation_figure(exp, title_text=Path(image).name), run.out / "saliency.png")
    run.save({"saliency": {"image": str(image), "crop": _crop_info(model), **exp.to_dict(files)}})


@main.command("segment")
@click.argument("image")
@model_options("segment")
@click.option("--method", default="gradcam", show_default=True, help="Saliency method that seeds GrabCut.")
@click.option("--target", default=None, help="Class index or name [default: the predicted class].")
def segment_cmd(run, image: str, method: str, target: str | None) -> None:
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


def _saliency_folder(run, folder: str, names: list[str], target: str | None, samples: int, steps: int,
                     window: int, stride: int, layer: str | None, rise_masks: int, compare_model: str | None,
                     batch_size: int, fresh: bool, cell: int) -> None:
    """``convlens saliency DIR``: maps of every image, overlays, contact sheet; optionally a second model."""
    from tqdm import tqdm

    from ..attribute.folder import compare_maps, crop_box, saliency_folder
    from ..images import load_image
    from ..models import load_model
    from ..show.attribution import alpha_overlay, compare_figure, contact_sheet, overlay_with_colorbar
    from ..show.figures import stack

    model = run.model
    files = list_images(folder)
    if not files:
        raise UserError(f"no images in {folder}")
    t = model.class_index(target) if target is not None else None
    opts = {m: _options(m, samples, steps, window, stride, layer, rise_masks) for m in names}
    with tqdm(total=len(files), desc=f"saliency {model.name}", unit="img") as bar:
        res = saliency_folder(model, folder, names, run.out, options=opts, target=t, batch_size=batch_size,
                              seed=run.seed, resume=not fresh, progress=bar.update)
    tiles, entries = [], []
    for item in tqdm(res.items, desc="figures", unit="img"):
        photo = None
        entry = {"file": item.file, "stem": item.stem, "target": item.target, "label": item.label,
                 "probability": item.probability, "methods": {}}
        for name in names:
            npy = Path(item.maps[name])
            over, alpha = npy.with_name(f"{name}_overlay.png"), npy.with_name(f"{name}_alpha.png")
            if not (item.reused[name] and over.is_file() and alpha.is_file()):
                photo = photo or load_image(item.file)
                box = crop_box(photo.size, model)
                m = item.load(name)
                text = f"{item.stem}: {item.label} ({item.target}) p={item.probability:.3f} -- {name}"
                save(overlay_with_colorbar(photo, m, box, method=name, caption_text=text), over)
                alpha.parent.mkdir(parents=True, exist_ok=True)
                alpha_overlay(photo.size, m, box, method=name).save(alpha)  # RGBA kept (save() makes RGB)
            from PIL import Image

            with Image.open(over) as im:
                thumb = im.convert("RGB")
                thumb.thumbnail((cell, cell))
            tiles.append((thumb, f"{item.stem} {item.label[:18]} {item.probability:.2f}"))
            entry["methods"][name] = {"map": str(npy.relative_to(run.out)), "overlay": str(over.relative_to(run.out)),
                                      "alpha": str(alpha.relative_to(run.out)), "reused": item.reused[name]}
        entries.append(entry)
    sheet = contact_sheet(tiles, cell=cell, ncols=len(names) if len(names) > 1 else None,
                          title_text=f"{folder}: {', '.join(names)} on {model.name}")
    save(sheet, run.out / "contact_sheet.png")
    total = sum(res.seconds.values())
    click.echo(f"{res.computed} maps computed ({total:.1f} s), {res.reused} reused", err=True)
    result: dict[str, Any] = {"folder": str(folder), "images": len(res.items), "methods": names, "options": res.options,
              "seconds": res.seconds, "computed": res.computed, "reused": res.reused, "fingerprint": res.fingerprint,
              "crop": _crop_info(model), "contact_sheet": "contact_sheet.png", "items": entries,
              "skipped": [{"file": f, "reason": r} for f, r in res.skipped]}
    if compare_model:
        other = load_model(compare_model, device=run.device)
        same = other.num_classes == model.num_classes
        with tqdm(total=len(files), desc=f"saliency {other.name}", unit="img") as bar:
            res_b = saliency_folder(other, folder, names, run.out / "compare" / _safe(compare_model), options=opts,
                                    target=[i.target for i in res.items] if same else None, batch_size=batch_size,
                                    seed=run.seed, resume=not fresh, progress=bar.update)
        result["compare"] = {"model": compare_model, "same_class": same, "methods": {}}
        for name in names:
            cmp = compare_maps(res, res_b, model, other, name)
            order = sorted(range(len(cmp.files)), key=lambda k: (cmp.spearman[k] if cmp.spearman[k] == cmp.spearman[k]
                                                                 else 2.0))
            rows = []
            for k in order[:8]:
                x0, y0, x1, y1 = (round(v) for v in cmp.frames[k])
                crop = model.preprocess.to_tensor(load_image(cmp.files[k]).crop((x0, y0, x1, y1))
                                                  .resize(model.preprocess.size[::-1]), crop=False)
                rows.append(compare_figure(crop, cmp.maps_a[k], cmp.maps_b[k], cmp.disagreement[k],
                                           names=(model.name, other.name), method=name, rho=cmp.spearman[k],
                                           title_text=f"{cmp.stems[k]}: {model.label(cmp.targets_a[k])} / "
                                                      f"{other.label(cmp.targets_b[k])}"))
            save(stack(rows), run.out / f"compare_{name}.png")
            click.echo(f"{name}: mean Spearman {cmp.mean_spearman:.3f} between {model.name} and {other.name}",
                       err=True)
            result["compare"]["methods"][name] = {
                "mean_spearman": cmp.mean_spearman, "mean_top10_iou": float(np.mean(cmp.top_overlap)),
                "figure": f"compare_{name}.png", "most_different": [cmp.stems[k] for k in order[:8]],
                "per_image": [{"stem": st, "spearman": r, "top10_iou": o, "target_a": ta, "target_b": tb}
                              for st, r, o, ta, tb in zip(cmp.stems, cmp.spearman, cmp.top_overlap, cmp.targets_a,
                                                          cmp.targets_b)]}
    run.save({"saliency": result})


def _safe(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


@main.command("audit")
@click.argument("folder")
@model_options("audit")
@click.option("--method", default="gradcam", show_default=True, help="Saliency method audited.")
@click.option("--masks", type=click.Path(file_okay=False), default=None,
              help="Folder of object masks mirroring FOLDER (same relative paths, any image type; non-zero = object).")
@click.option("--boxes", type=click.Path(dir_okay=False), default=None,
              help="CSV file,x0,y0,x1,y1 of object boxes in photo pixels.")
@click.option("--segment", is_flag=True, help="Object masks by GrabCut seeded by a centred prior.")
@click.option("--segment-seed", default=None, help="With --segment: seed GrabCut by this saliency method instead.")
@click.option("--top", type=COUNT, default=12, show_default=True, help="Most background-reliant images shown.")
@click.option("--batch-size", type=COUNT, default=8, show_default=True, help="Images per batch.")
@click.option("--rise-masks", type=COUNT, default=2000, show_default=True, help="RISE random masks.")
def audit_cmd(run, folder: str, method: str, masks: str | None, boxes: str | None, segment: bool,
              segment_seed: str | None, top: int, batch_size: int, rise_masks: int) -> None:
    """Does the model look at the object or at the background? Share of saliency mass inside each image's object
    mask, over the folder and per predicted class, and the images that rely most on the background."""
    from tqdm import tqdm

    from ..attribute.audit import audit_saliency
    from ..show.attribution import audit_figure, audit_gallery

    if sum(bool(v) for v in (masks, boxes, segment)) != 1:  # before any work (and before the progress bar)
        raise UserError("give exactly one mask source: --masks DIR, --boxes CSV or --segment")
    model = run.model
    _methods(method)
    if segment_seed:
        _methods(segment_seed)
    files = list_images(folder)
    if not files:
        raise UserError(f"no images in {folder}")
    opts = _options(method, 25, 50, 32, 8, None, rise_masks)
    with tqdm(total=len(files), desc=f"saliency {method}", unit="img") as bar:
        res = audit_saliency(model, folder, run.out / "maps", method=method, masks=masks, boxes=boxes,
                             segment=segment, segment_seed=segment_seed, options=opts, batch_size=batch_size,
                             seed=run.seed, progress=bar.update)
    if not res.items:
        raise UserError(f"no image of {folder} has a mask ({len(res.missing)} without one)")
    summary, classes = res.summary(), res.per_class()
    save(audit_figure(res.background_shares(), classes,
                      title_text=f"{method} on {model.name}: saliency off the object ({res.source})"),
         run.out / "audit.png")
    worst = res.most_background(top)
    entries = [(model.load(i.file)[0], np.load(i.map), i.mask,
                f"{i.stem[:22]} {i.label[:14]} bg {i.background:.0%}") for i in worst
               if i.mask is not None]  # audit_saliency gives every item its mask
    save(audit_gallery(entries, title_text="most background-reliant images (white: object outline)"),
         run.out / "background_gallery.png")
    with open(run.out / "per_class.md", "w") as fh:
        fh.write("| predicted class | images | saliency on background | background share of pixels | "
                 "concentration |\n|---|---|---|---|---|\n")
        fh.writelines(f"| {r['label']} ({r['class']}) | {r['images']} | {r['background']:.3f} | {1 - r['area']:.3f} | "
                     f"{r['concentration']:.2f} |\n" for r in classes)
    click.echo(f"{summary['images']} images: mean {summary['mean']:.1%} of saliency on the background, "
               f"{summary['mostly_background']:.0%} mostly on it; {len(res.missing)} without a mask", err=True)
    for r in classes[:5]:
        click.echo(f"  {r['label']}: {r['background']:.1%} on background ({r['images']} images)", err=True)
    run.save({"audit": {"folder": str(folder), **res.to_dict(top), "figures": ["audit.png", "background_gallery.png"]}})


@main.command("evaluate-saliency")
@click.argument("dataset")
@model_options("evaluate-saliency")
@click.option("--methods", default="gradient,guided,integrated,gradcam,occlusion,random,edge", show_default=True,
              help="Comma-separated methods (random and edge are the sanity floors), or all.")
@click.option("--limit", type=COUNT, default=50, show_default=True, help="Use at most this many images.")
@click.option("--steps", type=COUNT, default=50, show_default=True, help="Deletion / insertion steps.")
@click.option("--window", type=COUNT, default=32, show_default=True, help="Occluder side.")
@click.option("--stride", type=COUNT, default=8, show_default=True, help="Occluder stride.")
@click.option("--masks", "rise_masks", type=COUNT, default=2000, show_default=True, help="RISE random masks.")
@click.option("--engine", type=click.Choice(["auto", "openvino", "torch"]), default="auto", show_default=True,
              help="Forward engine of the curves (auto: OpenVINO when installed, checked against PyTorch).")
@click.option("--blur", type=POSITIVE, default=None,
              help="Gaussian sigma (pixels) of the insertion canvas [default: input side / 28, 8 px at 224; "
                   "Petsiuk et al.'s released code: about 1.1].")
def evaluate_cmd(run, dataset: str, methods: str, limit: int, steps: int, window: int,
                 stride: int, rise_masks: int, engine: str, blur: float | None) -> None:
    """Faithfulness of saliency methods on a folder of images: deletion / insertion AUC (Petsiuk et al. 2018)."""
    from tqdm import tqdm

    from ..attribute import evaluate_saliency

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
    opts = {m: _options(m, 25, 50, window, stride, None, rise_masks) for m in names}
    res = evaluate_saliency(model, files, names, steps=steps, options=opts, generator=run.generator(), engine=engine,
                            blur=blur, progress=lambda fs: tqdm(fs, desc="images", unit="img"))
    table = res.table()
    click.echo(f"{'method':<16} {'deletion':>9} {'insertion':>9} {'s/img':>7}")
    for name, r in table.items():
        click.echo(f"{name:<16} {r['deletion_auc']:>9.3f} {r['insertion_auc']:>9.3f} {r['seconds_per_image']:>7.2f}")
    click.echo(f"curves of all {len(names)} methods: {res.curve_seconds:.2f} s per image ({res.engine})")
    with atomic_write(run.out / "table.md", "w") as fh:
        fh.write("| method | deletion AUC (lower is better) | insertion AUC (higher is better) | s / image |\n")
        fh.write("|---|---|---|---|\n")
        for name, r in table.items():
            fh.write(f"| {name} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | "
                     f"{r['seconds_per_image']:.2f} |\n")
        fh.write(f"\nCurves of all {len(names)} methods: {res.curve_seconds:.2f} s per image ({res.engine}).\n")
    fig = curves_figure(res.fractions.tolist(), {m: res.deletion[m].mean(0).tolist() for m in names},
                        {m: res.insertion[m].mean(0).tolist() for m in names},
                        title_text=f"{len(files)} images, {model.name}")
    save(fig, run.out / "curves.png")
    run.save({**res.to_dict(), "skipped": skipped})


@main.command("sanity-check")
@click.argument("images", nargs=-1, required=True)
@model_options("sanity-check")
@click.option("--methods", default="gradient,guided,gradcam", show_default=True,
              help="Comma-separated saliency methods to check.")
@click.option("--limit", type=COUNT, default=4, show_default=True, help="Use at most this many images (folders too).")
@click.option("--groups", default=None, help="Parameter groups to randomise, output first [default: the model's "
                                             "top-level blocks].")
@click.option("--labels/--no-labels", "labels", default=False, show_default=True,
              help="Also run label randomisation (trains a copy of the network on random labels).")
@click.option("--train-steps", type=COUNT, default=60, show_default=True, help="Label randomisation: training steps.")
@click.option("--signed", is_flag=True, help="Compare signed maps instead of their absolute values.")
def sanity_cmd(run, images: tuple[str, ...], methods: str, limit: int, groups: str | None, labels: bool,
               train_steps: int, signed: bool) -> None:
    """Sanity checks for saliency maps (Adebayo et al. 2018): cascading randomisation of the network's
    parameters from the top down (and label randomisation): rank correlation and SSIM with the trained maps,
    per layer; writes sanity.png, sanity_maps.png and result.json."""
    from ..attribute.sanity import cascading_randomization, label_randomization
    from ..show.attribution import sanity_figure, sanity_maps_figure

    model = run.model
    names = _methods(methods)
    files: list[str] = []
    for item in images:
        files += [str(f) for f in list_images(item)] if Path(item).is_dir() else [item]
    files = files[:limit]
    if not files:
        raise UserError("no images given")
    x = model.load(files)
    start = time.perf_counter()
    res = cascading_randomization(model, x, names, seed=run.seed, absolute=not signed,
                                  groups=[g.strip() for g in groups.split(",")] if groups else None)
    click.echo(f"cascading randomisation: {len(res.steps) - 1} groups, {time.perf_counter() - start:.1f} s", err=True)
    for m in names:
        click.echo(f"{m:<16} spearman " + " ".join(f"{v:.2f}" for v in res.mean(m)), err=True)
    for m, k in res.parameters["constant_trained_maps"].items():
        click.echo(f"warning: {m} gives a constant map on the trained model for {k} of {len(files)} images: "
                   f"their similarities say nothing", err=True)
    save(sanity_figure(res, title_text=f"cascading randomisation, {model.name}, {len(files)} images"),
         run.out / "sanity.png")
    save(sanity_maps_figure(res, x[0]), run.out / "sanity_maps.png")
    out = {"images": files, "cascading": res.to_dict(), "seconds": round(time.perf_counter() - start, 2)}
    if labels:
        lab = label_randomization(model, x, names, seed=run.seed, steps=train_steps, absolute=not signed)
        click.echo(f"label randomisation: the copy fits {lab.parameters['fitted']:.0%} of the random labels", err=True)
        for m in names:
            click.echo(f"{m:<16} spearman {lab.mean(m)[1]:.2f}  ssim {lab.mean(m, 'ssim')[1]:.2f}", err=True)
        save(sanity_maps_figure(lab, x[0], columns=2), run.out / "label_maps.png")
        out["labels"] = lab.to_dict()
    run.save({"sanity": out})
