"""Claim (issue 16): a scan on Ray runs at the local scan's speed on one machine (the engine's overhead stays under
15%), and the per-shard cost is small enough for ImageNet-sized shard counts.

The same scan (pooled features of the CNN code, top-9 of a middle block, dead units of three layers) over the 800
shared photos on the embedded EfficientNet-Lite0, four ways, in alternating rounds (the shared VM's speed drifts):
  local          scan() in this process, unsharded (no checkpoint): the reference, on the engine and the CPUs the
                 pools get (OpenVINO fp32, 2 threads); a plain scan() on a busy machine would instead take the free
                 cores only (fair_threads) and may stay on eager PyTorch: that run is printed once, apart, because it
                 compares the load, not the engines;
  local+ckpt     scan() in this process, shards of 128 checkpointed on disk (the mechanism behind resume);
  ray x1         one Ray actor with 2 threads, shards of 128;
  ray x2         two Ray actors with 1 thread each, shards of 128.
The actors are started once (their start-up, printed apart, is a one-off per process and network) and then kept
warm, so the rounds measure throughput. Then the many-shards run: the same 800 photos in 200 shards of 4, locally
(checkpointed) and on 2 actors; the extra seconds over the 128-image shards, divided by the extra shards, is the
cost of one shard. Every result is checked against the local one (top-k ids, dead counts, features).
Besides images/s, each way's CPU seconds per image (this process plus every process it started: Ray's actors, raylet,
GCS) say what the engine costs in work, which the load of other jobs on the VM does not change much.

    python benchmarks/bench_read_ray.py [--n 800] [--repeats 2] [--decode-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SAMPLE

import convlens
from convlens.read import DeadUnits, PooledFeatures, TopK, feature_layer, load_dataset, scan
from convlens.read.distributed import Cluster, connect, shutdown_pools


def reducers(model: convlens.Model) -> list:
    return [PooledFeatures(feature_layer(model)), TopK("blocks.4", k=9), DeadUnits(["blocks.2", "blocks.4", "blocks.5"])]


def cpu_seconds() -> float:
    """CPU seconds of this process and all its descendants alive now (the Ray runtime and its actors)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, spent = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d)], spent[int(d)] = int(f[1]), (int(f[11]) + int(f[12])) / tick
    mine, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        mine.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p and c not in mine)
    return sum(spent.get(p, 0.0) for p in mine)


def timed(fn, arg):
    """(seconds, CPU seconds, result) of ``fn(arg)``."""
    c, t = cpu_seconds(), time.perf_counter()
    out = fn(arg)
    return time.perf_counter() - t, cpu_seconds() - c, out


