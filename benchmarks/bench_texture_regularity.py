"""Does texture synthesis keep a regular texture's period? (issue 13: the brick loses its rows and mortar lines.)

Synthesises the brick (scikit-image's ``data.brick()``, the tour's texture sample) on the embedded model and prints
the source's dominant period (strongest peak of the grey 2-D power spectrum), the synthesis's, and the regularity
score: the share of the synthesis's power at the source's dominant frequency relative to the source's own share
(1 = as regular as the source, ~0 = noise). ``--spectrum 0 --octaves 1`` is the plain Gram synthesis (Gatys et
al. 2015); ``--figure PATH`` runs it too and saves sample | Gram only | the chosen setting, with the scores
(the syntheses cropped to the sample's size, so bricks are shown at the same scale).

    OMP_NUM_THREADS=1 python benchmarks/bench_texture_regularity.py [--side 128] [--steps 60] [--spectrum 0]
        [--octaves 1] [--figure docs/img/style/texture_brick_before_after.jpg]
"""

from __future__ import annotations

import argparse
import time

import torch

import convlens
from convlens.images import to_pil, to_pixels
from convlens.show.figures import side_by_side
from convlens.show.tour import shipped_photo
from convlens.synthesize.texture import TextureResult, _resize_long, regularity, regularity_score, synthesize_texture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=128, help="sample side (the tour: 128 quick, 256 full)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--spectrum", type=float, default=None, help="spectrum weight [default: the library's]")
    ap.add_argument("--octaves", type=int, default=None, help="coarse-to-fine levels [default: the library's]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="save the synthesis to this PNG")
    ap.add_argument("--figure", default=None, help="also run Gram only and save the before / after figure here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = convlens.load_model("efficientnet_lite0")
    sample = to_pixels(shipped_photo("brick"))[None]
    measured = _resize_long(sample, args.side)
    src = regularity(measured)
    given = {"spectrum_weight": args.spectrum, "octaves": args.octaves}
    kw = {k: v for k, v in given.items() if v is not None}

    def run(**kw: object) -> TextureResult:
        return synthesize_texture(model, sample, size=(2 * args.side, 2 * args.side), steps=args.steps,
                                  sample_size=args.side, seed=args.seed, **kw)  # type: ignore[arg-type]

    t0 = time.perf_counter()
    res = run(**kw)
    secs = time.perf_counter() - t0
    syn = regularity(res.image)
    score = regularity_score(measured, res.image)
    print(f"sample {args.side} px, output {2 * args.side} px, {res.steps} steps, {secs:.1f} s, "
          f"settings {kw or 'the defaults'}")
    print(f"source period {src.period:.1f} px at {src.angle:.0f} deg (peak share {src.peak_share:.3f})")
    print(f"synthesis period {syn.period:.1f} px at {syn.angle:.0f} deg (peak share {syn.peak_share:.3f})")
    print(f"regularity score {score:.3f}   style loss {res.style_loss:.4f}")
    if args.save:
        to_pil(res.image).save(args.save)
    if args.figure:
        plain = run(spectrum_weight=0.0, octaves=1)
        plain_score = regularity_score(measured, plain.image)
        print(f"Gram only: regularity score {plain_score:.3f}   style loss {plain.style_loss:.4f}")
        label = ", ".join(f"{k} {v}" for k, v in kw.items()) or "default: coarse to fine + spectrum"
        crop = (slice(None), slice(0, measured.shape[-2]), slice(0, measured.shape[-1]))  # at the sample's scale
        fig = side_by_side([(measured[0], f"sample ({args.side} px)"),
                            (plain.image[0][crop], f"Gram only: score {plain_score:.2f}"),
                            (res.image[0][crop], f"{label}: score {score:.2f}")], height=256)
        fig.save(args.figure, quality=85)


if __name__ == "__main__":
    main()
