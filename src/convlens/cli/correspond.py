"""``convlens correspond``: dense correspondence between two photos, or the measured warp study over a dataset
(Long, Zhang & Darrell 2014)."""

from __future__ import annotations

import click
import numpy as np

from ..errors import UserError
from ..read.correspond import ALPHAS, ANCHORS, GEOMETRIC, correspond, correspondence_layers, warp_study
from ..show.correspond import correspondence_figure, localisation_figure, pck_figure, warp_example_figure
from ..show.figures import save
from .common import COUNT, main, model_options


def _layers(model, layer: str | None, layers: str | None) -> list[str]:
    if layer and layers:
        raise UserError("give --layer or --layers, not both")
    names = [layer] if layer else [s.strip() for s in layers.split(",") if s.strip()] if layers else []
    names = names or correspondence_layers(model)
    for n in names:
        if not model.layers[n].spatial:
            raise UserError(f"layer {n!r} has no spatial map (output {model.layers[n].shape}); "
                            "pick a convolutional layer")
    return names


def _table(study, alpha: float) -> str:
    w0 = max(len(w) for w in [*study.warps, "mean"]) + 1
    cols = [max(8, len(m) + 1) for m in study.methods]
    lines = [f"PCK@{alpha:g} (within {alpha * max(study.size):.1f} px)".ljust(w0)
             + "".join(m.rjust(c) for m, c in zip(study.methods, cols))]
    for row in study.table(alpha):
        lines.append(str(row[0]).ljust(w0) + "".join(f"{v:.3f}".rjust(c) for v, c in zip(row[1:], cols)))
    return "\n".join(lines)


@main.command("correspond")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@model_options("correspond")
@click.option("--layer", "-l", default=None, help="One layer with a spatial map.")
@click.option("--layers", default=None, help="Comma-separated layers [default: the deepest layer of each "
              "resolution, from the layer index].")
@click.option("--warps", "study", is_flag=True, help="INPUTS is one dataset: run the warp study (PCK per layer, "
              "SIFT and pixels on known warps).")
@click.option("--points", type=COUNT, default=None, help="Query points per side of the grid [default: 12 for two "
              "photos, 10 for the study].")
@click.option("--step", type=COUNT, default=4, show_default=True, help="Candidate grid spacing in pixels.")
@click.option("--mutual/--all", "mutual", default=True, show_default=True,
              help="Two photos: draw only mutual nearest neighbours, or every match.")
@click.option("--tol", type=float, default=None, help="Mutual tolerance in pixels [default: max(1.5 x step, "
              "stride / 2)].")
@click.option("--anchors", is_flag=True, help="Two photos: also match SIFT and raw pixel patches.")
@click.option("--patch", type=COUNT, default=31, show_default=True, help="Side of the raw pixel patches.")
@click.option("--sift-size", type=float, default=4.0, show_default=True, help="SIFT keypoint diameter in pixels.")
@click.option("--warp", "warp_kinds", default=",".join(GEOMETRIC), show_default=True,
              help="Study: geometric warps to draw.")
@click.option("--no-photometric", is_flag=True, help="Study: leave out the warps with a photometric change.")
@click.option("--limit", type=COUNT, default=None, help="Study: use only this many photos (spread over the dataset).")
def correspond_cmd(run, inputs: tuple[str, ...], layer: str | None, layers: str | None, study: bool,
                   points: int | None, step: int, mutual: bool, tol: float | None, anchors: bool, patch: int,
                   sift_size: float, warp_kinds: str, no_photometric: bool, limit: int | None) -> None:
    """Dense nearest-neighbour correspondence in a layer's feature space: A.jpg B.jpg draws the matches;
    DATASET --warps measures PCK@0.02/0.05/0.1 per layer beside SIFT and raw pixels on known warps."""
    if not study and len(inputs) != 2:
        raise UserError(f"correspond needs two images (A B), or one dataset with --warps; got {len(inputs)}")
    if study and len(inputs) != 1:
        raise UserError(f"--warps takes one dataset (a folder or a list file), got {len(inputs)} paths")
    model = run.model
    names = _layers(model, layer, layers)
    if not study:
        res = correspond(model, inputs[0], inputs[1], layers=names, points=points or 12, step=step,
                         mutual=mutual, tol=tol, anchors=ANCHORS if anchors else (), patch=patch,
                         sift_size=sift_size)
        rf = {n: (model.layers[n].rf.size[0], model.layers[n].rf.stride[0]) for n in names}
        save(correspondence_figure(res, rf=rf), run.out / "correspond.png")
        for name, m in res.matches.items():
            click.echo(f"{name:<24} {int(m.mutual.sum()):>4}/{len(m.mutual)} mutual, mean similarity "
                       f"{float(np.mean(m.score)):.3f}")
        run.save({"a": inputs[0], "b": inputs[1], "step": step, "mutual_filter": mutual, "layers": {
            name: {"tolerance": res.tol[name], "mutual": int(m.mutual.sum()),
                   "receptive_field": list(rf[name]) if name in rf else None,
                   "matches": [{"a": [float(p) for p in pa], "b": [round(float(v), 2) for v in pb],
                                "score": float(s), "mutual": bool(k)}
                               for pa, pb, s, k in zip(m.points_a, m.points_b, m.score, m.mutual)]}
            for name, m in res.matches.items()}})
        return
    kinds = [k.strip() for k in warp_kinds.split(",") if k.strip()]
    st = warp_study(model, inputs[0], layers=names, warps=kinds, photo=not no_photometric, points=points or 10,
                    step=step, patch=patch, sift_size=sift_size, limit=limit, seed=run.seed)
    for a in st.alphas:
        click.echo(_table(st, a))
        click.echo("")
    goal = st.goal(0.05)
    click.echo(f"best layer (mean PCK@0.05 over warps): {goal['best_layer']}")
    if "beats_pixels_on_every_warp" in goal:
        click.echo(f"  beats raw pixels on every warp: {'yes' if goal['beats_pixels_on_every_warp'] else 'no'}")
    if "beats_sift_on_photometric_warps" in goal:
        click.echo(f"  beats SIFT on every warp with a photometric change: "
                   f"{'yes' if goal['beats_sift_on_photometric_warps'] else 'no'}")
    click.echo(f"{'layer':<24}{'RF px':>8}{'stride':>8}{'median err (correct)':>22}{'median err (all)':>18}")
    for r in st.localisation():
        click.echo(f"{r['method']:<24}{r['rf_size']:>8.0f}{r['stride']:>8.0f}{r['median_error_inliers']:>22.2f}"
                   f"{r['median_error_all']:>18.2f}")
    save(pck_figure(st), run.out / "pck.png")
    save(localisation_figure(st), run.out / "localisation.png")
    show = [goal["best_layer"], *[m for m in ANCHORS if m in st.methods]]
    ex_warp = next((w for w in st.warps if w.endswith("+photo") and w.startswith("affine")), st.warps[0])
    save(warp_example_figure(st, ex_warp, show), run.out / "example.png")
    click.echo(f"{len(st.photos)} photos, {st.seconds:.0f}s")
    run.save({"dataset": inputs[0], "photos": len(st.photos), "warps": st.warps, "alphas": list(ALPHAS),
              "methods": st.methods, "pck": st.pck, "points": st.points, "goal": st.goal(0.05),
              "goal_by_alpha": {str(a): st.goal(a) for a in st.alphas},
              "localisation": st.localisation(), "study": st.params, "study_seconds": st.seconds,
              "example_photo": str(st.example.get("photo", ""))})


__all__ = ["correspond_cmd"]
