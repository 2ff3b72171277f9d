"""The zoo sweep as a table: every library recipe on every architecture of tests/zoo_recipes.py (torchvision and
timm, random weights, no downloads, 64 px -- 80 for inception_v3), ``ok`` or the error, and seconds.

Usage: python benchmarks/bench_zoo_sweep.py [ARCH ...]   (default: all; prints a Markdown table)
"""

import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import torch

from zoo_recipes import ARCHS, photos, sweep

archs = sys.argv[1:] or ARCHS
folder = photos(Path(tempfile.mkdtemp(prefix="zoo-")))
rows = {}
t0 = time.perf_counter()
for spec in archs:
    rows[spec] = sweep(spec, folder)
    print(f"{spec}: {sum(s == 'ok' for s, _ in rows[spec].values())}/{len(rows[spec])} ok", file=sys.stderr)
names = list(next(iter(rows.values())))
print(f"threads={torch.get_num_threads()}, total {time.perf_counter() - t0:.0f} s\n")
print("| architecture | " + " | ".join(names) + " |")
print("| --- " * (len(names) + 1) + "|")
for spec, r in rows.items():
    cells = [f"ok {sec:.1f}s" if s == "ok" else f"**error** {s}" for s, sec in (r[n] for n in names)]
    print(f"| {spec} | " + " | ".join(cells) + " |")
