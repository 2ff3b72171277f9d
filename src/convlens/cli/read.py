"""Commands that read what a network holds: filters, activations, neighbors, embed, top-patches,
receptive-field, dead-units."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from ..errors import UserError
from ..read import (
    DeadUnits,
    activation_maps,
    conv_filters,
    dead_unit_layers,
    embed,
    empirical_receptive_field,
    feature_layer,
    grid_assignment,
    guided_patches,
    linear_templates,
    load_dataset,
    neighbors,
    render,
    scan,
    top_patches,
)
from ..read.reducers import PooledFeatures
from ..read.weights import first_conv_layer, first_linear_layer, is_linear
from ..show.figures import save
from .common import COUNT, NATURAL, cluster_options, main, model_options, parse_range

_DATASET = click.argument("dataset", type=click.Path(exists=True))
_CACHE = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                      help="Keep pooled features here and reuse them next time [default: OUT/cache].")
_LIMIT = click.option("--limit", type=COUNT, default=None, help="Use only this many images (spread over the dataset).")


def _cache(run, cache_dir: str | None) -> Path:
    return Path(cache_dir) if cache_dir else run.out / "cache"


@main.command("filters")
@model_options("filters", model_arg=True)
@click.option("--layer", "-l", default=None, help="A Conv2d layer [default: the first one] or a Linear layer.")
@click.option("--scaling", type=click.Choice(["filter", "global"]), default="filter", show_default=True,
              help="Scale each tile on its own, or all with one scale.")
@click.option("--max-out", type=COUNT, default=64, show_default=True, help="At most this many output channels.")
@click.option("--max-in", type=COUNT, default=16, show_default=True, help="At most this many input channels.")
@click.option("--template-shape", default=None,
              help="For a layer with linear weights reading an image: that image's CxHxW [default: 3 x the model's "
                   "input size if it fits, else a square RGB or grey image].")
def filters_cmd(run, layer: str | None, scaling: str, max_out: int, max_in: int,
                template_shape: str | None) -> None:
    """Convolution filters as pictures (first layer in colour; deeper layers as out x in kernel grids), or the rows
    of a linear classifier (any layer with linear weights, TorchScript too) as class templates."""
    model = run.model
    linear = is_linear(model.layer(layer)) if layer is not None else (
        first_conv_layer(model) is None and first_linear_layer(model) is not None)
    if linear:
        shape = None
        if template_shape is not None:
            try:
                shape = tuple(int(v) for v in template_shape.lower().split("x"))
                assert len(shape) == 3
            except (ValueError, AssertionError):
                raise UserError(f"cannot read --template-shape {template_shape!r}; expected CxHxW like 3x32x32"
                                ) from None
        layer = layer or first_linear_layer(model)
        t = linear_templates(model, layer, shape=shape)  # type: ignore[arg-type]
        names = [model.label(i) for i in range(len(t))] if len(t) == model.num_classes else None
        save(render.templates_figure(t[:max_out], names[:max_out] if names else None), run.out / "templates.png")
        click.echo(f"templates.png: {len(t)} templates of {layer}, each {'x'.join(map(str, t.shape[1:]))}")
        run.save({"layer": layer, "kind": "templates", "shape": list(t.shape)})
        return
    f = conv_filters(model, layer)
    save(render.filters_figure(f, scaling=scaling, max_out=max_out, max_in=max_in), run.out / "filters.png")
    w = f.weight
    run.save({"layer": f.layer, "kind": f.kind, "shape": list(w.shape), "groups": f.groups,
              "norms": w.flatten(1).norm(dim=1)[:max_out].tolist()})


@main.command("activations")
@click.argument("image", type=click.Path())
@model_options("activations")
@click.option("--layer", "-l", required=True, help="Layer name (see `convlens layers`).")
@click.option("--max-channels", type=COUNT, default=256, show_default=True)
def activations_cmd(run, image: str, layer: str, max_channels: int) -> None:
    """Every channel's activation map of one image at a layer, the input beside it; on a rectified layer all-zero
    (dead) maps are framed red (on a linear layer a map that is nowhere positive is not dead)."""
    acts = activation_maps(run.model, image, layer)
    save(render.activations_figure(acts, max_channels=max_channels), run.out / "activations.png")
    run.save({"image": image, "layer": layer, "channels": acts.channels, "map_size": list(acts.maps.shape[-2:]),
              "rectified": acts.rectified, "dead": [int(c) for c in np.flatnonzero(acts.dead)],
              "nonpositive": [int(c) for c in np.flatnonzero(acts.nonpositive)],
              "max": acts.maps.flatten(1).amax(1).tolist()})


@main.command("neighbors")
@_DATASET
@model_options("neighbors")
@cluster_options
@click.option("--query", "-q", "queries", multiple=True, required=True, type=click.Path(),
              help="Query image (repeat for several).")
@click.option("--layer", "-l", default=None, help="Feature layer [default: the CNN code before the classifier].")
@click.option("--k", type=COUNT, default=8, show_default=True, help="Neighbours per query.")
@_CACHE
def neighbors_cmd(run, dataset: str, queries: tuple[str, ...], layer: str | None, k: int,
                  cache_dir: str | None) -> None:
    """Each query's k nearest dataset images in feature space, beside its nearest in pixel space."""
    res = neighbors(run.model, dataset, list(queries), layer=layer, k=k, cache_dir=_cache(run, cache_dir))
    save(render.neighbors_figure(res, max_queries=len(queries)), run.out / "neighbors.png")
    run.save({"layer": res.layer, "queries": [
        {"file": str(q),
         "feature": [{"file": str(res.files[i]), "distance": float(d)}
                     for i, d in zip(res.feature_index[n], res.feature_distance[n])],
         "pixel": [{"file": str(res.files[i]), "distance": float(d)}
                   for i, d in zip(res.pixel_index[n], res.pixel_distance[n])]}
        for n, q in enumerate(res.queries)]})


