"""Scans and feature visualisations on a Ray cluster: the same reducers in a pool of actors, merged on the driver.

Usage::

    from convlens.read import scan, TopK, DeadUnits
    from convlens.read.distributed import Cluster

    out = scan(model, "imagenet-train.txt", [TopK("blocks.4"), DeadUnits(["blocks.4"])],
               cluster=Cluster("auto", workers=32), checkpoint="ckpt/")   # or cluster="local" on this machine

    with on_cluster(Cluster()):          # every scan inside the block runs on Ray (what the CLI's --cluster does)
        top_patches(model, "photos/", "blocks.4")

How it works. The dataset is cut into shards of consecutive images (:func:`convlens.read.scan.scan`'s
``shard_size``); only file names travel to the workers, each shard as a small :class:`~convlens.read.Dataset`, and
the images are decoded inside the workers (straight from their ``.tar`` shard for WebDataset data). A pool of
actors, one model per actor (put in Ray's object store once, loaded once per actor, read through the fastest
checked engine of :mod:`convlens.core.engine`), each reduce whole shards with fresh copies of the scan's reducers
(:func:`convlens.read.scan.reduce_shard`) and return the partial reducers; the driver writes each to the scan's
checkpoint (:mod:`convlens.read.checkpoint`) and merges it with the reducers' ``merge``. Because every reducer
merges associatively and breaks ties by image id, the result is the local scan's: the same top-k ids and positions,
dead-unit counts and histogram counts, features equal to float tolerance.

Actors are started once per network and kept warm for the next scan of the same network in this process (starting
one costs seconds: a Python process, the model, the engine's compilation); :func:`shutdown_pools` stops them.

Faults. Actors are created with unlimited restarts and task retries: a worker that dies in the middle of a shard
is restarted by Ray, which runs the shard again; the driver merges each shard once, whichever attempt delivers it.
An interrupted driver resumes from the shards its checkpoint holds.

Ray is optional (``pip install "convlens[ray]"``): this module imports it only when a cluster is used, so
``import convlens`` and every local scan run without it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError

__all__ = [
    "INSTALL_HINT",
    "Cluster",
    "as_cluster",
    "connect",
    "current_cluster",
    "on_cluster",
    "reduce_shards",
    "require_ray",
    "run_tasks",
    "shutdown_pools",
]

INSTALL_HINT = "running on a Ray cluster needs Ray: pip install 'convlens[ray]'"

_CURRENT: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar("convlens_cluster", default=None)

# called on the driver after each merged shard with (shards merged, shards in all, the actors); a test hook that
# kills an actor or interrupts the driver at a known point
_after_shard: Callable[[int, int, list[Any]], None] | None = None


@dataclass(frozen=True)
class Cluster:
    """Where and how wide a distributed scan runs.

    Attributes:
        address: ``None`` starts a Ray runtime on this machine (or uses the one this process already started);
            ``"auto"`` joins the cluster this machine belongs to; ``"ray://head:10001"`` or ``"head:6379"`` join one.
        workers: actors in the pool (one model each); ``None``: the cluster's CPUs divided by ``cpus_per_worker``
            (by ``gpus_per_worker`` GPUs when that is set).
        cpus_per_worker: CPUs each actor reserves (it runs that many compute threads, at least 2); ``None``: 1,
            or the cluster's CPUs shared evenly among ``workers`` when that is given.
        gpus_per_worker: GPUs each actor reserves (its model then runs on CUDA); 0 for CPU-only.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise UserError(f"CPUs per worker must be positive, got {self.cpus_per_worker}")
        if not self.gpus_per_worker >= 0:
            raise UserError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")


@contextlib.contextmanager
def on_cluster(cluster: Cluster | str | None) -> Iterator[Cluster | None]:
    """Within the block, every :func:`~convlens.read.scan.scan` that is not given ``cluster=`` runs on ``cluster``."""
    spec = as_cluster(cluster) if cluster is not None else None
    token = _CURRENT.set(spec)
    try:
        yield spec
    finally:
        _CURRENT.reset(token)


