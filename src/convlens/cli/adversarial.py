"""Adversarial commands: ``fool``, ``attack``, ``universal``."""

from __future__ import annotations

import csv
from pathlib import Path

import click
import torch
from tqdm import tqdm

from ..adversarial import ATTACKS, NORMS, check_disjoint, evaluate_attack, fool, fooling_rate, universal_perturbation
from ..adversarial.ball import norms, quantize_into_ball
from ..errors import UserError
from ..images import list_images, read_images, to_pil, to_pixels
from ..models import Model, load_model
from ..results import output_names, save_image, save_torch
from ..show.adversarial import attack_examples, fooling_figure, magnify, universal_figure
from ..show.figures import save
from .common import COUNT, NATURAL, POSITIVE_FRACTION, FiniteFloat, main, model_options, parse_fraction


def _load_all(model: Model, files: list[Path], what: str, batch: int = 32
              ) -> tuple[torch.Tensor, list[Path], list[dict[str, str]]]:
    """Read every file (skip-and-report: an unreadable or oversized one is left out and listed)."""
    items = tqdm(files, desc=f"reading {what}", unit="img", leave=False, disable=len(files) <= batch)
    read = read_images(list(items), model.load)
    return torch.cat(read.items), read.files, read.skipped_json()


def _save_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float | None, norm: str, paths: list[Path]
                      ) -> tuple[torch.Tensor, dict[str, object]]:
    """Save the 8-bit PNGs inside the eps-ball and [0, 1] (what a user publishes); return them as read back."""
    q, inside = quantize_into_ball(x_adv, x, eps, norm)
    for img, path in zip(q, paths):
        save_image(to_pil(img), path)
    linf, l2 = norms(q, x)
    info: dict[str, object] = {
        "quantized": "8-bit PNG on the k/255 grid, each pixel chosen inside the eps-ball around the clean image "
                     "and in [0, 1]; the numbers after_png are measured on these files read back",
        "inside_ball": int(inside.sum()), "outside_ball": int((~inside).sum()),
        "linf_max": float(linf.max()), "l2_max": float(l2.max())}
    if not bool(inside.all()):
        info["why_outside"] = "no 8-bit image lies within eps of the clean image (eps below half a grey level)"
    return q, info


def _folder_labels(files: list[Path]) -> list[int] | None:
    """True classes from a ``LABELS.csv`` (columns ``file``, ``class_index``) beside the images, if every file has one."""
    table: dict[str, int] = {}
    for d in {f.parent for f in files} | {f.parent.parent for f in files}:
        csv_path = d / "LABELS.csv"
        if csv_path.is_file():
            with open(csv_path) as fh:
                for row in csv.DictReader(fh):
                    if "file" in row and "class_index" in row:
                        table[row["file"]] = int(row["class_index"])
    if not table:
        return None
    found = [table.get(f.name, table.get(f"{f.parent.name}/{f.name}")) for f in files]
    return None if any(v is None for v in found) else [int(v) for v in found]  # type: ignore[arg-type]


@main.command("fool")
@click.argument("image")
@model_options("fool")
@click.option("--target", required=True, help="Class to fool the network into: a name (koala) or an index (105).")
@click.option("--eps", type=POSITIVE_FRACTION, default="8/255", show_default=True, help="Largest allowed change per pixel (pixel units).")
@click.option("--unbounded", is_flag=True, help="No eps limit (only the [0, 1] box).")
@click.option("--alpha", type=POSITIVE_FRACTION, default="0.5/255", show_default=True, help="Step size.")
@click.option("--max-steps", type=COUNT, default=100, show_default=True, help="Give up after this many steps.")
@click.option("--confidence", type=FiniteFloat(0.0, 1.0, min_open=True), default=0.5, show_default=True,
              help="Target probability that counts as fooled.")
@click.option("--norm", type=click.Choice(NORMS), default="linf", show_default=True)
def fool_cmd(run, image: str, target: str, eps: str, unbounded: bool, alpha: str, max_steps: int,
             confidence: float, norm: str) -> None:
    """The lecture's fooling image: change IMAGE a little until the network sees --target, stop right there.

    Writes fooling.png (original | perturbation x10 | fooled), fooled.png and result.json.
    """
    model = run.model
    t = model.class_index(target)
    x = model.load(image)
    e = None if unbounded else parse_fraction(eps)
    res = fool(model, x, t, eps=e, alpha=parse_fraction(alpha), max_steps=max_steps, confidence=confidence,
               norm=norm)
    s = res.summary()
    o, tg = res.original[0], res.target[0]
    fooled_png = run.out / "fooled.png"
    saved, png_info = _save_adversarial(res.adversarial[:1], x[:1], e, norm, [fooled_png])
    with torch.no_grad():
        p = model(saved.to(model.device)).softmax(1)[0]
    after = {"index": int(p.argmax()), "label": model.label(int(p.argmax())), "prob_target": float(p[t])}
    linf, l2 = float(res.linf[0]), float(res.l2[0])
    fig = fooling_figure(x[0], res.adversarial[0], original_label=f"{o.label} ({o.index})", original_prob=o.prob,
                         target_label=f"{tg.label} ({tg.index})", target_prob=tg.prob, linf=linf, l2=l2,
                         steps=int(res.steps[0]))
    save(fig, run.out / "fooling.png")
    verdict = "fooled" if res.success[0] else f"NOT fooled within {max_steps} steps (try --max-steps or --unbounded)"
    click.echo(f"{o.label} ({o.prob:.3f}) -> {tg.label} ({tg.prob:.3f}): {verdict}; {int(res.steps[0])} steps, "
               f"Linf {linf * 255:.2f}/255, L2 {l2:.3f}; saved PNG predicts {after['label']}")
    run.save({"fool": s, "after_png": after, "saved_png": png_info})


