"""Foundation commands: ``models``, ``layers``, ``predict``."""

from __future__ import annotations

import click

from ..images import list_images
from ..models import available_models
from .common import COUNT, main, model_options


@main.command("models")
def models_cmd() -> None:
    """List the model names load_model understands."""
    for name in available_models():
        click.echo(name)


@main.command("layers")
@model_options("layers", model_arg=True)
@click.option("--spatial-only", is_flag=True, help="Only layers with a C x H x W output.")
def layers_cmd(run, spatial_only: bool) -> None:
    """Table of every addressable layer: name, type, output shape, channels, receptive field size and stride."""
    model = run.model
    rows = []
    click.echo(f"{'layer':<40} {'type':<22} {'output':<18} {'ch':>5} {'rf':>9} {'stride':>7}")
    for info in model.layers:
        if spatial_only and not info.spatial:
            continue
        rf = "whole" if info.rf.whole else f"{info.rf.size[0]:g}x{info.rf.size[1]:g}"
        stride = "-" if info.rf.whole else f"{info.rf.stride[0]:g}"
        shape = "x".join(str(s) for s in info.shape)
        click.echo(f"{info.name:<40} {info.type:<22} {shape:<18} {info.channels:>5} {rf:>9} {stride:>7}")
        rows.append({"name": info.name, "type": info.type, "shape": list(info.shape), "channels": info.channels,
                     "receptive_field": None if info.rf.whole else list(info.rf.size),
                     "stride": None if info.rf.whole else list(info.rf.stride)})
    run.save({"input_size": list(model.preprocess.size), "layers": rows})


@main.command("predict")
@click.argument("images", nargs=-1, required=True)
@model_options("predict")
@click.option("--top", type=COUNT, default=5, show_default=True, help="How many classes to show per image.")
def predict_cmd(run, images: tuple[str, ...], top: int) -> None:
    """Top classes with probabilities for each image (a folder means every image in it)."""
    model = run.model
    files = list_images(images)
    preds = []
    for start in range(0, len(files), 16):
        chunk = files[start:start + 16]
        for f, tops in zip(chunk, model.predict(model.load(chunk), top=top)):
            click.echo(f"{f}: " + ", ".join(f"{p.label} ({p.index}) {p.prob:.3f}" for p in tops))
            preds.append({"file": str(f), "top": [{"index": p.index, "label": p.label, "prob": p.prob}
                                                  for p in tops]})
    run.save({"predictions": preds})
