"""Optimisation-to-image commands: ``visualize-class``, ``visualize-unit``, ``multifaceted``, ``dream``, ``invert``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch

from ..errors import UserError
from ..images import list_images, load_image, to_pil, to_pixels
from ..models import Model, load_model
from ..results import save_image
from ..show.figures import grid, save, side_by_side
from ..show.synthesize import inversion_figure
from ..synthesize.dream import default_dream_layer, dream, photo_pixels
from ..synthesize.invert import default_invert_layers, invert
from ..synthesize.visualize import PRESETS, judge_probs, multifaceted, preset, visualize_class, visualize_unit
from .common import COUNT, NATURAL, NONNEGATIVE, POSITIVE, FiniteFloat, Run, main, model_options, parse_range


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def _judges(names: tuple[str, ...], device: torch.device) -> list[tuple[str, Model]]:
    return [(n, load_model(n, device=device)) for n in names]


def _reread(path: Path) -> torch.Tensor:
    return to_pixels(load_image(path))[None]


def _save_images(run: Run, images: torch.Tensor, names: list[str], classes: Sequence[int | None],
                 judges: list[tuple[str, Model]], objective_values: torch.Tensor,
                 extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Save each image alone as a PNG, re-read it from disk and score it under the model and the judges."""
    model = run.model
    rows = []
    for i, name in enumerate(names):
        path = run.out / f"{name}.png"
        save(to_pil(images[i]), path)
        x = _reread(path).to(model.device)
        with torch.no_grad():
            probs = model(model.preprocess.resize_tensor(x)).float().softmax(-1)[0]
        given = classes[i]
        cls = given if given is not None else int(probs.argmax())
        row: dict[str, Any] = {"file": path.name, "class_index": cls, "label": model.label(cls),
                               "prob": float(probs[cls]), "objective": float(objective_values[i])}
        jp = {jn: judge_probs(j, x, [cls])[0] for jn, j in judges}
        row["judge_prob"] = next(iter(jp.values())) if jp else None
        if len(jp) > 1:
            row["judge_probs"] = jp
        row.update(extra[i])
        rows.append(row)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in jp.items())
        click.echo(f"{path.name}: p({model.label(cls)}) = {row['prob']:.3f}" + (f"; judges: {shown}" if shown else ""))
    return rows


_common = [
    click.option("--preset", "preset_name", type=click.Choice(list(PRESETS)), default="lucid", show_default=True,
                 help="simonyan (plain ascent + L2), yosinski (blur, decay, clipping), lucid (Fourier + transforms)."),
    click.option("--param", type=click.Choice(["pixel", "fft"]), default=None,
                 help="Image parametrisation [default: the preset's]."),
    click.option("--steps", type=COUNT, default=None, help="Optimisation steps [default: the preset's]."),
    click.option("--lr", type=POSITIVE, default=None, help="Step size [default: the preset's]."),
    click.option("--judge", multiple=True, help="Networks that score the saved PNGs (e.g. efficientnet_lite2); "
                                                "repeatable."),
    click.option("--snapshots", type=NATURAL, default=0, help="Also write an animation (GIF) with a frame every N steps."),
]


