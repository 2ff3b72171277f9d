"""Units vs directions (Szegedy et al. 2014): are single units more "meaningful" than random directions?

For a few layers of the embedded model, the top-9 shared photos along single units, random unit directions and
principal directions -- all from ONE scan (plus one scan for the covariance) -- and how alike their classes are:
the fraction of top-9 pairs with the same label, and the mean cosine similarity of their classes' rows in the
network's final linear layer (centred), and the fraction of pairs whose classes are the same or among each other's
10 nearest classes there, each beside chance (random 9-photo subsets).

    python benchmarks/bench_directions.py [--layers blocks.2,blocks.4,blocks.5,blocks.6] [--count 32] [--limit N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import convlens
from convlens.read.directions import units_vs_directions

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="blocks.2,blocks.4,blocks.5,blocks.6")
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Also write the table here.")
    args = ap.parse_args()
    if not SAMPLE.is_dir():
        raise SystemExit(f"shared photos not found at {SAMPLE}")
    model = convlens.load_model()
    layers = [s for s in args.layers.split(",") if s]
    st = units_vs_directions(model, SAMPLE, layers, count=args.count, k=args.k, seed=args.seed, limit=args.limit)
    first = next(iter(st.layers.values())).coherence
    print(f"{st.images} photos, {st.seconds:.0f}s; classes from {first.source if first else '-'}; "
          f"top-{args.k} images per direction, {args.count} directions per kind")
    print(f"{'layer':<10}{'kind':<8}{'n':>5}{'same-class pairs':>20}{'near-class pairs':>20}"
          f"{'classifier similarity':>24}")
    for r in st.table():
        print(f"{r[0]:<10}{r[1]:<8}{r[2]:>5}{r[3]:>12.4f} +-{r[4]:.4f}{r[5]:>12.4f} +-{r[6]:.4f}"
              f"{r[7]:>16.4f} +-{r[8]:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": st.table(), "images": st.images, "params": st.params}))


if __name__ == "__main__":
    main()