@main.command("attack")
@click.argument("images", nargs=-1, required=True)
@model_options("attack")
@click.option("--method", type=click.Choice(list(ATTACKS)), default="pgd", show_default=True)
@click.option("--eps", type=POSITIVE_FRACTION, default="8/255", show_default=True, help="Radius of the allowed change (pixel units).")
@click.option("--alpha", type=POSITIVE_FRACTION, default=None, help="Step size [default: eps/4].")
@click.option("--steps", type=COUNT, default=10, show_default=True, help="Steps of ifgsm / pgd.")
@click.option("--targeted", default=None, help="Send every image to this class (name or index) instead.")
@click.option("--norm", type=click.Choice(NORMS), default="linf", show_default=True)
@click.option("--transfer-to", default=None, help="Also evaluate the adversarial images on this model.")
@click.option("--batch-size", type=COUNT, default=32, show_default=True)
@click.option("--limit", type=COUNT, default=None, help="Use only the first N images.")
@click.option("--no-early-stop", is_flag=True, help="Keep stepping images that are already fooled.")
def attack_cmd(run, images: tuple[str, ...], method: str, eps: str, alpha: str | None, steps: int,
               targeted: str | None, norm: str, transfer_to: str | None, batch_size: int, limit: int | None,
               no_early_stop: bool) -> None:
    """FGSM (Goodfellow 2015), iterative FGSM (Kurakin 2017) or PGD (Madry 2018) on an image or a folder.

    Labels come from a LABELS.csv (file, class_index) beside the images, else the model's own predictions.
    Writes the adversarial PNGs (images/), reloads them to measure the success rate after 8-bit rounding,
    examples.png and result.json.
    """
    model = run.model
    files = list_images(images)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise UserError("no images found in " + ", ".join(images))
    target = model.class_index(targeted) if targeted is not None else None
    other = load_model(transfer_to, device=run.device) if transfer_to else None
    x, files, skipped = _load_all(model, files, "images", batch_size)
    labels = _folder_labels(files)
    gen = run.generator()
    with tqdm(total=len(files), desc=f"{method} eps={eps}", unit="img", leave=False) as bar:
        rep = evaluate_attack(model, x, torch.tensor(labels) if labels is not None else None, method=method,
                              eps=parse_fraction(eps), alpha=parse_fraction(alpha) if alpha else None, steps=steps,
                              norm=norm, target=target, batch_size=batch_size, generator=gen,
                              early_stop=not no_early_stop, transfer_to=other, progress=bar.update)
    # the saved PNGs, read back from disk, are what a user would hand on: measure them, not a simulation
    img_dir = run.out / "images"
    names = output_names(files)  # a/x.jpg and b/x.jpg -> images/a/x.png and images/b/x.png
    paths = [img_dir / n for n in names]
    e = parse_fraction(eps)
    _, png_info = _save_adversarial(rep.adversarial, x, e, norm, paths)
    xr = torch.stack([to_pixels(read) for read in read_images(paths).items]).to(x.device)  # read back from disk
    with torch.no_grad():
        png_pred = torch.cat([model(xr[i:i + batch_size]).argmax(1) for i in range(0, len(xr), batch_size)])
    hit = png_pred == target if target is not None else png_pred != rep.labels
    n_att = int(rep.attacked.sum())
    rep.success_rate_after_png = float((hit & rep.attacked).sum()) / n_att if n_att else None
    rep.png_pred = png_pred
    summary = rep.summary()
    for k, v in summary.items():
        click.echo(f"{k:<24} {v if not isinstance(v, float) else round(v, 4)}")
    extra: dict[str, object] = {}
    if rep.transfer is not None:
        tr = rep.transfer
        shown = None if tr.transfer_rate is None else round(tr.transfer_rate, 4)
        click.echo(f"{'transfer to ' + tr.model:<24} {shown}")
        extra["transfer"] = tr
    idx = rep.fooled.nonzero().flatten()[:4]  # examples are fooled images only; the title says how many there were
    if idx.numel():
        fig = attack_examples(x[idx], rep.adversarial[idx], [model.label(int(rep.clean_pred[i])) for i in idx],
                              [model.label(int(rep.adv_pred[i])) for i in idx], clean_probs=rep.clean_prob[idx].tolist(),
                              adv_probs=rep.adv_prob[idx].tolist(),
                              title_text=f"{method} eps={eps}: {int(rep.fooled.sum())} of {n_att} attacked images "
                                         f"fooled; {int(idx.numel())} shown")
        save(fig, run.out / "examples.png")
    else:
        click.echo(f"no image was fooled ({n_att} attacked): examples.png not written", err=True)
    run.save({"attack": summary, **extra}, labels="LABELS.csv" if labels is not None else "model predictions",
             files=len(files), skipped=skipped, saved_png=png_info,
             outputs=[{"file": str(f), "output": f"images/{n}"} for f, n in zip(files, names)])


