"""Claim (issue 16): a scan on Ray runs at the local scan's speed on one machine (the engine's overhead stays under
15%), and the per-shard cost is small enough for ImageNet-sized shard counts.

The same scan (pooled features of the CNN code, top-9 of a middle block, dead units of three layers) over the 800
shared photos on the embedded EfficientNet-Lite0, four ways, in alternating rounds (the shared VM's speed drifts):
  local          scan() in this process, unsharded (no checkpoint): the reference;
  local+ckpt     scan() in this process, shards of 128 checkpointed on disk (the mechanism behind resume);
  ray x1         one Ray actor with 2 threads, shards of 128;
  ray x2         two Ray actors with 1 thread each, shards of 128.
The actors are started once (their start-up, printed apart, is a one-off per process and network) and then kept
warm, so the rounds measure throughput. Then the many-shards run: the same 800 photos in 200 shards of 4, locally
(checkpointed) and on 2 actors; the extra seconds over the 128-image shards, divided by the extra shards, is the
cost of one shard. Every result is checked against the local one (top-k ids, dead counts, features).

    python benchmarks/bench_read_ray.py [--n 800] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

import convlens
from convlens.read import DeadUnits, PooledFeatures, TopK, feature_layer, load_dataset, scan
from convlens.read.distributed import Cluster, shutdown_pools

from _common import SAMPLE


def reducers(model: convlens.Model) -> list:
    return [PooledFeatures(feature_layer(model)), TopK("blocks.4", k=9), DeadUnits(["blocks.2", "blocks.4", "blocks.5"])]


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
    args = ap.parse_args()
    import ray

    model = convlens.load_model()
    ds = load_dataset(SAMPLE, limit=args.n)
    n = len(ds)
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"Ray runtime started in {time.perf_counter() - t:.1f} s (2 CPUs)")
    ref = scan(model, ds, reducers(model), progress=False, checkpoint=False)  # also the engine's warm-up
    print(f"{n} photos, engine {ref.engine}, batch {ref.batch_size}")

    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    ways = {
        "local": lambda s: scan(model, ds, reducers(model), progress=False, checkpoint=False),
        "local+ckpt": lambda s: scan(model, ds, reducers(model), progress=False, checkpoint=f"{tmp}/ck",
                                     shard_size=s),
        "ray x1": lambda s: scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=1),
                                 shard_size=s),
        "ray x2": lambda s: scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=2),
                                 shard_size=s),
    }
    for name in ("ray x1", "ray x2"):  # start each pool once: a one-off cost, printed apart
        t = time.perf_counter()
        out = ways[name](128)
        check(ref, out, model)
        print(f"{name}: first scan (actors start, load the model, compile) {time.perf_counter() - t:.1f} s")
    times: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.repeats):
        for name, fn in ways.items():
            t = time.perf_counter()
            out = fn(128)
            times[name].append(time.perf_counter() - t)
            check(ref, out, model)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    base = statistics.median(times["local"])
    print(f"\n{'way':<12} {'images/s':>9} {'vs local':>9}   (median of {args.repeats} rounds, shards of 128)")
    for name, v in times.items():
        m = statistics.median(v)
        print(f"{name:<12} {n / m:>9.1f} {base / m:>8.2f}x")

    shards = -(-n // 4)
    print(f"\nmany shards: {shards} shards of 4 photos")
    for name in ("local+ckpt", "ray x2"):
        big = statistics.median(times[name])
        t = time.perf_counter()
        out = ways[name](4)
        small = time.perf_counter() - t
        check(ref, out, model)
        per = (small - big) / (shards - -(-n // 128))
        print(f"{name:<12} {small:.1f} s ({n / small:.1f} images/s) vs {big:.1f} s in shards of 128: "
              f"{per * 1000:+.1f} ms per extra shard")
    shutdown_pools()
    ray.shutdown()


if __name__ == "__main__":
    main()
