"""Where a Ray scan's time goes on this machine (issue 16): per-actor busy time vs the wall, the driver's CPU, the
gaps between an actor's shards, the time to the first shard and the tail, next to a local scan of the same photos.

    python benchmarks/profile_read_ray.py [--n 320] [--workers 2] [--shard 128] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from _common import SAMPLE

import convlens
from convlens.read import DeadUnits, PooledFeatures, TopK, distributed, feature_layer, load_dataset, scan
from convlens.read.distributed import Cluster


def reducers(model):
    return [PooledFeatures(feature_layer(model)), TopK("blocks.4", k=9), DeadUnits(["blocks.2", "blocks.4", "blocks.5"])]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every process of this Ray session (actors, raylet, GCS, ...) by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ray" not in cmd or int(d) == os.getpid():
                continue
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            name = "actor" if "_ScanWorker" in cmd or "default_worker" in cmd else cmd.split()[0].rsplit("/", 1)[-1]
            out[int(d)] = (name, (int(f[11]) + int(f[12])) / tick)
        except (OSError, ValueError, IndexError):
            continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import ray

    if os.environ.get("NICE15"):  # Ray's default worker niceness, for the before/after
        os.environ["RAY_worker_niceness"] = "15"
    distributed.connect(Cluster(), num_cpus=2)
    model = convlens.load_model()
    ds = load_dataset(SAMPLE, limit=args.n)
    t = time.perf_counter()
    first = scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=args.workers),
                 shard_size=args.shard)
    print(f"pool start + first scan: {time.perf_counter() - t:.1f} s, engine {first.engine}, batch {first.batch_size}")
    for pool in distributed._POOLS.values():
        for info in ray.get([a.info.remote() for a in pool.actors]):
            print(f"  actor {info['pid']}: {info['engine']}, {info['threads']} thread(s), batch {info['batch_size']}, "
                  f"engine ready in {info['ready_s']:.1f} s after the model arrived, nice {info['nice']}")
    real = distributed.reduce_shards
    for r in range(args.rounds):
        t = time.perf_counter()
        lc = cpu()
        lout = scan(model, ds, reducers(model), progress=False, checkpoint=False, engine="openvino", threads=2)
        local, lc = time.perf_counter() - t, cpu() - lc
        spans: list[tuple[int, float, float, float, int]] = []

        def wrapped(*a, spans=spans, **k):
            finish = a[6]

            def rec(i, payload):
                spans.append((payload["worker"], *payload["span"], time.time(), payload["images"]))
                finish(i, payload)
            return real(*a[:6], rec, *a[7:], **k)

        distributed.reduce_shards = wrapped
        load0 = os.getloadavg()[0]
        p0 = proc_cpu()
        c0, w0, t = cpu(), time.time(), time.perf_counter()
        scan(model, ds, reducers(model), progress=False, cluster=Cluster(workers=args.workers), shard_size=args.shard)
        wall, drv = time.perf_counter() - t, cpu() - c0
        distributed.reduce_shards = real
        p1 = proc_cpu()
        used = {pid: (p1[pid][0], p1[pid][1] - p0[pid][1]) for pid in p1 if pid in p0}
        print(f"round {r}: local {local:.2f} s ({args.n / local:.1f} img/s, {lout.engine}, {lout.threads} threads, CPU {lc:.2f} s) | ray x{args.workers} "
              f"{wall:.2f} s ({args.n / wall:.1f} img/s) ratio {local / wall:.2f}; driver CPU {drv:.2f} s; "
              f"load {load0:.2f}")
        other = {}
        for pid, (name, c) in used.items():
            if name != "actor":
                other[name] = other.get(name, 0.0) + c
        print("  Ray's own processes, CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(other.items()) if v > 0.005))
        for pid in sorted({s[0] for s in spans}):
            mine = sorted(s for s in spans if s[0] == pid)
            busy = sum(b - a for _, a, b, _, _ in mine)
            gaps = [mine[j + 1][1] - mine[j][2] for j in range(len(mine) - 1)]
            print(f"  actor {pid}: {len(mine)} shards, {sum(s[4] for s in mine)} img, busy {busy:.2f} s, "
                  f"CPU {used.get(pid, ('', float('nan')))[1]:.2f} s, "
                  f"starts +{mine[0][1] - w0:.2f} s, ends +{mine[-1][2] - w0:.2f} s, gaps "
                  + ", ".join(f"{g * 1000:.0f}" for g in gaps) + " ms; per shard "
                  + ", ".join(f"{b - a:.2f}" for _, a, b, _, _ in mine) + " s")
        lag = [d - b for _, _, b, d, _ in spans]
        print(f"  return lag (actor end -> driver merged): max {max(lag) * 1000:.0f} ms; "
              f"last merged +{max(s[3] for s in spans) - w0:.2f} s of {wall:.2f}")
    distributed.shutdown_pools()
    ray.shutdown()


if __name__ == "__main__":
    main()