@main.command("universal")
@click.argument("folder")
@model_options("universal")
@click.option("--holdout", required=True, help="Folder of other images to measure the fooling rate on.")
@click.option("--eps", type=POSITIVE_FRACTION, default="10/255", show_default=True, help="Radius of the pattern (pixel units).")
@click.option("--norm", type=click.Choice(NORMS), default="linf", show_default=True)
@click.option("--epochs", type=COUNT, default=10, show_default=True, help="Passes over FOLDER.")
@click.option("--batch-size", type=COUNT, default=32, show_default=True)
@click.option("--step", type=POSITIVE_FRACTION, default=None, help="First step size [default: eps/2, cosine-decayed to eps/100].")
@click.option("--dominant/--no-dominant", default=False, show_default=True,
              help="After the first epoch, pull every image towards the class the pattern favours most.")
@click.option("--limit", type=COUNT, default=None, help="Use only the first N images of each folder.")
@click.option("--examples", type=NATURAL, default=8, show_default=True, help="Fooled held-out photos to show.")
def universal_cmd(run, folder: str, holdout: str, eps: str, norm: str, epochs: int, batch_size: int,
                  step: str | None, dominant: bool, limit: int | None, examples: int) -> None:
    """A universal adversarial perturbation (Moosavi-Dezfooli 2017; SGD variant, Shafahi 2020) built on FOLDER.

    The fooling rate is measured on --holdout, whose images must differ from FOLDER's. Writes perturbation.png
    (magnified), perturbation.pt (the pattern in pixel units), universal.png (fooled examples) and result.json.
    """
    model = run.model
    train_files, hold_files = list_images(folder), list_images(holdout)
    if limit is not None:
        train_files, hold_files = train_files[:limit], hold_files[:limit]
    if not train_files or not hold_files:
        raise UserError("both FOLDER and --holdout need images")
    shared = {f.resolve() for f in train_files} & {f.resolve() for f in hold_files}
    if shared:
        raise UserError(f"{len(shared)} file(s) are in both FOLDER and --holdout (e.g. {min(shared)})")
    x, train_files, skipped = _load_all(model, train_files, "construction images", batch_size)
    xh, hold_files, skipped_h = _load_all(model, hold_files, "held-out images", batch_size)
    check_disjoint(x, xh)
    e = parse_fraction(eps)
    with tqdm(total=len(train_files) * epochs, desc="universal", unit="img", leave=False) as bar:
        res = universal_perturbation(model, x, eps=e, norm=norm, epochs=epochs, batch_size=batch_size,
                                     step=parse_fraction(step) if step else None, dominant=dominant,
                                     generator=run.generator(),
                                     progress=bar.update)
    rate, clean, pert = fooling_rate(model, xh, res.perturbation, batch_size=batch_size)
    save_torch(res.perturbation.cpu(), run.out / "perturbation.pt")
    save(to_pil(magnify(res.perturbation, None, eps=e)), run.out / "perturbation.png")
    fooled = (clean != pert).nonzero().flatten()[:examples]
    ex = [(xh[i] + res.perturbation).clamp(0, 1) for i in fooled]
    caps = [(model.label(int(clean[i])), model.label(int(pert[i]))) for i in fooled]
    save(universal_figure(res.perturbation, ex, eps=e, labels=caps, fooling_rate=rate), run.out / "universal.png")
    click.echo(f"fooling rate on {len(hold_files)} held-out images: {rate:.3f} (on the {len(train_files)} "
               f"construction images: {res.train_fooling_rate:.3f}); built in {res.seconds:.1f} s")
    run.save({"universal": {"fooling_rate": rate, "eps": e, "train_images": len(train_files),
                            "holdout_images": len(hold_files)}},
             skipped=skipped + skipped_h, construction={"train_fooling_rate": res.train_fooling_rate, "epochs": res.epochs, "steps": res.steps,
                           "seconds": res.seconds, "norm": norm})
