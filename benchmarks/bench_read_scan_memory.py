"""Claim: scan memory stays flat -- peak RSS for 800 photos is within 20% of that for 200.

Each size runs in a fresh process (peak RSS is per process) with the reducers a microscope-style scan uses:
pooled features to a disk cache, top-9 of two layers, dead units of two layers, a histogram.

    python benchmarks/bench_read_scan_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"

CHILD = r"""
import json, resource, sys, time
import convlens
from convlens.read import DeadUnits, Histogram, PooledFeatures, TopK, load_dataset, scan
n, cache = int(sys.argv[1]), sys.argv[2]
model = convlens.load_model("efficientnet_lite0")
ds = load_dataset(sys.argv[3], limit=n)
scan(model, ds[:8], [TopK("blocks.4", k=9)], batch_size=8, progress=False)   # warm-up: model, allocator, threads
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = scan(model, ds, [PooledFeatures(["global_pool", "blocks.5"]), TopK("blocks.2", k=9), TopK("blocks.5", k=9),
                       DeadUnits(["blocks.2", "blocks.5"]), Histogram("blocks.5")], batch_size=8,
           cache_dir=cache, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": out.images, "peak_mb": peak / 1024, "before_mb": before / 1024,
                  "seconds": time.perf_counter() - t}))
"""


def run(n: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), cache, str(SAMPLE)], capture_output=True,
                             text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    small, large = run(200), run(800)
    ratio = large["peak_mb"] / small["peak_mb"]
    for r in (small, large):
        print(f"  {r['n']:4d} photos: peak RSS {r['peak_mb']:7.1f} MB (after warm-up {r['before_mb']:.1f} MB), "
              f"{r['seconds']:.1f}s")
    print(f"  ratio 800/200 = {ratio:.3f} ({'PASS' if ratio <= 1.2 else 'FAIL'}: within 20%)")


if __name__ == "__main__":
    main()