def current_cluster() -> Cluster | None:
    """The cluster of the innermost :func:`on_cluster` block, or ``None``."""
    return _CURRENT.get()


def as_cluster(value: Cluster | str | None, engine: str = "auto") -> Cluster | None:
    """``None`` -> the current block's cluster (a local runtime when ``engine == "ray"``); ``"local"`` -> a local
    runtime; any other string -> that address; a :class:`Cluster` as is."""
    if value is None:
        value = current_cluster()
        if value is None and engine == "ray":
            value = Cluster()
    if value is None or isinstance(value, Cluster):
        return value
    if isinstance(value, str):
        return Cluster(None if value in ("", "local") else value)
    raise UserError(f"cluster must be 'local', 'auto', an address or a Cluster, got {value!r}")


def require_ray() -> Any:
    """The ``ray`` module, or a :class:`UserError` saying in one line what to install."""
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


def connect(cluster: Cluster, *, num_cpus: int | None = None) -> Any:
    """Ray, initialised for ``cluster`` (a runtime this process already started is used as it is); ``num_cpus``
    caps a local runtime's CPUs (default: all of this machine's).

    A local runtime's workers run at this process's priority. Ray's default starts them at niceness 15 (to keep its
    own daemons responsive on a node it owns), so on a machine shared with other work the actors get the CPU only
    when nothing else wants it, and the same scan ran up to several times slower than locally; on a cluster joined
    by address its operators' setting stands. ``RAY_worker_niceness`` set in the environment wins."""
    ray = require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if cluster.address is None:
                os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))  # read by the raylet it starts
                ray.init(num_cpus=num_cpus, **kwargs)
            else:
                ray.init(address=cluster.address, **kwargs)
        except ConnectionError as exc:
            raise UserError(f"cannot reach the Ray cluster at {cluster.address}: {exc}") from None
    return ray


def _shape(ray: Any, cluster: Cluster) -> tuple[int, float, float]:
    """(workers, cpus per worker, gpus per worker) for this cluster's resources."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    gpw = float(cluster.gpus_per_worker)
    if gpw > 0 and gpus < gpw:
        raise UserError(f"--gpus-per-worker {gpw:g} but the cluster has {gpus:g} GPUs")
    workers = cluster.workers
    if workers is None:
        workers = max(1, int(gpus // gpw)) if gpw > 0 else max(1, int(cpus // (cluster.cpus_per_worker or 1)))
    # an even share of the CPUs (fractional when there are more workers than CPUs, so every actor can start)
    cpw = float(cluster.cpus_per_worker or (int(cpus // workers) if cpus >= workers else cpus / workers))
    if cluster.address is None and workers * cpw > cpus + 1e-9:  # a local runtime does not grow: it would wait forever
        raise UserError(f"{workers} workers x {cpw:g} CPUs do not fit the {cpus:g} CPUs of this machine")
    return workers, cpw, gpw


class _ScanWorker:
    """One actor of the pool: the model, loaded once, read through the fastest checked engine; reduces whole shards."""

    def __init__(self, model: Any, layers: list[str], engine: str, batch_size: int | None, threads: int,
                 cuda: bool) -> None:
        import time
        from concurrent.futures import ThreadPoolExecutor

        from ..core.engine import open_reader
        from ..runtime import tune_allocator
        from .scan import choose_batch_size

        started = time.perf_counter()
        tune_allocator()
        torch.set_num_threads(max(1, threads))
        if cuda and torch.cuda.is_available():
            model = model.to("cuda")
        self.model = model
        self._stack = contextlib.ExitStack()
        self.read = self._stack.enter_context(open_reader(model, layers, engine=engine))
        if batch_size is None:
            batch_size = 16 if self.read.engine != "torch" else (choose_batch_size(model, layers) if layers else 8)
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max_workers=max(2, threads))
        self.ready_s = time.perf_counter() - started  # the model's engine: compiling (or the cached choice)

    def info(self) -> dict[str, Any]:
        return {"engine": self.read.engine, "batch_size": self.batch_size, "pid": os.getpid(),
                "device": str(self.model.device), "threads": torch.get_num_threads(), "ready_s": self.ready_s,
                "nice": os.nice(0)}

    def reduce(self, index: int, shard: Any, templates: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import time

        from .scan import reduce_shard

        started = time.time()
        payload = reduce_shard(self.model, self.read, shard, templates, self.batch_size, self.pool)
        payload["worker"] = os.getpid()
        payload["span"] = (started, time.time())  # wall clock on this node: where the actor's time went
        return index, payload

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(model, *args)`` on this actor's model (the microscope's feature visualisations)."""
        return fn(self.model, *args)


