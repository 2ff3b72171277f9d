"""Claim (issue 12, item 6): on a busy machine a scan slows in proportion to the load, not many times over.

The same photos are scanned to pooled features (EfficientNet-Lite0, eager PyTorch in both cases):
  (a) plain: a torch loop in batches of 16 with torch's default threads (one per core), as a user writes it;
  (b) convlens: ``convlens.read.scan(..., engine="torch")``, which sizes its threads to the cores other processes
      leave free (``core.engine.fair_threads``).
Each is timed on a quiet machine and next to one competing process that keeps one core busy (a pure-Python
loop, like another user's job), in alternating rounds. With one of two cores taken, "in proportion" is at most
~2x slower; OpenMP threads spin-waiting for the taken core make it far worse.

    python benchmarks/bench_scan_loaded.py [--n 96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
from _common import SAMPLE
from PIL import Image

from convlens.models import load_model
from convlens.read import PooledFeatures, load_dataset, scan


def _busy(stop: float) -> None:
    x = 0
    while time.time() < stop:
        x = (x * 31 + 7) % 1000003


def plain(model, files) -> float:
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(files), 16):
            x = torch.stack([model.preprocess.to_tensor(Image.open(f).convert("RGB")) for f in files[s:s + 16]])
            model.module(x)
    return len(files) / (time.perf_counter() - t)


def ours(model, files) -> float:
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    scan(model, load_dataset(files), [PooledFeatures(model.layers.spread(1)[-1])], engine="torch", batch_size=16,
         progress=False, tune=False)
    return len(files) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    files = sorted(f for f in SAMPLE.iterdir() if f.suffix.lower() in {".jpeg", ".jpg", ".png"})[: a.n]
    model = load_model("efficientnet_lite0")
    plain(model, files[:16])
    ours(model, files[:16])  # warm-up
    rates: dict[tuple[str, str], list[float]] = {}
    for r in range(a.repeats):
        for load in ("quiet", "loaded"):
            busy = None
            if load == "loaded":
                busy = mp.get_context("spawn").Process(target=_busy, args=(time.time() + 600,), daemon=True)
                busy.start()
                time.sleep(1.0)
            try:
                for name, fn in (("plain", plain), ("convlens", ours)):
                    rates.setdefault((name, load), []).append(fn(model, files))
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.join()
        print(f"round {r + 1}: " + ", ".join(f"{k[0]} {k[1]} {v[-1]:.1f}/s" for k, v in rates.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n{a.n} photos, pooled features, eager PyTorch, images/s (median of {a.repeats}):")
    print(f"{'':10} {'quiet':>8} {'1 busy core':>12} {'slowdown':>9}")
    for name in ("plain", "convlens"):
        q, b = med[(name, "quiet")], med[(name, "loaded")]
        print(f"{name:10} {q:8.1f} {b:12.1f} {q / b:8.2f}x")
    print(f"loaded: convlens / plain = {med[('convlens', 'loaded')] / med[('plain', 'loaded')]:.2f}x")


if __name__ == "__main__":
    main()
