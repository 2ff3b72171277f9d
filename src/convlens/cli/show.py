"""Show commands: ``tour`` (the whole lecture as one HTML report) and ``microscope`` (a static site of a model)."""

from __future__ import annotations

import click

from .common import COUNT, NATURAL, at_least, cluster_options, main, model_options


def _section_progress(i: int, n: int, res) -> None:
    if res.status == "pending":
        click.echo(f"[{i + 1}/{n}] {res.title} ...", err=True)
    else:
        extra = f": {res.error}" if res.error else ""
        click.echo(f"[{i}/{n}] {res.title}: {res.status_text} ({res.seconds:.1f} s){extra}", err=True)


@main.command("tour")
@model_options("tour")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of your photos [default: scikit-image's bundled photos].")
@click.option("--quick", is_flag=True, help="Small sizes and few steps: minutes on a laptop CPU (make tour).")
@click.option("--only", default=None, help="Comma-separated section keys to run (the rest are listed as skipped).")
@click.option("--style", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A painting for the style sections [default: the shipped Starry Night network's rendering of a "
                   "photo; no painting ships].")
@click.option("--transfer-to", default=None,
              help="Second network for the attacks' transfer [default: another embedded network with the same classes].")
def tour_cmd(run, images: str | None, quick: bool, only: str | None, style: str | None,
             transfer_to: str | None) -> None:
    """The whole lecture on one model as a static HTML report (OUT/index.html, pictures beside it)."""
    from ..errors import UserError
    from ..models import load_model
    from ..show.tour import SECTIONS, run_tour

    keys = [k.strip() for k in only.split(",") if k.strip()] if only else None
    unknown = sorted(set(keys or ()) - {s.key for s in SECTIONS})
    if unknown:  # before the model is loaded
        raise UserError(f"unknown tour section(s) {', '.join(unknown)}; valid: {', '.join(s.key for s in SECTIONS)}")
    other = load_model(transfer_to, device=run.device) if transfer_to else None
    report = run_tour(run.model, run.out, images=images, quick=quick, seed=run.seed, only=keys, style=style,
                      transfer_to=other, progress=_section_progress)
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    click.echo(f"tour: {counts}; total time {report.seconds:.0f} s ({report.seconds / 60:.1f} min); open "
               f"{report.path}", err=True)
    run.save(report.as_dict())


@main.command("microscope")
@click.argument("dataset", type=click.Path(exists=True))
@model_options("microscope")
@cluster_options
@click.option("--layers", default=None, help="Comma-separated layer names [default: three spread over the depth].")
@click.option("--k", "k", type=COUNT, default=9, show_default=True, help="Top patches per channel.")
@click.option("--max-channels", type=COUNT, default=None, help="Only the first N channels of each layer get pages.")
@click.option("--vis-steps", type=NATURAL, default=48, show_default=True,
              help="Feature-visualization steps per channel (0: none).")
@click.option("--vis-size", type=at_least(16), default=96, show_default=True, help="Feature-visualization side in pixels.")
@click.option("--batch-size", type=COUNT, default=32, show_default=True, help="Scan batch size.")
def microscope_cmd(run, dataset: str, layers: str | None, k: int, max_channels: int | None, vis_steps: int,
                   vis_size: int, batch_size: int) -> None:
    """One scan of DATASET, then a static site: layers, a page per layer and a page per channel (resumable)."""
    from ..errors import UserError
    from ..show.microscope import build_microscope

    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    site = build_microscope(run.model, dataset, run.out, layers=names, k=k, max_channels=max_channels,
                            vis_steps=vis_steps, vis_size=vis_size, batch_size=batch_size, seed=run.seed)
    click.echo(f"microscope: {site.images} images, {len(site.layers)} layers; open {site.index}", err=True)
    run.save(site.as_dict())
