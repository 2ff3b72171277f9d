"""One streamed pass over a dataset that feeds any number of reducers at once.

Usage::

    from convlens.read import scan, load_dataset, PooledFeatures, TopK, DeadUnits, Histogram

    out = scan(model, "photos/", [PooledFeatures("global_pool"), TopK("blocks.4", k=9),
                                  DeadUnits(["blocks.2", "blocks.4"])], cache_dir="~/.cache/convlens")
    out["features"]["global_pool"]      # (N, 1280) CNN codes, rows in out["features"].files order
    out["topk:blocks.4"].ids            # (C, 9) image ids of each channel's strongest images
    out["dead"]["blocks.2"].dead        # channels that never fire on any image
    out.skipped                         # [(file, reason)] for images that could not be read

API:

- ``scan(model, images_or_folder, reducers, *, batch_size=None, cache_dir=None, progress=True) -> ScanResult``;
  ``ScanResult`` is a ``dict`` from reducer name (``reducer.name``: ``features``, ``topk:LAYER``, ``dead``,
  ``hist:LAYER``, ``pixels``; a duplicate name gets ``#2``...) to ``reducer.result()``, with the attributes
  ``skipped``, ``images`` (how many went through the network), ``seconds`` and ``batch_size``.
- ``images_or_folder`` is anything :func:`~convlens.read.dataset.load_dataset` accepts: a folder (recursive;
  ImageFolder sub-folders or a ``labels.csv`` give labels), a list of files, or a :class:`Dataset`.
- A reducer has ``layers`` (the layer outputs it reads), ``update(activations, batch_meta)``, ``merge(other)``
  and ``result()``; see :mod:`convlens.read.reducers`. Reducers merge associatively, so
  ``scan(m, ds[:400], [a]); scan(m, ds[400:], [b]); a.merge(b)`` equals one full scan.

How it is fast on a CPU (see ``benchmarks/bench_scan_throughput.py``): the network runs once per batch up to
the deepest layer any reducer needs (stopping early), compiled by OpenVINO in fp32 when it is installed
(:mod:`convlens.core.engine`; checked against PyTorch before use), else in PyTorch in ``channels_last`` memory
layout at a batch size chosen by timing a few candidates, with glibc's allocator tuned so activation buffers
are reused (:func:`convlens.tune_allocator`); images are decoded (JPEG draft mode) and resized by worker
threads while the network computes. Memory stays flat in the number of images: batches are prefetched a bounded
distance ahead and reducers keep fixed-size state, features going to memory-mapped files in ``cache_dir``.

Ctrl-C stops the scan after flushing the feature cache, so a re-run with the same ``cache_dir`` resumes where
it stopped. Unreadable images are reported in ``skipped`` (and warned about), never fatal.

Shards, checkpoints and clusters: with a ``checkpoint`` folder (by default ``cache_dir/checkpoints`` when there
is a ``cache_dir``) the scan runs shard by shard (``shard_size`` consecutive images, default 128), each reduced by
fresh copies of the reducers, written to disk and merged (:mod:`convlens.read.checkpoint`): a scan killed even
with SIGKILL loses at most the shard it was reading, and the re-run merges the parts and reads only the rest. The
same shards run on a pool of Ray actors with ``cluster=`` (:mod:`convlens.read.distributed`); the result is the
same wherever the shards ran. Without a checkpoint or a cluster the scan is the one unsharded pass above.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.engine import LayerReader, channels_last, fair_threads, open_reader
from ..errors import UserError
from ..models import Model
from ..runtime import tune_allocator
from .checkpoint import ScanCheckpoint, scan_key
from .dataset import Dataset, load_dataset
from .reducers import BatchMeta, Reducer

__all__ = ["ScanResult", "choose_batch_size", "dead_unit_layers", "feature_layer", "is_rectified", "reduce_shard", "scan",
           "unit_layer_at", "unit_layers"]

_BATCH_CACHE: dict[tuple, int] = {}
DEFAULT_BATCH = 16
"""Images per eager forward pass when the size was not measured (a small job, or not yet timed on this machine)."""
TIME_BATCHES_FROM = 20
"""Batch sizes are timed only for a job at least this many times the images the timing reads (it saves ~10-20%)."""
SHARD_SIZE = 128  # images per shard of a checkpointed scan: what a SIGKILL can lose at most


class ScanResult(dict):
    """Reducer name -> result, plus what happened: ``skipped`` files, ``images`` scanned, ``seconds``; for a sharded
    scan also ``shards`` (how many) and ``resumed`` (images whose reduction came from the checkpoint); ``engine``, ``batch_size``
    and ``threads`` say how this process read the network."""

    skipped: list[tuple[str, str]]
    images: int
    seconds: float
    batch_size: int
    engine: str
    threads: int
    shards: int = 0
    resumed: int = 0


def _deepest(model: Model, layers: set[str]) -> list[str]:
    order = model.layers.names()
    for name in layers:
        model.layers[name]  # unknown names answered with the closest ones
    return sorted(layers, key=order.index)


def choose_batch_size(model: Model, layers: Sequence[str] = (), *, candidates: Sequence[int] = (4, 8, 16, 32),
                      repeats: int = 2, images: int | None = None) -> int:
    """Time the network on random batches of each candidate size and return the fastest per image.

    The answer is remembered per network, input size, device and deepest layer for the process, and on the CPU
    on disk too (in the engine's plan: :func:`convlens.core.engine.load_plan`), so it is measured once a machine.
    ``images``: the job's size; timing reads ``(repeats + 1) * sum(candidates)`` images, so a job smaller than
    :data:`TIME_BATCHES_FROM` times that is not timed and gets the remembered size, else :data:`DEFAULT_BATCH`.
    """
    from ..core.engine import load_plan, save_plan

    order = model.layers.names()
    last = max((order.index(n) for n in layers), default=len(order) - 1)
    key = (id(model.module), model.preprocess.size, str(model.device), last, torch.get_num_threads())
    if key in _BATCH_CACHE:
        return _BATCH_CACHE[key]
    names = list(layers) or [order[-1]]
    on_cpu = model.device.type == "cpu"
    remembered = load_plan(model, names).get("eager_batch") if on_cpu else None
    if isinstance(remembered, int) and remembered > 0:
        _BATCH_CACHE[key] = remembered
        return remembered
    if images is not None and images < TIME_BATCHES_FROM * (repeats + 1) * sum(candidates):
        return DEFAULT_BATCH  # timing would cost more than it can save on this job; not remembered
    h, w = model.preprocess.size
    best, best_rate = candidates[0], 0.0
    read = LayerReader(model, names)
    with torch.no_grad(), channels_last(model):
        for b in candidates:
            x = torch.rand(b, 3, h, w, device=model.device)
            read(x)  # warm-up
            t = min(_timed(read, x) for _ in range(repeats))
            rate = b / t
            if rate > best_rate * 1.03:  # a bigger batch must be clearly faster to win
                best, best_rate = b, rate
    _BATCH_CACHE[key] = best
    if on_cpu:
        save_plan(model, names, eager_batch=best)
    return best


def _timed(read: LayerReader, x: torch.Tensor) -> float:
    t = time.perf_counter()
    read(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _decode(model: Model, path: Path) -> torch.Tensor:
    return model.preprocess.to_tensor(path)


def scan(model: Model, images_or_folder: Any, reducers: Sequence[Reducer] | dict[str, Reducer], *,
         batch_size: int | None = None, cache_dir: str | Path | None = None, progress: bool = True,
         workers: int = 2, tune: bool = True, engine: str = "auto", checkpoint: str | Path | bool | None = None,
         shard_size: int | None = None, cluster: Any = None, threads: int | None = None) -> ScanResult:
    """Stream a dataset through ``model`` once and feed every reducer from the same forward pass.

    Args:
        model: the :class:`~convlens.Model` to read.
        images_or_folder: a folder, a text file listing images, ``.tar`` shards, a list of image files or a
            :class:`Dataset` (see :func:`~convlens.read.dataset.load_dataset`).
        reducers: :class:`Reducer` objects (a list, or a dict giving their result names).
        batch_size: images per forward pass; ``None`` measures a few sizes once and picks the fastest.
        cache_dir: where pooled features are written as they come and found again next time; also where the
            scan checkpoints its shards unless ``checkpoint`` says otherwise.
        progress: show a progress bar (tqdm) on stderr.
        workers: threads that decode and resize images while the network computes.
        tune: apply :func:`convlens.tune_allocator` (keeps activation buffers in the process; glibc only).
        engine: ``"auto"`` (eager PyTorch, switching to OpenVINO on the CPU when it is installed and the images
            left repay compiling: see :mod:`convlens.core.engine`), ``"openvino"`` or ``"torch"``; see :mod:`convlens.core.engine`. ``"ray"``: on a local
            Ray runtime (as ``cluster="local"``), each worker on ``"auto"``.
        checkpoint: a folder for the reduced shards (:mod:`convlens.read.checkpoint`): an interrupted scan, even a
            killed one, resumes from them and loses at most the shards it was reducing. ``None``: under
            ``cache_dir/checkpoints`` when there is a ``cache_dir``, else none (one unsharded pass); ``True``:
            there or under :func:`~convlens.core.engine.cache_root`; ``False``: none.
        shard_size: images per shard of a checkpointed or distributed scan (default 128).
        cluster: run the shards on Ray actors (:mod:`convlens.read.distributed`): ``"local"`` (a Ray runtime on
            this machine), ``"auto"`` or an address (join a running cluster), or a
            :class:`~convlens.read.distributed.Cluster` with the worker count and resources. ``None``: on this
            process, unless a :func:`~convlens.read.distributed.on_cluster` block says otherwise.
        threads: compute threads on this process; ``None``: the cores other processes leave free
            (:func:`~convlens.core.engine.fair_threads`), so a busy machine slows the scan in proportion.

    Returns:
        A :class:`ScanResult`: reducer name -> ``reducer.result()``; ``.skipped`` lists ``(file, reason)`` for
        unreadable images. The result does not depend on the sharding, the checkpoint or the cluster: the same
        top-k ids and positions, counts and histograms, and features equal to float tolerance.
    """
    threads = threads or (fair_threads() if model.device.type == "cpu" else torch.get_num_threads())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = _scan(model, images_or_folder, reducers, batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                    workers=workers, tune=tune, engine=engine, checkpoint=checkpoint, shard_size=shard_size,
                    cluster=cluster)
    finally:
        torch.set_num_threads(before)
    out.threads = threads
    return out


def _scan(model: Model, images_or_folder: Any, reducers: Sequence[Reducer] | dict[str, Reducer], *,
          batch_size: int | None, cache_dir: str | Path | None, progress: bool, workers: int, tune: bool, engine: str,
          checkpoint: str | Path | bool | None, shard_size: int | None, cluster: Any) -> ScanResult:
    from .distributed import as_cluster

    cluster = as_cluster(cluster, engine)
    if engine == "ray":
        engine = "auto"
    if tune:
        tune_allocator()
    dataset = load_dataset(images_or_folder)
    if isinstance(reducers, dict):
        named = dict(reducers)
    else:
        named = {}
        for r in reducers:
            key, i = r.name, 2
            while key in named:
                key, i = f"{r.name}#{i}", i + 1
            named[key] = r
    if not named:
        raise UserError("scan needs at least one reducer")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    folder = _checkpoint_folder(checkpoint, cache)
    sharded = folder is not None or cluster is not None
    if shard_size is not None and shard_size < 1:
        raise UserError(f"shard size must be at least 1, got {shard_size}")
    templates = {k: copy.deepcopy(r) for k, r in named.items()} if sharded else {}  # fresh copies reduce each shard
    for r in named.values():
        r.start(dataset, model, cache)
    need = np.zeros(len(dataset), dtype=bool)
    active = {}  # reducers with work left; a reducer fully answered by its cache is not fed again
    for key, r in named.items():
        p = r.pending()
        if p is None or p.any():
            active[key] = r
            need |= np.ones(len(dataset), dtype=bool) if p is None else p
    todo = np.flatnonzero(need)
    layers = _deepest(model, {name for r in active.values() for name in r.layers})

    started = time.perf_counter()
    skipped: list[tuple[str, str]] = []
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")

    seen = resumed = 0
    n_shards = 0
    used = "torch"
    try:
        if not sharded:
            seen, batch_size, used = _scan_local(model, dataset, [todo], active, layers, batch_size, workers, engine,
                                                 progress, skipped, None, 0)
        else:
            size = shard_size or SHARD_SIZE
            shards = [(i, pos) for i, pos in _plan(need, size)]
            n_shards = len(shards)
            ckpt = ScanCheckpoint(folder, scan_key(model, dataset, named, size)) if folder is not None else None
            done: set[int] = set()

            def absorb(payload: dict[str, Any]) -> None:
                for name, partial in payload["reducers"].items():
                    if name in active:
                        _absorb(active[name], partial)
                skipped.extend(tuple(s) for s in payload["skipped"])  # type: ignore[misc]

            if ckpt is not None:
                wanted = {i for i, _ in shards}
                for i in ckpt.done():
                    payload = ckpt.load(i) if i in wanted else None
                    if payload is not None and set(active) <= set(payload["reducers"]):
                        absorb(payload)
                        done.add(i)
                        resumed += int(payload["images"])
            remaining = [(i, pos) for i, pos in shards if i not in done]

            def finish(i: int, payload: dict[str, Any]) -> None:
                """One reduced shard: on disk first, then into the result (exactly once per shard)."""
                if i in done:
                    return
                if ckpt is not None:
                    ckpt.save(i, payload)
                absorb(payload)
                done.add(i)

            if cluster is not None:
                from .distributed import reduce_shards

                seen, batch_size, used = reduce_shards(
                    cluster, model, dataset, remaining, {k: templates[k] for k in active}, layers, finish,
                    batch_size=batch_size, engine=engine, progress=progress, already=resumed)
            else:
                seen, batch_size, used = _scan_local(model, dataset, remaining, active, layers, batch_size, workers,
                                                     engine, progress, skipped, (templates, finish), resumed)
            if ckpt is not None:
                ckpt.remove()
    finally:
        for r in named.values():
            r.close()
    if len(todo) and not seen + resumed and skipped:  # nothing readable: no result, one line (like read_images)
        raise UserError(f"none of the {len(skipped)} image(s) could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    for f, why in skipped:
        warnings.warn(f"skipped {f}: {why}", stacklevel=2)
    out = ScanResult({name: r.result() for name, r in named.items()})
    out.skipped, out.images, out.batch_size, out.engine = skipped, seen + resumed, batch_size or 0, used
    out.seconds = time.perf_counter() - started
    out.shards, out.resumed = n_shards, resumed
    return out


def _checkpoint_folder(checkpoint: str | Path | bool | None, cache: Path | None) -> Path | None:
    if checkpoint is False:
        return None
    if checkpoint is None:
        return cache / "checkpoints" if cache is not None else None
    if checkpoint is True:
        from ..core.engine import cache_root

        return (cache if cache is not None else cache_root()) / "checkpoints"
    return Path(checkpoint).expanduser()


def _plan(need: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Shards: the needed positions of each block of ``size`` consecutive images (a block's index is stable)."""
    for i in range(0, len(need), size):
        pos = np.flatnonzero(need[i:i + size]) + i
        if len(pos):
            yield i // size, pos


def _absorb(into: Reducer, partial: Reducer) -> None:
    """Merge a shard's partial reducer into the scan's; pooled features go row by row into its (cached) arrays."""
    from .reducers import PooledFeatures

    if isinstance(into, PooledFeatures) and isinstance(partial, PooledFeatures):
        feats = partial.result()
        if len(feats.ids):
            into.update({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in feats.layers.items()},
                        BatchMeta(feats.ids, feats.files, feats.labels, torch.zeros(0)))
        return
    into.merge(partial)


def _fresh(templates: dict[str, Reducer], names: Sequence[str], shard: Dataset, model: Model) -> dict[str, Reducer]:
    out = {k: copy.deepcopy(templates[k]) for k in names}
    for r in out.values():
        r.start(shard, model, None)
    return out


def reduce_shard(model: Model, read: LayerReader, shard: Dataset, templates: dict[str, Reducer], batch_size: int,
                 pool: ThreadPoolExecutor) -> dict[str, Any]:
    """Reduce one shard with fresh copies of ``templates``: the payload a checkpoint part holds and a worker returns.

    ``{"reducers": {name: partial}, "skipped": [(file, reason)], "images": n, "seconds": s}``.
    """
    t = time.perf_counter()
    partials = _fresh(templates, list(templates), shard, model)
    skipped: list[tuple[str, str]] = []
    n = 0
    for _, pixels, pos in _batches(model, shard, [np.arange(len(shard))], batch_size, pool, skipped):
        if pixels is not None and pos is not None:  # both None at the end of a shard
            _feed(model, read, shard, pixels, pos, partials.values())
            n += len(pos)
    return {"reducers": partials, "skipped": skipped, "images": n, "seconds": time.perf_counter() - t}


def _feed(model: Model, read: LayerReader, dataset: Dataset, pixels: torch.Tensor, pos: np.ndarray,
          reducers: Any) -> None:
    x = pixels.to(model.device, non_blocking=True)
    acts = read(x)
    meta = BatchMeta(dataset.ids[pos], [dataset.files[i] for i in pos],
                     None if dataset.labels is None else [dataset.labels[i] for i in pos], x)
    for r in reducers:
        r.update(acts, meta)


def _scan_local(model: Model, dataset: Dataset, shards: Sequence[Any], active: dict[str, Reducer],
                layers: list[str], batch_size: int | None, workers: int, engine: str, progress: bool,
                skipped: list[tuple[str, str]], sharded: tuple[dict[str, Reducer], Any] | None,
                already: int) -> tuple[int, int, str]:
    """The scan on this process: unsharded (``shards`` is ``[todo]``, reducers updated in place) or shard by shard
    (``shards`` is ``[(index, positions)]``, each reduced by fresh copies and handed to ``finish``)."""
    positions = [s for s in shards] if sharded is None else [pos for _, pos in shards]
    total = sum(len(p) for p in positions)
    bar = None
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total + already, initial=already, unit="img", desc="scan", leave=False)
    seen = 0
    used = "torch"
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                open_reader(model, layers, engine=engine, images=total) as read:
            used = read.engine
            if batch_size is None:
                if used != "torch":
                    batch_size = DEFAULT_BATCH  # OpenVINO splits each batch into requests of its own size
                else:
                    batch_size = choose_batch_size(model, layers, images=total) if layers else DEFAULT_BATCH
            if not total:
                return 0, batch_size, used
            if sharded is None:
                for _, pixels, pos in _batches(model, dataset, positions, batch_size, pool, skipped):
                    if pixels is not None and pos is not None:  # both None at the end of a shard
                        _feed(model, read, dataset, pixels, pos, active.values())
                        seen += len(pos)
                        if bar is not None:
                            bar.update(len(pos))
                return seen, batch_size, read.engine
            templates, finish = sharded
            partials: dict[str, Reducer] | None = None
            mine: list[tuple[str, str]] = []
            t = time.perf_counter()
            n = 0
            try:
                for k, pixels, pos in _batches(model, dataset, positions, batch_size, pool, mine):
                    index, shard_pos = shards[k]
                    if partials is None:
                        shard = dataset[shard_pos]
                        partials = _fresh(templates, list(active), shard, model)
                    if pixels is not None and pos is not None:  # both None at the end of a shard
                        _feed(model, read, dataset, pixels, pos, partials.values())
                        n += len(pos)
                        if bar is not None:
                            bar.update(len(pos))
                        continue
                    finish(index, {"reducers": partials, "skipped": mine, "images": n,
                                   "seconds": time.perf_counter() - t})
                    seen += n
                    partials, mine, n, t = None, [], 0, time.perf_counter()
                    if bar is not None:
                        bar.set_postfix_str(f"shard {k + 1}/{len(shards)}", refresh=False)
                used = read.engine
            except BaseException:
                # interrupted inside a shard: its pooled-feature rows still go to the feature cache (rows are
                # idempotent); the shard's counts are dropped, and the whole shard is read again next time
                from .reducers import PooledFeatures

                for name, p in (partials or {}).items():
                    if isinstance(p, PooledFeatures):
                        _absorb(active[name], p)
                raise
    finally:
        if bar is not None:
            bar.close()
    return seen, batch_size, used


