"""Interrupt ``embed`` and ``microscope`` mid-scan (SIGINT, SIGKILL), re-run, and compare with an uninterrupted run.

    python benchmarks/interrupt_resume.py --n 300                  # the embedded model on 300 shared photos
    python benchmarks/interrupt_resume.py --n 40 --tiny            # a tiny slowed-down model, 8-image shards (test)

For each command and signal: an uninterrupted run (its own output and cache), an interrupted run (the signal is
sent once the scan's progress bar passes ``--at`` of the images), and a re-run on the interrupted run's cache.
Reported: the exit status of the interrupted run, how many images were done when it stopped, how many the re-run
sent through the network again (``network``) and how many of those had been done before (``redone``), and the
largest difference from the uninterrupted run (features for ``embed``; top-k ids, values, histogram counts and
dead units for ``microscope``). Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "imagenet-sample"

# a tiny network whose forward pass sleeps, so a 40-image scan lasts long enough to be interrupted; 8-image shards
TINY_PREAMBLE = """
import importlib, time, torch
from torch import nn
from convlens import Model
from convlens.models import imagenet_labels, zoo

class Slow(nn.Module):
    def forward(self, x):
        time.sleep(0.04 * x.shape[0])
        return x

@zoo.register("slow-tiny")
def _tiny(weights):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), Slow(), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1000)).eval()
    return Model.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=48, labels=imagenet_labels())

importlib.import_module("convlens.read.scan").SHARD_SIZE = 8
"""
RUN = "import sys\nfrom convlens.cli import run\nrun(sys.argv[1:])\n"


def _argv(command: str, data: Path, out: Path, cache: Path, tiny: bool) -> list[str]:
    model = ["--model", "slow-tiny"] if tiny else []
    if command == "embed":
        return ["embed", str(data), *model, "--method", "pca", "--out", str(out), "--cache-dir", str(cache),
                *(["--cell", "16"] if tiny else [])]
    layers = "1,4" if tiny else "blocks.2,blocks.5"
    return ["microscope", str(data), *model, "--layers", layers, "--max-channels", "2", "--vis-steps", "0",
            "--k", "4", "--batch-size", "4" if tiny else "16", "--out", str(out)]


def _start(argv: list[str], tiny: bool, stderr: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TQDM_MININTERVAL": "0.1"}  # the bar says how far it got
    code = (TINY_PREAMBLE if tiny else "") + RUN
    with open(stderr, "w") as fh:
        return subprocess.Popen([sys.executable, "-c", code, *argv], stderr=fh, stdout=subprocess.DEVNULL, env=env)


def _progress(stderr: Path) -> int:
    """Images done according to the scan's progress bar (the last ``k/N`` it drew)."""
    found = re.findall(r"scan:.*?\|\s*(\d+)/(\d+)", stderr.read_text(errors="replace"))
    return int(found[-1][0]) if found else 0


def _run(argv: list[str], tiny: bool, stderr: Path, timeout: float = 900) -> tuple[int, float]:
    t = time.perf_counter()
    p = _start(argv, tiny, stderr)
    rc = p.wait(timeout=timeout)
    return rc, time.perf_counter() - t


def _interrupt(argv: list[str], tiny: bool, stderr: Path, sig: int, at: int, timeout: float = 900) -> tuple[int, int]:
    p = _start(argv, tiny, stderr)
    deadline = time.monotonic() + timeout
    try:
        while p.poll() is None and time.monotonic() < deadline and _progress(stderr) < at:
            time.sleep(0.05)
        done = _progress(stderr)
        if p.poll() is None:
            p.send_signal(sig)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return rc, max(done, _progress(stderr))


def _embed_state(out: Path, cache: Path) -> tuple[dict, np.ndarray]:
    res = json.loads((out / "result.json").read_text())
    feats = [f for f in sorted(cache.glob("*.npy")) if ".done" not in f.name]
    assert len(feats) == 1, feats
    return res, np.load(feats[0])


