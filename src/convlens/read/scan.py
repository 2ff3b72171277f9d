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
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.engine import LayerReader, channels_last, open_reader
from ..errors import UserError
from ..models import Model
from ..runtime import tune_allocator
from .dataset import Dataset, load_dataset
from .reducers import BatchMeta, Reducer

__all__ = ["ScanResult", "choose_batch_size", "dead_unit_layers", "feature_layer", "scan"]

_BATCH_CACHE: dict[tuple, int] = {}


class ScanResult(dict):
    """Reducer name -> result, plus what happened: ``skipped`` files, ``images`` scanned, ``seconds``."""

    skipped: list[tuple[str, str]]
    images: int
    seconds: float
    batch_size: int
    engine: str


def _deepest(model: Model, layers: set[str]) -> list[str]:
    order = model.layers.names()
    for name in layers:
        model.layers[name]  # unknown names answered with the closest ones
    return sorted(layers, key=order.index)


def choose_batch_size(model: Model, layers: Sequence[str] = (), *, candidates: Sequence[int] = (4, 8, 16, 32),
                      repeats: int = 2) -> int:
    """Time the network on random batches of each candidate size and return the fastest per image.

    The answer is remembered per network, input size, device and deepest layer, so it is measured once a process.
    """
    order = model.layers.names()
    last = max((order.index(n) for n in layers), default=len(order) - 1)
    key = (id(model.module), model.preprocess.size, str(model.device), last)
    if key in _BATCH_CACHE:
        return _BATCH_CACHE[key]
    h, w = model.preprocess.size
    best, best_rate = candidates[0], 0.0
    names = list(layers) or [order[-1]]
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
         workers: int = 2, tune: bool = True, engine: str = "auto") -> ScanResult:
    """Stream a dataset through ``model`` once and feed every reducer from the same forward pass.

    Args:
        model: the :class:`~convlens.Model` to read.
        images_or_folder: a folder, a list of image files or a :class:`Dataset`.
        reducers: :class:`Reducer` objects (a list, or a dict giving their result names).
        batch_size: images per forward pass; ``None`` measures a few sizes once and picks the fastest.
        cache_dir: where pooled features are written as they come and found again next time.
        progress: show a progress bar (tqdm) on stderr.
        workers: threads that decode and resize images while the network computes.
        tune: apply :func:`convlens.tune_allocator` (keeps activation buffers in the process; glibc only).
        engine: ``"auto"`` (OpenVINO on the CPU when it is installed and there are at least 64 images to read,
            else PyTorch), ``"openvino"`` or ``"torch"``; see :mod:`convlens.core.engine`.

    Returns:
        A :class:`ScanResult`: reducer name -> ``reducer.result()``; ``.skipped`` lists ``(file, reason)`` for
        unreadable images.
    """
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
    if engine == "auto" and len(todo) < 64:
        engine = "torch"  # compiling costs a second or two, more than a small scan saves
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")

    bar = None
    if progress and len(todo):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="scan", leave=False)
    seen = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, open_reader(model, layers, engine=engine) as read:
            used = read.engine
            if batch_size is None:
                if used != "torch":
                    batch_size = 16  # OpenVINO splits each batch into requests of its own size
                else:
                    batch_size = choose_batch_size(model, layers) if len(todo) >= 64 and layers else 8
            for pixels, pos in _batches(model, dataset, todo, batch_size, pool, skipped):
                x = pixels.to(model.device, non_blocking=True)
                acts = read(x)
                meta = BatchMeta(dataset.ids[pos], [dataset.files[i] for i in pos],
                                 None if dataset.labels is None else [dataset.labels[i] for i in pos], x)
                for r in active.values():
                    r.update(acts, meta)
                seen += len(pos)
                if bar is not None:
                    bar.update(len(pos))
    finally:
        if bar is not None:
            bar.close()
        for r in named.values():
            r.close()
    for f, why in skipped:
        warnings.warn(f"skipped {f}: {why}", stacklevel=2)
    out = ScanResult({name: r.result() for name, r in named.items()})
    out.skipped, out.images, out.batch_size, out.engine = skipped, seen, batch_size or 0, used
    out.seconds = time.perf_counter() - started
    return out


def _batches(model: Model, dataset: Dataset, todo: np.ndarray, batch_size: int, pool: ThreadPoolExecutor,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Decoded pixel batches in dataset order, decoding up to two batches ahead in the worker threads."""
    queue: deque[tuple[int, Future]] = deque()
    it = iter(todo.tolist())
    ahead = 2 * batch_size + 1

    def fill() -> None:
        while len(queue) < ahead:
            try:
                i = next(it)
            except StopIteration:
                return
            queue.append((i, pool.submit(_decode, model, dataset.files[i])))

    fill()
    try:
        while queue:
            tensors: list[torch.Tensor] = []
            pos: list[int] = []
            while queue and len(pos) < batch_size:
                i, fut = queue.popleft()
                fill()
                try:
                    tensors.append(fut.result())
                    pos.append(i)
                except UserError as exc:
                    skipped.append((str(dataset.files[i]), str(exc)))
                except Exception as exc:  # noqa: BLE001 - a broken file must not end the scan
                    skipped.append((str(dataset.files[i]), f"{type(exc).__name__}: {exc}"))
            if pos:
                yield torch.stack(tensors), np.asarray(pos, dtype=np.int64)
    finally:
        for _, fut in queue:
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


def dead_unit_layers(model: Model) -> list[str]:
    """Every spatial layer that is a rectifier module (ReLU, ReLU6, ...): where "never fires" has a meaning.

    Falls back to every top-level spatial layer when the network has no rectifier modules.
    """
    names = [i.name for i in model.layers.spatial() if isinstance(model.layers.modules[i.name], _RECTIFIERS)]
    return names or [i.name for i in model.layers.spatial() if "." not in i.name]
