"""Claim (issue 12, item 6): a cold scan-based command on 64 photos is no slower than the plain eager path.

Two ways over the same 64 shared photos, top-9 patches of one layer (EfficientNet-Lite0), alternating rounds:
  (a) eager: the loop a user writes by hand -- torchvision-style preprocessing, the model under
      ``torch.inference_mode`` in batches of 16, a forward hook on the layer, top-9 per channel;
  (b) convlens, cold: ``convlens top-patches`` in a fresh process with an empty cache (``CONVLENS_CACHE`` and
      ``--cache-dir`` in a new temporary folder), so nothing converted, compiled or timed before helps it;
  (c) convlens, warm: the same command again with the cache (plan and compiled network) left by (b);
  (d) convlens, cold, ``--crop rf``: the same work as (a) plus the figure -- (b)'s default crops each patch to its
      guided-backprop mass (Zeiler & Fergus-style crops), one extra backward pass per patch that (a) does not do.
(a) runs in a subprocess too, so both pay the interpreter and torch import; each is timed end to end.

    python benchmarks/bench_small_scan.py [--n 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SAMPLE

EAGER = r"""
import sys, torch
from pathlib import Path
from PIL import Image
from convlens.models import load_model
torch.set_num_threads(2)
model = load_model("efficientnet_lite0")
files = [Path(line) for line in Path(sys.argv[1]).read_text().split()]
net, layer = model.module, dict(model.module.named_modules())[sys.argv[2]]
out = []
h = layer.register_forward_hook(lambda m, i, o: out.append(o.amax((2, 3))))
with torch.inference_mode():
    for s in range(0, len(files), 16):
        x = torch.stack([model.preprocess.to_tensor(Image.open(f).convert("RGB")) for f in files[s:s + 16]])
        net(x)
h.remove()
top = torch.cat(out).topk(9, dim=0)
print(tuple(top.indices.shape))
"""


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layer", default="blocks.4")
    a = p.parse_args()
    files = sorted(f for f in SAMPLE.iterdir() if f.suffix.lower() in {".jpeg", ".jpg", ".png"})[:a.n]
    root = Path(tempfile.mkdtemp(prefix="bench_small_"))
    listing = root / "photos.txt"
    listing.write_text("\n".join(str(f) for f in files))
    src = str(Path(__file__).resolve().parents[1] / "src")
    base = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    eager, cold, warm, rf = [], [], [], []
    for r in range(a.repeats):
        cache = root / f"cache{r}"
        env = {**base, "CONVLENS_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "convlens", "top-patches", str(listing), "--layer", a.layer, "-c", "0-15",
               "--k", "9", "--cache-dir", str(cache / "features"), "--out", str(root / f"out{r}")]
        eager.append(_run([sys.executable, "-c", EAGER, str(listing), a.layer], base))
        cold.append(_run(cmd, env))
        warm.append(_run(cmd[:-2] + ["--out", str(root / f"out{r}w"), "--cache-dir", str(root / f"feat{r}w")], env))
        env_rf = {**base, "CONVLENS_CACHE": str(root / f"cache{r}rf")}
        rf.append(_run([*cmd[:-4], "--crop", "rf", "--cache-dir", str(root / f"cache{r}rf" / "features"), "--out",
                        str(root / f"out{r}rf")], env_rf))
        print(f"round {r + 1}: eager {eager[-1]:.1f} s, convlens cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s, "
              f"cold --crop rf {rf[-1]:.1f} s", flush=True)
    me, mc, mw, mr = (statistics.median(v) for v in (eager, cold, warm, rf))
    print(f"\n{a.n} photos, top-9 of {a.layer}, end to end (process start included), medians of {a.repeats}:")
    print(f"  eager loop (batch 16)   {me:6.1f} s")
    print(f"  convlens cold           {mc:6.1f} s   eager / cold = {me / mc:.2f}x")
    print(f"  convlens warm           {mw:6.1f} s   eager / warm = {me / mw:.2f}x")
    print(f"  convlens cold, --crop rf {mr:5.1f} s   eager / cold rf = {me / mr:.2f}x  (no guided-backprop crops)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