def _batches(model: Model, dataset: Dataset, shards: Sequence[np.ndarray], batch_size: int, pool: ThreadPoolExecutor,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[int, torch.Tensor | None, np.ndarray | None]]:
    """Decoded pixel batches ``(shard, pixels, positions)`` in dataset order, decoding up to two batches ahead in the
    worker threads across shard boundaries; a batch never spans two shards, and ``(shard, None, None)`` follows
    each shard's last batch."""
    queue: deque[tuple[int, int, Future]] = deque()
    it = ((k, i) for k, pos in enumerate(shards) for i in np.asarray(pos).tolist())
    ahead = 2 * batch_size + 1

    def fill() -> None:
        while len(queue) < ahead:
            try:
                k, i = next(it)
            except StopIteration:
                return
            queue.append((k, i, pool.submit(_decode, model, dataset.files[i])))

    fill()
    try:
        for k in range(len(shards)):
            while queue and queue[0][0] == k:
                tensors: list[torch.Tensor] = []
                pos: list[int] = []
                while queue and queue[0][0] == k and len(pos) < batch_size:
                    _, i, fut = queue.popleft()
                    fill()
                    try:
                        tensors.append(fut.result())
                        pos.append(i)
                    except UserError as exc:
                        skipped.append((str(dataset.files[i]), str(exc)))
                    except Exception as exc:  # noqa: BLE001 - a broken file must not end the scan
                        skipped.append((str(dataset.files[i]), f"{type(exc).__name__}: {exc}"))
                if pos:
                    yield k, torch.stack(tensors), np.asarray(pos, dtype=np.int64)
            yield k, None, None
    finally:
        for _, _, fut in queue:
            fut.cancel()


