"""Texture and style commands: ``texture``, ``style``, ``fast-style train`` and ``fast-style apply``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import torch

from ..errors import UserError
from ..images import list_images, load_image, to_pil, to_pixels
from ..interrupts import Interrupted
from ..models import DEFAULT_MODEL
from ..results import output_names, save_image
from .common import COUNT, NATURAL, NONNEGATIVE, POSITIVE, at_least, main, model_options

# longer side of ISO 216 paper in millimetres, for ``style --print``
PAPER_MM = {"A6": 148, "A5": 210, "A4": 297, "A3": 420}


def _size(text: str | None) -> tuple[int, int] | None:
    """``"512x384"`` (width x height) or ``"512"`` -> ``(H, W)``."""
    if not text:
        return None
    try:
        parts = [int(p) for p in text.lower().replace("*", "x").split("x")]
    except ValueError:
        raise UserError(f"cannot read size {text!r}; give WIDTHxHEIGHT such as 512x512, or one number") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16 or max(parts) > 8192:
        raise UserError(f"size {text!r} must be WIDTHxHEIGHT with sides between 16 and 8192")
    return parts[1], parts[0]


def _floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read {what} {text!r}; give numbers such as 0.7,0.3") from None


def _layers(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _pixels(path: str) -> torch.Tensor:
    return to_pixels(load_image(path))[None]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    def cb(i: int, loss: float) -> None:  # i: steps done so far (L-BFGS reports every few steps)
        bar.update(max(0, i - bar.n))
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    return bar, cb


@main.command("texture")
@click.argument("sample")
@model_options("texture")
@click.option("--size", default=None, help="Output WIDTHxHEIGHT [default: twice the sample's measured size].")
@click.option("--layers", default=None, help="Comma-separated layers [default: first layer at each resolution, "
                                             "before its activation].")
@click.option("--layers-sweep", is_flag=True, help="Also render shallow-to-deep layer sets side by side "
                                                   "(Gram matrices only).")
@click.option("--steps", type=COUNT, default=300, show_default=True, help="L-BFGS function evaluations.")
@click.option("--sample-size", type=COUNT, default=256, show_default=True, help="Longer side the sample is measured at.")
@click.option("--tv-weight", type=NONNEGATIVE, default=0.05, show_default=True, help="Total-variation weight.")
@click.option("--spectrum-weight", type=NONNEGATIVE, default=1.0, show_default=True,
              help="Weight of the sample's Fourier amplitude (keeps regular periods; 0 = Gram matrices only).")
@click.option("--octaves", type=COUNT, default=2, show_default=True,
              help="At most this many coarse-to-fine levels (half size first: large structures such as "
                   "brick faces); fewer where the sample is too small for the deepest layer.")
def texture_cmd(run, sample: str, size: str | None, layers: str | None, layers_sweep: bool, steps: int,
                sample_size: int, tv_weight: float, spectrum_weight: float, octaves: int) -> None:
    """Synthesise a texture of any size from noise whose Gram matrices match SAMPLE (Gatys et al. 2015)."""
    from ..show.figures import save
    from ..show.style import texture_figure, texture_sweep_figure
    from ..synthesize.texture import _resize_long, layer_sweep, style_layers, synthesize_texture

    model = run.model
    img = _pixels(sample)
    measured = _resize_long(img, sample_size)
    hw = _size(size) or (measured.shape[-2] * 2, measured.shape[-1] * 2)
    names = _layers(layers) or style_layers(model, pre_activation=True)
    bar, cb = _progress(steps, "texture")
    try:
        res = synthesize_texture(model, img, size=hw, layers=names, steps=steps, tv_weight=tv_weight, seed=run.seed,
                                 sample_size=sample_size, spectrum_weight=spectrum_weight, octaves=octaves, callback=cb)
    finally:
        bar.close()
    save_image(to_pil(res.image), run.out / "texture.png")
    save(texture_figure(res, title_text=f"Gram-matrix texture synthesis ({model.name})"),
         run.out / "texture_figure.png")
    data: dict[str, Any] = {**res.to_dict(), "spectrum_weight": spectrum_weight,
                            "files": ["texture.png", "texture_figure.png"]}
    if layers_sweep:
        sweep = layer_sweep(model, img, size=(measured.shape[-2], measured.shape[-1]), steps=steps, seed=run.seed,
                            layers=_layers(layers), tv_weight=tv_weight, sample_size=sample_size)
        save(texture_sweep_figure(sweep), run.out / "texture_sweep.png")
        data["sweep"] = [r.to_dict() for r in sweep]
        data["files"].append("texture_sweep.png")
    run.save(data)
    reg = res.regularity
    click.echo(f"texture: style loss {res.style_loss:.4g} after {res.steps} steps in {res.seconds:.1f} s; period "
               f"{reg.synthesis.period:.1f} px (sample {reg.sample.period:.1f} px), regularity {reg.score:.2f}")


@main.command("style")
@click.argument("content")
@click.argument("styles", nargs=-1, required=True)
@model_options("style")
@click.option("--style-weights", default=None, help="Blend weights of several styles, e.g. 0.7,0.3 [default: equal].")
@click.option("--content-weight", type=NONNEGATIVE, default=1.0, show_default=True)
@click.option("--style-weight", type=NONNEGATIVE, default=None, help="[default: 3 on the embedded model, 10 otherwise]")
@click.option("--tv-weight", type=NONNEGATIVE, default=None, help="[default: 0.2]")
@click.option("--style-scale", type=POSITIVE, default=1.0, show_default=True,
              help="Style image's size relative to the output (bigger = larger strokes).")
@click.option("--init", "init", type=click.Choice(["noise", "content"]), default="content", show_default=True)
@click.option("--original-colors", is_flag=True, help="Transfer luminance only; keep the content's colours.")
@click.option("--size", type=at_least(16), default=256, show_default=True, help="Longer side of the output.")
@click.option("--steps", type=COUNT, default=200, show_default=True, help="L-BFGS steps in all.")
@click.option("--octaves", type=COUNT, default=None, help="Coarse-to-fine levels [default: 1, +1 per doubling above 384].")
@click.option("--style-layers", default=None, help="Comma-separated style layers [default: from the layer index].")
@click.option("--content-layer", default=None, help="Content layer [default: from the layer index].")
@click.option("--dream", type=NONNEGATIVE, default=0.0, show_default=True, help="Weight of a DeepDream term on top.")
@click.option("--print", "print_size", type=click.Choice(sorted(PAPER_MM), case_sensitive=False), default=None,
              help="Size the output for a print on this paper (longer side; overrides --size).")
@click.option("--dpi", type=COUNT, default=150, show_default=True, help="Dots per inch of --print.")
def style_cmd(run, content: str, styles: tuple[str, ...], style_weights: str | None, content_weight: float,
              style_weight: float | None, tv_weight: float | None, style_scale: float, init: str,
              original_colors: bool, size: int, steps: int, octaves: int | None, style_layers: str | None,
              content_layer: str | None, dream: float, print_size: str | None, dpi: int) -> None:
    """Render CONTENT in the style of one or more STYLE paintings (Gatys et al. 2016)."""
    from ..show.figures import save
    from ..show.style import style_figure
    from ..synthesize.style import StyleResult, style_transfer

    model = run.model
    c = _pixels(content)
    ss = [_pixels(s) for s in styles]
    weights = _floats(style_weights, "style weights")
    if print_size:
        size = round(PAPER_MM[print_size.upper()] / 25.4 * dpi)
    if size < 16:
        raise UserError(f"size must be at least 16, got {size}")
    if octaves is None:
        octaves = 1
        while size / 2 ** (octaves - 1) > 384:
            octaves += 1
    bar, cb = _progress(steps, "style")
    try:
        res = style_transfer(model, c, ss, style_weights=weights, content_weight=content_weight,
                             style_weight=style_weight, tv_weight=tv_weight, style_scale=style_scale, init=init,
                             original_colors=original_colors, size=size, steps=steps, octaves=octaves,
                             style_layers_=_layers(style_layers), content_layer_=content_layer, dream_weight=dream,
                             seed=run.seed, callback=cb)
    except Interrupted as stop:  # Ctrl-C: keep the last finished step, say so in result.json, exit 130
        part = stop.partial
        if isinstance(part, StyleResult):  # None when no step had finished: nothing to keep
            save_image(to_pil(part.image), run.out / "stylized.png")
            run.save({"interrupted": True, **part.to_dict(), "octaves": octaves, "files": ["stylized.png"]})
        raise
    finally:
        bar.close()
    # with --print the PNG says its print resolution, so it prints at the paper's size
    stamp: dict[str, Any] = {"dpi": (dpi, dpi)} if print_size else {}
    save_image(to_pil(res.image), run.out / "stylized.png", **stamp)
    names = [Path(s).stem for s in styles]
    if weights:
        names = [f"{n} {w:g}" for n, w in zip(names, weights)]
    save(style_figure(c, list(zip(ss, names)), res, caption="stylised",
                      title_text=f"{model.name}: {res.steps} steps, {res.seconds:.0f} s"), run.out / "style_figure.png")
    extra = {"print": print_size.upper(), "dpi": dpi} if print_size else {}
    run.save({**res.to_dict(), "octaves": octaves, **extra, "files": ["stylized.png", "style_figure.png"]})
    click.echo(f"style: content {res.content_loss:.4g}, style {res.style_loss:.4g}, tv {res.tv_loss:.4g} "
               f"after {res.steps} steps in {res.seconds:.1f} s")


@main.group("fast-style")
def fast_style_group() -> None:
    """Fast feed-forward style transfer (Johnson et al. 2016; several styles: Dumoulin et al. 2017)."""


@fast_style_group.command("train")
@click.argument("styles", nargs=-1, required=True)
@click.option("--images", required=True, help="Folder of training photos.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="The trained network's file, e.g. model.pt; its checkpoint (model.ckpt.pt), loss curve "
                   "(model_loss.png) and result.json go beside it.")
@click.option("--model", "-m", "model_spec", default=DEFAULT_MODEL, show_default=True, help="Loss network.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Local state dict for the loss network.")
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda | mps.")
@click.option("--seed", type=NATURAL, default=0, show_default=True, help="Random seed.")
@click.option("--epochs", type=COUNT, default=2, show_default=True)
@click.option("--steps", type=COUNT, default=None, help="Stop after this many steps in all (overrides --epochs).")
@click.option("--time-limit", type=POSITIVE, default=None, help="Stop after this many seconds in all.")
@click.option("--size", type=at_least(16), default=256, show_default=True, help="Training crop side.")
@click.option("--style-size", type=at_least(16), default=None, help="Longer side of the style images [default: --size].")
@click.option("--batch-size", type=COUNT, default=4, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--content-weight", type=NONNEGATIVE, default=1.0, show_default=True)
@click.option("--style-weight", type=NONNEGATIVE, default=None, help="[default: the style command's default for the model]")
@click.option("--tv-weight", type=NONNEGATIVE, default=None, help="[default: the style command's default]")
@click.option("--width", type=COUNT, default=32, show_default=True, help="Channels after the first downsampling.")
@click.option("--blocks", type=COUNT, default=5, show_default=True, help="Residual blocks.")
@click.option("--style-layer-count", type=COUNT, default=5, show_default=True,
              help="Use the first N default style layers (fewer = cheaper steps).")
@click.option("--checkpoint-every", type=COUNT, default=100, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside --out.")
def fast_train_cmd(styles: tuple[str, ...], images: str, out: str, model_spec: str, weights: str | None,
                   device: str, seed: int, epochs: int, steps: int | None, time_limit: float | None, size: int,
                   style_size: int | None, batch_size: int, lr: float, content_weight: float,
                   style_weight: float | None, tv_weight: float | None, width: int, blocks: int,
                   style_layer_count: int, checkpoint_every: int, resume: bool) -> None:
    """Train a transformation network on the photos in IMAGES to paint like STYLE(s) (several: one network,
    conditional instance norm). Saves checkpoints, resumes, shows progress and draws the loss curve."""
    from tqdm.auto import tqdm

    from ..show.figures import save
    from ..synthesize.fast_style import FastStyleConfig, load_fast_style, save_fast_style, train_fast_style
    from ..synthesize.style import default_weights
    from .common import Run

    torch.manual_seed(seed)
    out_path = Path(out)
    run = Run("fast-style-train", model=model_spec, weights=weights, device=device, out=str(out_path.parent or "."),
              seed=seed, params={"styles": list(styles), "images": images, "size": size, "epochs": epochs,
                                 "steps": steps, "time_limit": time_limit, "batch_size": batch_size, "lr": lr})
    model = run.model
    ss = [_pixels(s) for s in styles]
    sw, tw = default_weights(model)
    config = FastStyleConfig(styles=[Path(s).stem for s in styles], loss_model=model_spec, size=size,
                             style_size=style_size or size, batch_size=batch_size, lr=lr,
                             content_weight=content_weight, style_weight=style_weight or sw,
                             tv_weight=tw if tv_weight is None else tv_weight, width=width, blocks=blocks, seed=seed,
                             style_layer_count=style_layer_count)
    ckpt = out_path.with_name(out_path.stem + ".ckpt.pt")
    curve = out_path.with_name(out_path.stem + "_loss.png")
    net = state = opt_state = None
    if resume:
        if not ckpt.is_file():
            raise UserError(f"--resume: no checkpoint at {ckpt}")
        net, config, state, opt_state = load_fast_style(ckpt, device=run.device)
        click.echo(f"resuming at step {state.step if state else 0}", err=True)
    bar = tqdm(desc="fast-style", dynamic_ncols=True, initial=state.step if state else 0, total=steps)

    def progress(st, parts) -> None:
        bar.update(1)
        if st.step % 10 == 0:
            bar.set_postfix(content=f"{parts['content']:.3f}", style=f"{parts['style']:.4f}", refresh=False)

    def checkpoint(n, st, opt) -> None:
        save_fast_style(ckpt, n, config, st, opt)
        _loss_curve(st.history, curve, save)

    try:
        net, state = train_fast_style(model, ss, images, config=config, steps=steps, epochs=epochs, net=net,
                                      state=state, optimizer_state=opt_state, time_limit=time_limit,
                                      checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    finally:
        bar.close()
    save_fast_style(out_path, net, config, state, half=True, trained_on=str(images))
    last = state.history[-1] if state.history else {}
    run.save({"model_file": str(out_path), "steps": state.step, "epochs": state.epoch,
              "seconds": round(state.seconds, 1), "final": last, "config": config.__dict__,
              "files": [ckpt.name, curve.name]})
    click.echo(f"fast-style: {state.step} steps in {state.seconds:.0f} s -> {out_path}")


def _loss_curve(history: list[dict], path: Path, save) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..show.figures import figure_to_image

    if not history:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = np.array([h["step"] for h in history])
    for key in ("total", "content", "style", "tv"):
        v = np.array([h[key] for h in history])
        k = max(1, len(v) // 50)
        smooth = np.convolve(v, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (moving average)")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    save(figure_to_image(fig, 100), path)
    plt.close(fig)


@fast_style_group.command("apply")
@click.argument("model_file", metavar="MODEL.pt")
@click.argument("images", nargs=-1, required=True)
@click.option("--mix", default=None, help="Mix the network's styles, e.g. 0.5,0.5.")
@click.option("--style", "style_index", type=NATURAL, default=0, show_default=True, help="Style index (without --mix).")
@click.option("--max-side", type=NATURAL, default=None,
              help="Resize the longer side to at most this first; 0 keeps every image's size [default: the "
                   "network's apply size, stored with it: 4x its training crops, 512 px for `pretrained`; the "
                   "strokes are a fixed number of pixels, so a larger image gets a fainter, finer style].")
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda | mps.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: convlens-out/fast-style-apply/].")
@click.option("--seed", type=NATURAL, default=0, show_default=True, help="Random seed (the network is deterministic).")
def fast_apply_cmd(model_file: str, images: tuple[str, ...], mix: str | None, style_index: int,
                   max_side: int | None, device: str, out: str | None, seed: int) -> None:
    """Stylise IMAGES (files or folders) in one forward pass each. MODEL.pt may be `pretrained` (ships with convlens)."""
    from ..models import resolve_device
    from ..results import out_dir, write_result
    from ..synthesize.fast_style import apply_fast_style, load_fast_style, pretrained_path

    started = time.perf_counter()
    path = pretrained_path() if model_file == "pretrained" else Path(model_file)
    dev = resolve_device(device)
    net, config, _, _ = load_fast_style(path, device=dev)
    weights = _floats(mix, "mixing weights")
    side = net.apply_max_side if max_side is None else (max_side or None)
    if max_side is None:
        click.echo(f"applying at a longer side of at most {side} px ({net.apply_source}; --max-side to change)",
                   err=True)
    files = list_images(images)
    if not files:
        raise UserError("no images given")
    if not weights and not 0 <= style_index < net.n_styles:
        raise UserError(f"--style {style_index} out of range: {path} has styles 0-{net.n_styles - 1}")
    folder = out_dir(out, "fast-style-apply")
    names = dict(zip(files, output_names(files, tag="_stylized")))  # a/x.jpg, b/x.jpg -> a/x_stylized.png, ...
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for f in files:
        try:
            x = _pixels(str(f))
        except UserError as exc:  # skip-and-report, like every folder command
            skipped.append({"file": str(f), "reason": str(exc)})
            click.echo(f"skipped {f}: {exc}", err=True)
            continue
        t = time.perf_counter()
        y = apply_fast_style(net, x, style=weights if weights else style_index, max_side=side)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t
        name = names[f]
        save_image(to_pil(y), folder / name)
        rows.append({"file": str(f), "output": name, "seconds": round(sec, 4), "size": [y.shape[-1], y.shape[-2]]})
        click.echo(f"{f} -> {folder / name} ({sec:.3f} s)")
    if not rows:
        raise UserError(f"none of the {len(files)} image(s) could be read (first: {skipped[0]['reason']})")
    write_result(folder, "fast-style-apply", {
        "images": rows, "seconds_per_image": round(sum(r["seconds"] for r in rows) / len(rows), 4),
        "styles": config.styles, "mix": weights, "skipped": skipped, "max_side": side,
        "max_side_source": net.apply_source if max_side is None else "--max-side"}, model=str(path), device=str(dev), seed=seed,
        seconds=round(time.perf_counter() - started, 3))
    click.echo(f"wrote {folder}/ (result.json)", err=True)