def _with_common(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


def _gif(run: Run, snapshots: list[torch.Tensor], final: torch.Tensor, name: str = "animation.gif") -> str | None:
    if not snapshots:
        return None
    frames = [grid([to_pil(s[i]) for i in range(s.shape[0])]) for s in snapshots + [final.cpu()]]
    save_image(frames[0], run.out / name, save_all=True, append_images=frames[1:], duration=120, loop=0)
    return name


@main.command("visualize-class")
@model_options("visualize-class", model_arg=True)
@click.option("--class", "classes", required=True, help="Class name or index, several with commas: flamingo,9.")
@_with_common
def visualize_class_cmd(run: Run, classes: str, preset_name: str, param: str | None, steps: int | None,
                        lr: float | None, judge: tuple[str, ...], snapshots: int) -> None:
    """Images the model takes for a class (Simonyan 2014, Yosinski 2015, Olah 2017). One PNG per class."""
    model = run.model
    specs = [c.strip() for c in classes.split(",") if c.strip()]
    idx = [model.class_index(c) for c in specs]
    judges = _judges(judge, run.device)
    p = preset(preset_name, param=param, steps=steps, lr=lr)
    res = visualize_class(model, idx, preset=p, seed=run.seed, progress=True, snapshot_every=snapshots)
    names = [f"class_{c}_{_slug(model.label(c))}" for c in idx]
    rows = _save_images(run, res.images, names, list(idx), judges, res.values, [{} for _ in idx])
    if len(idx) > 1:
        save(grid([to_pil(im) for im in res.images], labels=[model.label(c) for c in idx], label_size=12),
             run.out / "grid.png")
    run.save({"images": rows, "preset": preset_name, "settings": vars_of(p), "objective": res.objective,
              "optimize_seconds": res.seconds, "animation": _gif(run, res.snapshots, res.images),
              "judges": list(judge)})


def vars_of(p: Any) -> dict[str, Any]:
    from dataclasses import asdict
    return asdict(p)


@main.command("visualize-unit")
@model_options("visualize-unit", model_arg=True)
@click.option("--layer", required=True, help="Layer name (see `convlens layers`).")
@click.option("--channel", type=NATURAL, default=None, help="One channel.")
@click.option("--channels", default=None, help="Several channels, e.g. 0-15 (also writes grid.png).")
@click.option("--neuron", nargs=2, type=NATURAL, default=None, help="Y X: one neuron of each channel, not the mean.")
@_with_common
def visualize_unit_cmd(run: Run, layer: str, channel: int | None, channels: str | None,
                       neuron: tuple[int, int] | None, preset_name: str, param: str | None, steps: int | None,
                       lr: float | None, judge: tuple[str, ...], snapshots: int) -> None:
    """Images that excite channels (or single neurons) of a layer: the "conv5 / conv4 / conv3 channels" figure."""
    model = run.model
    model.layer(layer)
    if (channel is None) == (channels is None):
        raise UserError("give exactly one of --channel C or --channels 0-15")
    limit = model.layers[layer].channels if layer in model.layers else None
    chans = [channel] if channel is not None else parse_range(channels or "", limit)  # type: ignore[list-item]
    if limit is not None and any(not 0 <= c < limit for c in chans):
        raise UserError(f"channel {chans[0]} out of range: {layer!r} has channels 0-{limit - 1}")
    judges = _judges(judge, run.device)
    p = preset(preset_name, param=param, steps=steps, lr=lr)
    res = visualize_unit(model, layer, chans, position=tuple(neuron) if neuron else None, preset=p,  # type: ignore
                         seed=run.seed, progress=True, snapshot_every=snapshots)
    names = [f"{_slug(layer)}_ch{c}" + (f"_y{neuron[0]}x{neuron[1]}" if neuron else "") for c in chans]
    rows = _save_images(run, res.images, names, [None] * len(chans), judges, res.values,
                        [{"layer": layer, "channel": c} for c in chans])
    if len(chans) > 1:
        save(grid([to_pil(im) for im in res.images], labels=[f"{layer}:{c}" for c in chans], label_size=11),
             run.out / "grid.png")
    run.save({"images": rows, "layer": layer, "preset": preset_name, "settings": vars_of(p),
              "objective": res.objective, "optimize_seconds": res.seconds,
              "animation": _gif(run, res.snapshots, res.images), "judges": list(judge)})


@main.command("multifaceted")
@model_options("multifaceted", model_arg=True)
@click.option("--class", "cls", default=None,
              help="Class name or index for every facet [default: each facet the class the model gives its photos most].")
@click.option("--images", "folder", required=True, help="Folder (or file) of the class's photos.")
@click.option("--k", type=COUNT, default=4, show_default=True, help="Number of facets (k-means clusters).")
@click.option("--layer", default=None, help="Layer whose pooled features are clustered [default: penultimate].")
@click.option("--nearest", type=COUNT, default=15, show_default=True,
              help="Each facet starts from the mean of this many photos nearest its cluster's centre.")
@click.option("--restarts", type=NATURAL, default=0, show_default=True,
              help="Extra seeds per facet, to measure how far restarts of one facet lie apart.")
@_with_common
def multifaceted_cmd(run: Run, cls: str | None, folder: str, k: int, layer: str | None, nearest: int, restarts: int,
                     preset_name: str, param: str | None, steps: int | None, lr: float | None,
                     judge: tuple[str, ...], snapshots: int) -> None:
    """Multifaceted visualization (Nguyen 2016): cluster a class's photos, one visualization per cluster."""
    model = run.model
    c = None if cls is None else model.class_index(cls)
    files = list_images(folder)
    if len(files) < k:
        raise UserError(f"--k {k} needs at least {k} images; {folder} has {len(files)}")
    judges = _judges(judge, run.device)
    p = preset(preset_name, param=param, steps=steps, lr=lr)
    out = multifaceted(model, c, files, k=k, layer=layer, nearest=nearest, restarts=restarts, preset=p,
                       seed=run.seed, progress=True)
    names = [f"facet_{j}_{_slug(model.label(t))}" for j, t in enumerate(out.targets)]
    members = [[files[i].name for i in range(len(files)) if int(out.assignments[i]) == j] for j in range(k)]
    rows = _save_images(run, out.result.images, names, out.targets, judges, out.result.values,
                        [{"facet": j, "size": out.sizes[j], "members": members[j]} for j in range(k)])
    save(side_by_side([grid([to_pil(s) for s in out.starts], ncols=k, labels=[f"start ({n} photos)" for n in out.sizes]),
                       grid([to_pil(im) for im in out.result.images], ncols=k,
                            labels=[f"facet {j}: {model.label(t)}" for j, t in enumerate(out.targets)])],
                      title_text="cluster starts and facets"), run.out / "facets.png")
    if out.facet_distance is not None:
        click.echo(f"facet distance {out.facet_distance:.3f}" + (
            "" if out.restart_distance is None else f", restart distance {out.restart_distance:.3f}"))
    run.save({"images": rows, "class_index": c, "targets": out.targets, "layer": out.layer, "preset": preset_name, "settings": vars_of(p),
              "objective": out.result.objective, "optimize_seconds": out.result.seconds, "judges": list(judge),
              "nearest": nearest, "facet_distance": out.facet_distance, "restart_distance": out.restart_distance})


@main.command("dream")
@click.argument("image")
@model_options("dream")
@click.option("--layer", default=None, help="Layer whose activation norm grows [default: the stage output at 2/3 depth].")
@click.option("--octaves", type=COUNT, default=4, show_default=True)
@click.option("--octave-scale", type=FiniteFloat(1.0), default=1.4, show_default=True)
@click.option("--steps", type=COUNT, default=10, show_default=True, help="Steps per octave.")
@click.option("--jitter", type=NATURAL, default=32, show_default=True, help="Largest random roll, pixels.")
@click.option("--step-size", type=POSITIVE, default=1.5, show_default=True, help="Step on a 0-255 scale.")
@click.option("--guide", default=None, help="Guide image: grow what it shows instead.")
@click.option("--max-side", type=COUNT, default=512, show_default=True, help="Longer side of the photo is capped.")
def dream_cmd(run: Run, image: str, layer: str | None, octaves: int, octave_scale: float, steps: int, jitter: int,
              step_size: float, guide: str | None, max_side: int) -> None:
    """DeepDream (Mordvintsev 2015) as in the original notebook: octaves, jitter, L1-normalised ascent."""
    model = run.model
    layer = layer or default_dream_layer(model)
    photo = photo_pixels(image, max_side)
    res = dream(model, photo, layer=layer, octaves=octaves, octave_scale=octave_scale, steps=steps, jitter=jitter,
                step_size=step_size / 255, guide=guide, max_side=None, seed=run.seed, progress=True)
    save(to_pil(res.image), run.out / "dream.png")
    save(side_by_side([(to_pil(photo[0]), "photo"), (to_pil(res.image), f"DeepDream, {layer}")]),
         run.out / "figure.png")
    click.echo(f"dream.png: {layer}, {res.steps} steps in {res.seconds:.1f} s")
    run.save({"images": [{"file": "dream.png", "layer": layer, "objective": float(res.values[0])}],
              "figure": "figure.png", "layer": layer, "objective": res.objective, "optimize_seconds": res.seconds,
              "size": list(res.images.shape[-2:])})


@main.command("invert")
@click.argument("image")
@model_options("invert")
@click.option("--layer", default=None, help="One layer.")
@click.option("--layers", default=None,
              help="Several layers side by side, comma separated [default: the stem, four stages, class scores].")
@click.option("--tv", type=NONNEGATIVE, default=0.01, show_default=True, help="Weight of the total-variation prior.")
@click.option("--beta", type=POSITIVE, default=2.0, show_default=True, help="Exponent of the total variation.")
@click.option("--alpha-weight", type=NONNEGATIVE, default=0.01, show_default=True,
              help="Weight of the alpha-norm prior.")
@click.option("--steps", type=COUNT, default=200, show_default=True, help="Steps per layer.")
def invert_cmd(run: Run, image: str, layer: str | None, layers: str | None, tv: float, beta: float,
               alpha_weight: float, steps: int) -> None:
    """Feature inversion (Mahendran & Vedaldi 2015): reconstruct IMAGE from its code at one or several layers."""
    if layer and layers:
        raise UserError("give --layer or --layers, not both")
    names = [layer] if layer else ([s.strip() for s in layers.split(",") if s.strip()] if layers
                                   else None)
    model = run.model
    names = names or default_invert_layers(model)
    res = invert(model, image, names, steps=steps, tv=tv, beta=beta, alpha_weight=alpha_weight, seed=run.seed,
                 progress=True)
    rows = []
    for name in names:
        fname = f"invert_{_slug(name)}.png"
        save(to_pil(res.images[name]), run.out / fname)
        rows.append({"file": fname, "layer": name, "relative_error": res.errors[name],
                     "grey_error": res.grey_errors[name], "pixel_error": res.pixel_errors[name]})
        click.echo(f"{fname}: distance to the photo {res.pixel_errors[name]:.3f}, relative feature error "
                   f"{res.errors[name]:.4f} (a grey image: {res.grey_errors[name]:.4f})")
    save(inversion_figure(res, title_text="reconstructions from deeper and deeper layers"), run.out / "figure.png")
    run.save({"images": rows, "errors": res.errors, "grey_errors": res.grey_errors, "pixel_errors": res.pixel_errors,
              "figure": "figure.png",
              "seconds_per_layer": {n: r.seconds for n, r in res.results.items()}})