def check(ref, out, model) -> None:
    assert out.images == ref.images, (out.images, ref.images)
    np.testing.assert_array_equal(out["topk:blocks.4"].ids, ref["topk:blocks.4"].ids)
    for layer, d in ref["dead"].items():
        np.testing.assert_array_equal(out["dead"][layer].silent, d.silent)
    layer = feature_layer(model)
    np.testing.assert_allclose(np.asarray(out["features"][layer]), np.asarray(ref["features"][layer]),
                               rtol=1e-4, atol=1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=800, help="photos (from the 800 shared ones)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds")
    ap.add_argument("--decode-only", action="store_true",
                    help="only the JPEG decode + resize rate of one thread (what sizes the CPUs of a GPU node)")
    args = ap.parse_args()
    model = convlens.load_model()
    ds = load_dataset(SAMPLE, limit=args.n)
    n = len(ds)
    if args.decode_only:
        files = ds.files[:200]
        t = time.perf_counter()
        for f in files:
            model.preprocess.to_tensor(f)
        dt = time.perf_counter() - t
        print(f"decode + resize + crop, one thread: {len(files) / dt:.1f} images/s ({dt / len(files) * 1000:.1f} ms each)")
        return
    t = time.perf_counter()
    ray = connect(Cluster(), num_cpus=2)  # as --cluster starts one: workers at this process's priority
    print(f"Ray runtime started in {time.perf_counter() - t:.1f} s (2 CPUs)")
    # the pools' engine and CPUs: 2 threads of OpenVINO fp32 (an actor compiles at its start)
    same = {"engine": "openvino", "threads": 2}
    ref = scan(model, ds, reducers(model), progress=False, checkpoint=False, **same)  # also the engine's warm-up
    print(f"{n} photos, engine {ref.engine}, batch {ref.batch_size}, {ref.threads} threads; load "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    t = time.perf_counter()
    plain = scan(model, ds, reducers(model), progress=False, checkpoint=False)
    t = time.perf_counter() - t
    print(f"(a plain scan() now, for comparison only: {n / t:.1f} images/s on {plain.engine} with {plain.threads} "
          f"thread(s) -- fair_threads left it the cores the load leaves free)", flush=True)

    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    ways = {
        "local": lambda s: scan(model, ds, reducers(model), progress=False, checkpoint=False, **same),
        "local+ckpt": lambda s: scan(model, ds, reducers(model), progress=False, checkpoint=f"{tmp}/ck",
                                     shard_size=s, **same),
        "ray x1": lambda s: scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=1),
                                 shard_size=s),
        "ray x2": lambda s: scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=2),
                                 shard_size=s),
    }
    # each way in its own block of rounds, every run paired with a local run next to it in time (the VM drifts);
    # a pool of actors holds the CPUs, so the 1-actor and the 2-actor pool cannot both stay warm: each block starts
    # its pool once (a one-off cost per process and network, printed apart) and then measures throughput
    n_big = -(-n // 128)
    rows = []
    for name in ("local+ckpt", "ray x1", "ray x2"):
        t = time.perf_counter()
        check(ref, ways[name](128), model)
        first = time.perf_counter() - t
        pairs, cpus = [], []
        for _ in range(args.repeats):
            t_local, c_local, _ = timed(ways["local"], 128)
            t_way, c_way, out = timed(ways[name], 128)
            check(ref, out, model)
            pairs.append((t_local, t_way))
            cpus.append((c_local, c_way))
        line = f"{name}: first scan {first:.1f} s (start-up included); rounds " + ", ".join(
            f"local {a:.1f} s / {b:.1f} s" for a, b in pairs) + "; CPU " + ", ".join(
            f"local {a:.1f} s / {b:.1f} s" for a, b in cpus) + "; load " + " ".join(
            f"{v:.2f}" for v in os.getloadavg())
        print(line, flush=True)
        small = None
        if name != "ray x1":  # the many-shards run, on the warm pool
            t = time.perf_counter()
            out = ways[name](4)
            small = time.perf_counter() - t
            check(ref, out, model)
        rows.append((name, first, pairs, small, cpus))

    local_all = [a for _, _, pairs, _, _ in rows for a, _ in pairs]
    local_cpu = [a for *_, cpus in rows for a, _ in cpus]
    print(f"\n{'way':<12} {'images/s':>9} {'local img/s':>12} {'ratio':>6} {'CPU ms/img':>11} {'local':>6}   (medians "
          f"of {args.repeats} paired rounds; shards of 128)")
    print(f"{'local':<12} {n / statistics.median(local_all):>9.1f} {'':>12} {'':>6} "
          f"{statistics.median(local_cpu) / n * 1000:>11.1f}")
    for name, first, pairs, _, cpus in rows:
        way = statistics.median(b for _, b in pairs)
        loc = statistics.median(a for a, _ in pairs)
        ratio = statistics.median(a / b for a, b in pairs)
        print(f"{name:<12} {n / way:>9.1f} {n / loc:>12.1f} {ratio:>5.2f}x "
              f"{statistics.median(b for _, b in cpus) / n * 1000:>11.1f} "
              f"{statistics.median(a for a, _ in cpus) / n * 1000:>6.1f}  (first scan with start-up {first:.1f} s)")
    shards = -(-n // 4)
    print(f"\nmany shards: {shards} shards of 4 photos vs {n_big} shards of 128")
    for name, _, pairs, small, _ in rows:
        if small is None:
            continue
        big = statistics.median(b for _, b in pairs)
        per = (small - big) / (shards - n_big)
        print(f"{name:<12} {small:.1f} s ({n / small:.1f} images/s) vs {big:.1f} s: {per * 1000:+.1f} ms per extra shard")
    shutdown_pools()
    ray.shutdown()


if __name__ == "__main__":
    main()