def feature_layer(model: Model) -> str:
    """The layer whose output is the "CNN code": the last flat (non-spatial) layer before the classifier.

    For EfficientNet / ResNet this is the global pool (1280 / 512 values), for VGG / AlexNet the last hidden fully
    connected layer (fc7). Falls back to the deepest spatial layer (globally pooled by the scan).
    """
    infos = list(model.layers)
    last = model.layers.classifier()
    stop = next((i for i, info in enumerate(infos) if info.name == last), len(infos)) if last else len(infos)
    flat = [info.name for info in infos[:stop] if not info.spatial and info.shape and info.shape[0] > 1]
    if flat:
        return flat[-1]
    return model.layers.last_spatial()


_RECTIFIERS = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardtanh, torch.nn.LeakyReLU, torch.nn.ELU)


def last_rectifier(model: Model, layer: str) -> torch.nn.Module | None:
    """The rectifier module whose output ``layer`` is: the layer itself (ReLU, ReLU6, ...) or its last
    sub-module (a Conv-BN-ReLU block); None when the layer's output is linear."""
    mod = model.layers.modules.get(layer)
    if mod is None:
        return None
    last = list(mod.modules())[-1]
    return last if isinstance(last, _RECTIFIERS) else None


def is_rectified(model: Model, layer: str) -> bool:
    """Whether ``layer``'s output has passed a rectifier (see :func:`last_rectifier`). Only there does "never
    positive" mean a dead unit."""
    return last_rectifier(model, layer) is not None