def _actor_class(ray: Any) -> Any:
    return ray.remote(max_restarts=-1, max_task_retries=-1)(_ScanWorker)


@dataclass
class _Pool:
    actors: list[Any]
    model_ref: Any  # kept alive: a restarted actor is built again from it
    cpus: float = 0.0  # what its actors reserve, all together
    gpus: float = 0.0


# pools of this process, kept warm between scans of the same network (starting actors costs seconds)
_POOLS: OrderedDict[tuple, _Pool] = OrderedDict()
_KEEP_POOLS = 2


def _pool(ray: Any, cluster: Cluster, model: Any, layers: list[str], engine: str,
          batch_size: int | None) -> _Pool:
    """Actors holding ``model`` (reused when this process already started the same pool on this Ray runtime)."""
    from .checkpoint import model_key

    workers, cpw, gpw = _shape(ray, cluster)
    key = (ray.get_runtime_context().get_job_id(), model_key(model), tuple(layers), engine, batch_size, workers,
           cpw, gpw)
    if key in _POOLS:
        _POOLS.move_to_end(key)
        return _POOLS[key]
    # a warm pool holds its CPUs and GPUs: older pools go until the new one fits (else its actors never start)
    res = ray.cluster_resources()
    while _POOLS and (len(_POOLS) >= _KEEP_POOLS
                      or sum(p.cpus for p in _POOLS.values()) + workers * cpw > float(res.get("CPU", 0)) + 1e-9
                      or sum(p.gpus for p in _POOLS.values()) + workers * gpw > float(res.get("GPU", 0)) + 1e-9):
        _drop(ray, _POOLS.popitem(last=False)[1])
    ref = ray.put(model)  # one copy in the object store, read by every actor
    # an actor's compute thread idles while its own decode threads prepare the next batch: with one CPU reserved,
    # two compute threads keep that CPU busy (2 actors x 1 CPU on 2 cores: 0.69x the local scan with 1 thread
    # each, 0.98x with 2; benchmarks/bench_read_ray.py)
    threads = max(2, math.ceil(cpw))
    cls = _actor_class(ray).options(num_cpus=cpw, num_gpus=gpw)
    pool = _Pool([cls.remote(ref, layers, engine, batch_size, threads, gpw > 0) for _ in range(workers)], ref,
                 workers * cpw, workers * gpw)
    _POOLS[key] = pool
    return pool


def _drop(ray: Any, pool: _Pool) -> None:
    for actor in pool.actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def _forget(ray: Any, pool: _Pool) -> None:
    """An interrupted run: its actors may still be busy with cancelled work, so they go."""
    for key, p in list(_POOLS.items()):
        if p is pool:
            del _POOLS[key]
    _drop(ray, pool)


def shutdown_pools() -> None:
    """Stop the actors this process keeps warm (they also end with the process or the Ray runtime)."""
    if not _POOLS:
        return
    ray = require_ray()
    while _POOLS:
        _drop(ray, _POOLS.popitem()[1])


