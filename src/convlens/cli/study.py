"""Study commands: ``slice`` (accuracy by image attribute and corruption) and ``human-study`` (people vs network)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..show.figures import save
from .common import COUNT, main, model_options


@main.command("slice")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@model_options("slice")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with file,class_index (or file,label) [default: the folder's LABELS.csv or a folder per class].")
@click.option("--attributes", default=None,
              help="Comma-separated attributes, or none [default: all built-in: object_scale, brightness, contrast, "
                   "colourfulness, sharpness, texture_energy, image_size, aspect_ratio]; other names are columns of "
                   "--table.")
@click.option("--table", type=click.Path(dir_okay=False), default=None,
              help="CSV with a file column whose other columns can be named in --attributes [default: the labels CSV].")
@click.option("--bins", type=COUNT, default=5, show_default=True, help="Equal-count bins per numeric attribute.")
@click.option("--corruptions", is_flag=False, flag_value="default", default=None,
              help="Also measure accuracy against corruption severity 1-5: alone = the default set (noise, blur, JPEG, "
                   "brightness, contrast, rotation, scale, occlusion), or 'all', or names separated by commas.")
@click.option("--corruption-limit", type=COUNT, default=None,
              help="Corrupt only this many images (evenly spread) [default: all].")
@click.option("--reference", default=None,
              help="Reference model for the corruption error (CE / mCE), e.g. efficientnet_lite1.")
@click.option("--limit", type=COUNT, default=None, help="Use only this many images (evenly spread).")
@click.option("--batch-size", type=COUNT, default=32, show_default=True)
def slice_cmd(run, dataset: str, labels: str | None, attributes: str | None, table: str | None, bins: int,
              corruptions: str | None, corruption_limit: int | None, reference: str | None, limit: int | None,
              batch_size: int) -> None:
    """Accuracy by image attribute (Russakovsky et al. 2015) and by corruption (Hendrycks & Dietterich 2019):
    top-1 / top-5 with 95% Wilson intervals per bin; writes attributes.png, corruptions.png, CSVs, result.json."""
    from ..models import load_model
    from ..show.study import attribute_figure, corruption_figure, write_slice_csv
    from ..study import slice_accuracy

    if reference is not None and corruptions is None:
        raise UserError("--reference compares corruption errors; add --corruptions")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    attrs = None if not attributes else [] if attributes.strip() == "none" else [
        a.strip() for a in attributes.split(",") if a.strip()]
    if attrs == [] and corruptions is None:
        raise UserError("--attributes none leaves nothing to measure; add --corruptions")
    model = run.model
    ref = load_model(reference, device=run.device) if reference else None
    result = slice_accuracy(model, dataset, labels=labels, attributes=attrs, table=table, bins=bins,
                            corruptions=corruptions, corruption_limit=corruption_limit, reference=ref, limit=limit,
                            batch_size=batch_size, seed=run.seed, progress=True)
    files = []
    if result.slices:
        save(attribute_figure(result), run.out / "attributes.png")
        files.append("attributes.png")
    if result.corruptions:
        save(corruption_figure(result), run.out / "corruptions.png")
        files.append("corruptions.png")
    files += [p.name for p in write_slice_csv(result, run.out)]
    o = result.overall
    click.echo(f"{o.n} images: top-1 {o.top1:.1%} [{o.top1_ci[0]:.1%}, {o.top1_ci[1]:.1%}], top-5 {o.top5:.1%}", err=True)
    for s in result.slices:
        click.echo(f"  {s.name}: " + ", ".join(f"{b.label} {b.top1:.0%} (n={b.n})" for b in s.bins), err=True)
    for c in result.corruptions:
        ce = f"  CE {c.ce:.0f}%" if c.ce is not None else ""
        click.echo(f"  {c.name}: top-1 " + " ".join(f"{v:.0%}" for v in c.top1) + ce, err=True)
    if result.mce is not None:
        click.echo(f"mCE {result.mce:.1f}%, relative mCE {result.relative_mce:.1f}% (vs {result.reference})", err=True)
    run.save({"slice": result.summary(), "files": files})


@main.command("human-study")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@model_options("human-study")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="CSV with file,class_index [default: the folder's LABELS.csv or a folder per class].")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="SQLite file of the answers [default: OUT/study.sqlite].")
@click.option("--report", "report_only", is_flag=True, help="Write the report (HTML + JSON) instead of serving.")
@click.option("--participants", default=None, help="Report only these participants (comma-separated).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--allow-remote", is_flag=True, help="Accept connections from other machines (off by default).")
@click.option("--limit", type=COUNT, default=None, help="Offer only this many photos (evenly spread).")
def human_study_cmd(run, dataset: str, labels: str | None, db: str | None, report_only: bool,
                    participants: str | None, host: str, port: int, allow_remote: bool, limit: int | None) -> None:
    """People against the network (Karpathy 2014): serve a local labelling app (one photo at a time, type-ahead over
    the class names, up to five guesses, skip, a reason; answers saved in SQLite as given), or with --report compare
    the answers with the network: report.html + result.json."""
    from ..show.study import write_human_report
    from ..study.human import create_app, human_report, make_server

    db_path = Path(db) if db else run.out / "study.sqlite"
    if report_only:
        who = [p.strip() for p in participants.split(",") if p.strip()] if participants else None
        rep = human_report(run.model, dataset, db_path, labels=labels, participants=who)
        write_human_report(rep, rep.dataset, run.out)
        for p in rep.participants:
            click.echo(f"{p.name}: {p.answers} answers, human top-1 {p.human_top1.value:.1%} top-5 "
                       f"{p.human_top5.value:.1%}; network top-1 {p.network_top1.value:.1%} top-5 "
                       f"{p.network_top5.value:.1%}", err=True)
        run.save({"human_study": rep, "database": str(db_path), "files": ["report.html"]})
        return
    if participants:
        raise UserError("--participants selects whom to report; use it with --report")
    model = run.model
    app = create_app(dataset, model.labels or [], db_path, labels=labels, seed=run.seed, allow_remote=allow_remote,
                     limit=limit)
    server = make_server(app, host, port, allow_remote=allow_remote)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"human study of {len(app.config['CONVLENS_FILES'])} photos at http://{shown}:{server.server_port}/ "
               f"(answers in {db_path}); Ctrl-C to stop", err=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