def unit_layer_at(model: Model, layer: str) -> str:
    """The last rectified spatial layer at or before ``layer`` (``layer`` itself when none is): where single units
    mean something -- in an inverted-residual network a stage output is a linear projection, where a unit's sign
    is arbitrary and "dead" meaningless. A rectifier module called more than once (a ResNet block's shared ReLU,
    whose last call is the block output) is not one layer: then ``layer`` itself is the answer."""
    order = model.layers.names()
    at = order.index(layer)
    rect = [k for k in (order.index(i.name) for i in model.layers.spatial() if is_rectified(model, i.name)) if k <= at]
    if not rect:
        return layer
    pick = order[max(rect)]
    return layer if model.layers.calls.get(pick, 1) > 1 else pick


def unit_layers(model: Model, n: int = 3) -> list[str]:
    """Default layers for top patches and the microscope: :func:`unit_layer_at` of ``n`` stage outputs spread over
    the depth (:meth:`~convlens.models.layers.LayerIndex.spread`), without repeats."""
    return list(dict.fromkeys(unit_layer_at(model, stage) for stage in model.layers.spread(n)))


def dead_unit_layers(model: Model) -> list[str]:
    """Every spatial layer that is a rectifier module (ReLU, ReLU6, ...): where "never fires" has a meaning.

    Falls back to every top-level spatial layer when the network has no rectifier modules.
    """
    names = [i.name for i in model.layers.spatial() if isinstance(model.layers.modules[i.name], _RECTIFIERS)]
    return names or [i.name for i in model.layers.spatial() if "." not in i.name]