def reduce_shards(cluster: Cluster, model: Any, dataset: Any, shards: Sequence[tuple[int, np.ndarray]],
                  templates: dict[str, Any], layers: list[str], finish: Callable[[int, dict[str, Any]], None], *,
                  batch_size: int | None = None, engine: str = "auto", progress: bool = True,
                  already: int = 0) -> tuple[int, int, str]:
    """Reduce ``shards`` (``(index, positions)``) of ``dataset`` on a pool of Ray actors; ``finish(index, payload)``
    is called on the driver once per shard, in the order they complete.

    The biggest shards go first, and two are kept in flight per actor (so an actor does not wait for the driver)
    while enough are left for every actor; the last ones go to whichever actor is free (a balanced tail). Returns
    ``(images reduced, batch size, engine)``.
    """
    ray = connect(cluster)
    total_images = sum(len(p) for _, p in shards)
    if not shards:
        return 0, batch_size or 0, "ray"
    pool = _pool(ray, cluster, model, layers, engine, batch_size)
    actors, workers = pool.actors, len(pool.actors)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_images + already, initial=already, unit="img", desc=f"scan on {workers} Ray workers",
                   leave=False)
    tref = ray.put(templates)
    # the biggest shards first (a dataset's short last shard, a resumed scan's partial ones go last), popped from
    # the end; equal sizes in index order
    queue = sorted(shards, key=lambda s: (len(s[1]), -s[0]))
    inflight: dict[Any, int] = {}  # object ref -> actor index
    busy = [0] * workers  # shards in flight per actor
    seen = merged = 0
    used, bs = "ray", batch_size or 0

    def give(a: int) -> None:
        i, pos = queue.pop()
        inflight[actors[a].reduce.remote(i, dataset[pos], tref)] = a
        busy[a] += 1

    def top_up() -> None:
        # every idle actor gets a shard; a second one waits in an actor's queue (so it never waits for the
        # driver) only while enough shards are left for every actor: committing the last shards to busy actors
        # would leave the others idle at the end (3 shards on 2 actors: 2 + 1 instead of 1 + 1, then 1)
        for a in range(workers):
            if queue and not busy[a]:
                give(a)
        for a in range(workers):
            if len(queue) >= workers and busy[a] < 2:
                give(a)

    try:
        top_up()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            a = inflight.pop(ready[0])
            busy[a] -= 1
            index, payload = ray.get(ready[0])
            top_up()  # before the merge: the actor's next shard is on its way while the driver merges
            finish(index, payload)
            seen += int(payload["images"])
            merged += 1
            if bar is not None:
                bar.update(int(payload["images"]) + sum(1 for _ in payload["skipped"]))
                bar.set_postfix_str(f"shard {merged}/{len(shards)}", refresh=False)
            if _after_shard is not None:
                _after_shard(merged, len(shards), actors)
        info = ray.get(actors[0].info.remote())
        used, bs = f"ray:{info['engine']}", int(info["batch_size"])
    except BaseException:
        _forget(ray, pool)
        raise
    finally:
        if bar is not None:
            bar.close()
    return seen, bs, used


def run_tasks(cluster: Cluster, model: Any, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]],
              done: Callable[[tuple[Any, ...], Any], None], *, progress: str | None = None) -> None:
    """Run ``fn(model, *job)`` for every job on a pool of actors that each hold ``model``; ``done(job, value)`` is
    called on the driver as each finishes (what it writes to disk is what a re-run skips: the resume).

    A dying actor is restarted and its job run again (``max_task_retries``). The microscope's feature
    visualisations run this way: one job per block of channels.
    """
    if not jobs:
        return
    ray = connect(cluster)
    pool = _pool(ray, cluster, model, [], "torch", 1)
    actors = pool.actors
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=progress, unit="job", leave=False)
    queue = list(jobs)
    queue.reverse()
    inflight: dict[Any, tuple[int, tuple[Any, ...]]] = {}
    try:
        for a in range(len(actors)):
            if queue:
                job = queue.pop()
                inflight[actors[a].call.remote(fn, *job)] = (a, job)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            a, job = inflight.pop(ready[0])
            done(job, ray.get(ready[0]))
            if queue:
                nxt = queue.pop()
                inflight[actors[a].call.remote(fn, *nxt)] = (a, nxt)
            if bar is not None:
                bar.update(1)
    except BaseException:
        _forget(ray, pool)
        raise
    finally:
        if bar is not None:
            bar.close()
