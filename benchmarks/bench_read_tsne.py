"""Claim: embedding 20,000 CNN codes with convlens' t-SNE path is >= 2x faster than scikit-learn's TSNE at no
worse trustworthiness.

The 20,000 codes are real EfficientNet-Lite0 features, not noise: one scan of the 800 sample photos keeps, for
each photo, 25 "regional codes" -- the final 1280 x 7 x 7 feature map (``bn2``) average-pooled over 25 random
sub-windows (3x3 to 7x7 cells, seeded), i.e. the CNN code of 25 crops of the photo as the network sees them.
Both methods get the same 50-d PCA of these codes; trustworthiness (10 neighbours, scikit-learn's definition,
computed exactly in chunks) is measured against the 50-d codes both were given.

    python benchmarks/bench_read_tsne.py [--n 20000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import convlens
from convlens.read import Reducer, embed, pca, scan, trustworthiness

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
CACHE = Path("/tmp/convlens-bench")


class RegionCodes(Reducer):
    """A custom reducer: ``per_image`` random sub-windows of a spatial layer, each average-pooled to a code."""

    def __init__(self, layer: str, per_image: int, seed: int = 0) -> None:
        self.layers, self.name, self.per_image = (layer,), "regions", per_image
        self.gen = np.random.default_rng(seed)
        self.rows: dict[int, np.ndarray] = {}

    def update(self, activations, meta) -> None:
        a = activations[self.layers[0]].float()
        _, _, h, w = a.shape
        for img, i in zip(a, meta.ids):
            codes = []
            for _ in range(self.per_image):
                sh, sw = self.gen.integers(3, h + 1), self.gen.integers(3, w + 1)
                y, x = self.gen.integers(0, h - sh + 1), self.gen.integers(0, w - sw + 1)
                codes.append(img[:, y:y + sh, x:x + sw].mean((1, 2)))
            self.rows[int(i)] = torch.stack(codes).cpu().numpy()

    def merge(self, other):
        self.rows.update(other.rows)
        return self

    def result(self) -> np.ndarray:
        return np.concatenate([self.rows[i] for i in sorted(self.rows)])


def codes(n: int) -> np.ndarray:
    per = -(-n // 800)
    path = CACHE / f"region_codes_{per}.npy"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        model = convlens.load_model("efficientnet_lite0")
        out = scan(model, SAMPLE, [RegionCodes("bn2", per)], progress=False)
        np.save(path, out["regions"].astype(np.float32))
    return np.load(path)[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    x = codes(args.n)
    x50 = pca(x, 50)
    print(f"{len(x)} codes of {x.shape[1]} values (EfficientNet-Lite0 bn2 regional codes), PCA to 50; "
          f"torch threads {torch.get_num_threads()}")
    ours_t, ours_tw, sk_t, sk_tw = [], [], [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        e = embed(x50, "tsne", seed=r, measure=False, pca_dims=50)
        ours_t.append(time.perf_counter() - t)
        ours_tw.append(trustworthiness(x50, e.xy))
        print(f"  ours (openTSNE, opt-SNE schedule): {ours_t[-1]:.1f}s  trustworthiness {ours_tw[-1]:.4f}", flush=True)
        from sklearn.manifold import TSNE

        t = time.perf_counter()
        y = TSNE(2, init="pca", random_state=r, n_jobs=2).fit_transform(x50)
        sk_t.append(time.perf_counter() - t)
        sk_tw.append(trustworthiness(x50, y))
        print(f"  scikit-learn TSNE (Barnes-Hut):    {sk_t[-1]:.1f}s  trustworthiness {sk_tw[-1]:.4f}", flush=True)
    speed = statistics.median(sk_t) / statistics.median(ours_t)
    print(f"median: ours {statistics.median(ours_t):.1f}s (T={statistics.median(ours_tw):.4f}), scikit-learn "
          f"{statistics.median(sk_t):.1f}s (T={statistics.median(sk_tw):.4f}); speed-up {speed:.2f}x "
          f"({'PASS' if speed >= 2 and statistics.median(ours_tw) >= statistics.median(sk_tw) - 1e-3 else 'FAIL'}: "
          f">= 2x at no worse trustworthiness)")


if __name__ == "__main__":
    main()