@main.command("embed")
@_DATASET
@model_options("embed")
@cluster_options
@click.option("--layer", "-l", default=None, help="Feature layer [default: the CNN code before the classifier].")
@click.option("--method", type=click.Choice(["tsne", "pca", "umap"]), default="tsne", show_default=True)
@click.option("--grid", "grid_side", type=COUNT, default=None, help="Mosaic side G [default: ceil(sqrt(N))].")
@click.option("--cell", type=COUNT, default=40, show_default=True, help="Mosaic cell size in pixels.")
@click.option("--exact", is_flag=True, help="openTSNE's default schedule instead of the fast one.")
@_LIMIT
@_CACHE
def embed_cmd(run, dataset: str, layer: str | None, method: str, grid_side: int | None, cell: int,
              exact: bool, limit: int | None, cache_dir: str | None) -> None:
    """2-D map of the dataset's CNN codes: a scatter coloured by label and a one-image-per-cell mosaic."""
    model = run.model
    ds = load_dataset(dataset, limit=limit)
    layer = layer or feature_layer(model)
    out = scan(model, ds, [PooledFeatures(layer)], cache_dir=_cache(run, cache_dir))
    feats = out["features"]
    codes = np.asarray(feats[layer])
    emb = embed(codes, method, seed=run.seed, fast=not exact)
    cells, side = grid_assignment(emb.xy, grid_side)
    labels = feats.labels
    has_labels = labels is not None and any(lab is not None for lab in labels)
    save(render.embedding_scatter(emb, labels if has_labels else None), run.out / "scatter.png")
    save(render.embedding_grid(feats.files, cells, side, cell_px=cell), run.out / "grid.png")
    tw = "n/a" if emb.trustworthiness is None else f"{emb.trustworthiness:.3f}"
    click.echo(f"{method}: {len(codes)} codes in {emb.seconds:.1f}s, trustworthiness {tw}")
    run.save({"layer": layer, "method": method, "trustworthiness": emb.trustworthiness,
              "embed_seconds": emb.seconds, "scan_seconds": out.seconds, "engine": out.engine, "grid": side,
              "params": emb.params, "skipped": out.skipped,
              "scan": {"images": len(ds), "network": out.images - out.resumed, "from_checkpoint": out.resumed,
                       "from_cache": len(ds) - len(out.skipped) - out.images},
              "points": [{"file": str(f), "x": float(p[0]), "y": float(p[1]), "cell": int(c),
                          "label": labels[i] if has_labels else None}  # type: ignore[index]
                         for i, (f, p, c) in enumerate(zip(feats.files, emb.xy, cells))]})


@main.command("top-patches")
@_DATASET
@model_options("top-patches")
@cluster_options
@click.option("--layer", "-l", default=None,
              help="A layer with a spatial map [default: a rectified layer mid-depth, from the layer index].")