def _microscope_state(out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = sorted((out / "_cache").glob("scan-*.json"))
    assert len(meta) == 1, meta
    with np.load(meta[0].with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(meta[0].read_text()), arrays


def _compare_microscope(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    assert set(a) == set(b), (set(a) ^ set(b))
    ids_equal = all(np.array_equal(a[k], b[k]) for k in a if k.endswith(("|ids", "|y", "|x", "|counts")) or
                    "dead" in k)
    values = max(float(np.abs(a[k].astype(float) - b[k].astype(float)).max(initial=0)) for k in a
                 if k.endswith("|values"))
    return {"ids_counts_equal": ids_equal, "max_value_diff": values}


def experiment(n: int, tiny: bool, work: Path, at: float = 0.5, commands=("embed", "microscope"),
               signals=("SIGINT", "SIGKILL")) -> list[dict]:
    files = sorted(PHOTOS.glob("*.JPEG"))[:n]
    assert len(files) == n, f"need {n} photos in {PHOTOS}"
    data = work / "photos.txt"
    data.write_text("".join(f"{f}\n" for f in files))
    rows = []
    for command in commands:
        full_out, full_cache = work / f"{command}-full", work / f"{command}-full-cache"
        rc, full_s = _run(_argv(command, data, full_out, full_cache, tiny), tiny, work / f"{command}-full.err")
        assert rc == 0, (work / f"{command}-full.err").read_text()[-2000:]
        for name in signals:
            sig = getattr(signal, name)
            out, cache = work / f"{command}-{name}", work / f"{command}-{name}-cache"
            for p in (out, cache):
                shutil.rmtree(p, ignore_errors=True)
            argv = _argv(command, data, out, cache, tiny)
            err1, err2 = work / f"{command}-{name}-1.err", work / f"{command}-{name}-2.err"
            rc1, done = _interrupt(argv, tiny, err1, sig, int(at * n))
            rc2, again_s = _run(argv, tiny, err2)
            assert rc2 == 0, err2.read_text()[-2000:]
            row = {"command": command, "signal": name, "images": n, "interrupted_rc": rc1, "done_at_signal": done,
                   "full_seconds": round(full_s, 1), "resume_seconds": round(again_s, 1)}
            if command == "embed":
                res_full, f_full = _embed_state(full_out, full_cache)
                res, f_res = _embed_state(out, cache)
                net = int(res["scan"]["network"])
                row.update(network=net, from_checkpoint=res["scan"]["from_checkpoint"],
                           from_cache=res["scan"]["from_cache"],
                           max_feature_diff=float(np.abs(f_full - f_res).max()),
                           points_equal=[p["file"] for p in res_full["points"]] == [p["file"] for p in res["points"]])
            else:
                _, a_full = _microscope_state(full_out)
                meta, a_res = _microscope_state(out)
                net = int(meta["images"]) - int(meta.get("from_checkpoint", 0))
                row.update(network=net, from_checkpoint=meta.get("from_checkpoint", 0),
                           **_compare_microscope(a_full, a_res))
                pages_full = json.loads((full_out / "result.json").read_text())["layers"]
                pages = json.loads((out / "result.json").read_text())["layers"]
                row["summary_equal"] = pages_full == pages
            row["redone"] = max(0, net - (n - done))  # images done before the signal that were computed again
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--tiny", action="store_true", help="A tiny slowed-down model with 8-image shards.")
    ap.add_argument("--at", type=float, default=0.5, help="Send the signal once this share of images is done.")
    ap.add_argument("--work", default=None, help="Working folder [default: a temporary one, removed].")
    ap.add_argument("--commands", default="embed,microscope")
    ap.add_argument("--signals", default="SIGINT,SIGKILL")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="convlens-interrupt-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        experiment(args.n, args.tiny, work, args.at, args.commands.split(","), args.signals.split(","))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