@click.option("--channels", "-c", default="0-15", show_default=True, help="Channels, e.g. 0-15 or 3,7,9.")
@click.option("--k", type=COUNT, default=9, show_default=True, help="Patches per channel.")
@click.option("--guided", is_flag=True, help="Beside each patch, its unit's guided-backprop image.")
@click.option("--crop", type=click.Choice(["auto", "erf", "rf"]), default="auto", show_default=True,
              help="rf: the theoretical receptive field; erf: the square around the unit holding 90%% of its "
                   "guided-backprop mass; auto: erf where the receptive field is at least half the image.")
@click.option("--direction", "directions", multiple=True, type=click.Choice(["unit", "random", "pca"]),
              help="Top patches along random / principal directions of the layer, beside single units, from one "
                   "scan, with their class coherence (Szegedy et al. 2014). Repeat for several.")
@click.option("--count", type=COUNT, default=8, show_default=True, help="With --direction: directions of each kind.")
@_LIMIT
@_CACHE
def top_patches_cmd(run, dataset: str, layer: str | None, channels: str, k: int, guided: bool, crop: str,
                    directions: tuple[str, ...], count: int, limit: int | None, cache_dir: str | None) -> None:
    """For each channel, the k dataset patches that activate it most, cropped to the unit's receptive field."""
    model = run.model
    if layer is None:
        from ..read.scan import unit_layers

        picks = unit_layers(model, 3)
        layer = picks[len(picks) // 2]  # rectified, mid-depth; named in the figure's title and result.json
    info = model.layers[layer]
    chans = parse_range(channels, info.channels if info.spatial else None)
    if directions:
        _directions(run, dataset, layer, chans, k, directions, count, limit)
        return
    tp = top_patches(model, load_dataset(dataset, limit=limit), layer, channels=chans, k=k, crop=crop)
    g = None
    if guided:
        tp = guided_patches(model, tp)  # with the reason of every all-zero guided map
        g = [[render.to_rgb(t) for t in row] for row in tp.guided or []]
    save(render.top_patches_figure(tp, guided=g), run.out / "top_patches.png")
    run.save({"layer": layer, "receptive_field": list(tp.rf_size), "ties_ranked_by": tp.secondary, "crop": tp.crop,
              "erf_mass": tp.mass, "channels": [
        {"channel": c, "tied": t, "patches": [{"file": str(p.file), "value": p.value, "mean": p.mean,
                                              "box": list(p.box), "unit": [p.y, p.x], "clipped": p.clipped,
                                              "rf_box": list(p.rf_box or p.box), "fallback": p.fallback}
                                             for p in ps]}
        for c, ps, t in zip(tp.channels, tp.patches, tp.ties or [0] * len(tp.channels))]})


@main.command("receptive-field")
@_DATASET
@model_options("receptive-field")
@cluster_options
@click.option("--layer", "-l", required=True, help="A layer with a spatial map.")
@click.option("--channel", "-c", type=NATURAL, required=True, help="The channel whose unit to measure.")
@click.option("--images", "n_images", type=COUNT, default=8, show_default=True, help="Top images to average over.")
@click.option("--occluder", type=COUNT, default=11, show_default=True, help="Random occluder side in pixels.")
@click.option("--stride", type=COUNT, default=None, help="Occluder step [default: about RF/20].")
@_LIMIT
@_CACHE
def receptive_field_cmd(run, dataset: str, layer: str, channel: int, n_images: int, occluder: int,
                        stride: int | None, limit: int | None, cache_dir: str | None) -> None:
    """Empirical receptive field of a unit (Zhou et al. 2015) beside its theoretical one."""
    model = run.model
    tp = top_patches(model, load_dataset(dataset, limit=limit), layer, channels=[channel], k=n_images)
    patches = tp.patches[0]
    x = torch.stack([model.preprocess.to_tensor(p.file) for p in patches])
    erf = empirical_receptive_field(model, x, layer, channel, units=[(p.y, p.x) for p in patches],
                                    occluder=occluder, stride=stride, seed=run.seed)
    save(render.receptive_field_figure(erf, x), run.out / "receptive_field.png")
    click.echo(f"{layer} channel {channel}: theoretical {erf.theoretical:.0f}px, empirical ~{erf.empirical:.0f}px")
    run.save({"layer": layer, "channel": channel, "theoretical": erf.theoretical, "empirical": erf.empirical,
              "occluder": erf.occluder, "stride": erf.stride, "peak_offset": list(erf.peak),
              "images": [{"file": str(p.file), "unit": [p.y, p.x], "value": p.value} for p in patches]})


@main.command("dead-units")
@_DATASET
@model_options("dead-units")
@cluster_options
@click.option("--layer", "-l", "layers", multiple=True, help="Layers (repeat) [default: every rectifier output].")
@_LIMIT
def dead_units_cmd(run, dataset: str, layers: tuple[str, ...], limit: int | None) -> None:
    """Per layer, the channels that never fire on any image of the dataset: a table and a bar chart."""
    model = run.model
    names = list(layers) or dead_unit_layers(model)
    out = scan(model, load_dataset(dataset, limit=limit), [DeadUnits(names)])
    dead = out["dead"]
    click.echo(f"{'layer':<36} {'channels':>8} {'dead':>6} {'fraction':>9}")
    for name, d in dead.items():
        click.echo(f"{name:<36} {d.channels:>8} {len(d.dead):>6} {d.fraction:>9.1%}")
    save(render.dead_units_figure(dead), run.out / "dead_units.png")
    run.save({"images": out.images, "engine": out.engine, "skipped": out.skipped, "layers": {
        name: {"channels": d.channels, "dead": d.dead, "fraction": d.fraction,
               "silent_fraction": d.silent_fraction.round(4).tolist()} for name, d in dead.items()}})


def _directions(run, dataset: str, layer: str, chans: list[int], k: int, kinds: tuple[str, ...], count: int,
                limit: int | None) -> None:
    """``top-patches --direction``: units, random and principal directions from one scan, with coherence."""
    from ..read import crop_patches
    from ..read.directions import units_vs_directions
    from ..show.correspond import directions_figure

    model = run.model
    if not model.layers[layer].spatial:
        raise UserError(f"layer {layer!r} has no spatial map (output {model.layers[layer].shape}); "
                        "pick a convolutional layer")
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    want = ["unit", *[d for d in kinds if d != "unit"]]
    st = units_vs_directions(model, load_dataset(dataset, limit=limit), [layer], kinds=want, count=count, k=k,
                             units=chans[:count], seed=run.seed)
    dt = st.layers[layer]
    tp = crop_patches(model, dt.top)
    save(directions_figure(dt, tp), run.out / "directions.png")
    coh = dt.coherence
    if coh is not None:
        click.echo(f"{layer}: class coherence of the top {k} images ({coh.source}; classifier space = rows of "
                   f"the final linear layer)")
        click.echo(f"{'kind':<8}{'n':>5}{'same-class pairs':>18}{'near-class pairs':>18}{'classifier similarity':>24}")
        for r in st.table():
            click.echo(f"{r[1]:<8}{r[2]:>5}{r[3]:>11.3f} +-{r[4]:.3f}{r[5]:>11.3f} +-{r[6]:.3f}{r[7]:>17.3f} +-{r[8]:.3f}")
    ds = dt.directions
    run.save({"layer": layer, "receptive_field": list(tp.rf_size), "images": st.images, "kinds": want,
              "coherence": None if coh is None else {
                  "classes": coh.source, "k": coh.k, "chance_same_class": list(coh.chance_same_class),
                  "chance_similarity": list(coh.chance_similarity),
                  "chance_near_class": list(coh.chance_near_class), "near": coh.near,
                  "table": [dict(zip(["layer", "kind", "n", "same_class", "same_class_sem", "near_class",
                                      "near_class_sem", "similarity", "similarity_sem"], row))
                            for row in st.table()]},
              "directions": [
                  {"kind": ds.kind[i], "index": ds.index[i], "label": ds.label(i), "explained": ds.explained[i],
                   "same_class": None if coh is None else coh.same_class[i],
                   "near_class": None if coh is None else coh.near_class[i],
                   "similarity": None if coh is None else coh.similarity[i],
                   "flat": None if coh is None else bool(coh.flat[i]),
                   "patches": [{"file": str(p.file), "value": p.value, "box": list(p.box), "unit": [p.y, p.x]}
                               for p in tp.patches[i]]}
                  for i in range(len(ds.kind))]})
