"""Forward-only reading of layer outputs: eager PyTorch, or the same network compiled for the CPU by OpenVINO.

A dataset scan only runs the network forward. PyTorch's eager CPU kernels leave much of the machine idle on
depthwise-separable networks such as EfficientNet, one memory pass per op. OpenVINO compiles the same network
(traced once and cut after the deepest layer read) into fused fp32 kernels and runs several images at once on
its own streams. On a 2-core Xeon it reads EfficientNet-Lite0's pooled features about 2.5x faster than eager
PyTorch in ``channels_last`` (``benchmarks/bench_scan_throughput.py``). The numbers stay the same: fp32
throughout, and every compiled network is checked against eager PyTorch on a probe batch before it is used.
It falls back to PyTorch, with a warning, if it differs or cannot be compiled.

Usage::

    with open_reader(model, ["blocks.4", "global_pool"]) as read:
        acts = read(x)        # {"blocks.4": N×C×H×W, "global_pool": N×1280}, as activations(model, x, layers)
        read.engine           # "openvino" or "torch"

``engine="auto"`` compiles with OpenVINO when it is installed and the model is on the CPU, then times two
request sizes (2 and 8 images) against eager PyTorch on 16 images and keeps the fastest; ``"torch"`` and
``"openvino"`` force one. Compiled networks are kept in memory for the process; the converted network and the
timed choice are kept on disk under :func:`cache_root` (``$CONVLENS_CACHE``, else ``$XDG_CACHE_HOME/convlens``,
else ``~/.cache/convlens``; the 16 most recently used), keyed by a hash of the weights, so the next process
skips both.
OpenVINO is imported with its usage telemetry left out: convlens sends nothing anywhere.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..interrupts import deferred_interrupt
from ..models.model import Model
from .cache import cache_key
from .taps import Tap

__all__ = ["ENGINES", "LayerReader", "cache_root", "channels_last", "open_reader", "openvino_available"]

ENGINES = ("auto", "openvino", "torch")
# images per OpenVINO request, whichever runs faster on this machine: small requests suit depthwise networks
# (EfficientNet-Lite0 on 2 cores: 2 per request), bigger ones networks with large fully connected layers (AlexNet, VGG)
_REQUEST_BATCHES = (2, 8)
_KEEP_ON_DISK = 16  # converted networks kept in the cache folder, the most recently used
# compiled networks of this process, a few at most (None: eager PyTorch reads that network faster)
_readers: OrderedDict[tuple, _OpenVINOReader | None] = OrderedDict()


def cache_root() -> Path:
    """Where convlens keeps what it can rebuild: ``$CONVLENS_CACHE``, ``$XDG_CACHE_HOME/convlens`` or ``~/.cache``."""
    if os.environ.get("CONVLENS_CACHE"):
        return Path(os.environ["CONVLENS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "convlens"


def _openvino() -> Any | None:
    """The ``openvino`` module, imported without its usage telemetry (which would otherwise report the import)."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino_telemetry" not in sys.modules
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # OpenVINO then uses its own stub
    try:
        import openvino
    except Exception:  # noqa: BLE001 - not installed, or no wheel for this platform
        return None
    finally:
        if blocked:
            del sys.modules["openvino_telemetry"]
    return openvino


def openvino_available() -> bool:
    return _openvino() is not None


class LayerReader:
    """``reader(x) -> {layer: output}`` for a pixel batch, forward only; ``engine`` says which engine runs it."""

    engine = "torch"

    def __init__(self, model: Model, layers: Sequence[str]) -> None:
        self.model, self.layers = model, list(layers)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.layers:
            return {}
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), Tap(self.model, self.layers, stop=True, detach=True) as tap:
            tap.run(x)
            return dict(tap.outputs)


class _OpenVINOReader(LayerReader):
    engine = "openvino"

    def __init__(self, model: Model, layers: Sequence[str], compiled: Any, batch: int) -> None:
        super().__init__(model, layers)
        self.batch = batch  # images per request: the compiled network's fixed batch
        ov: Any = _openvino()
        requests = 2 * max(1, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))  # two in flight per stream
        self._queue = ov.AsyncInferQueue(compiled, requests)
        self._results: list[Any] = []
        outputs = len(self.layers)

        def done(request: Any, i: int) -> None:
            self._results[i] = [request.get_output_tensor(j).data.copy() for j in range(outputs)]

        self._queue.set_callback(done)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.layers:
            return {}
        n, b = len(x), self.batch
        x = x.detach().to("cpu", torch.float32).contiguous()
        if n % b:
            x = torch.cat([x, x[-1:].expand(b - n % b, -1, -1, -1)])  # the last request is padded, then cut off
        pixels = x.numpy()
        self._results = [None] * (len(pixels) // b)
        # Ctrl-C while requests are in flight must wait for them: leaving OpenVINO's threads running into the
        # interpreter's shutdown aborts the process ("FATAL: exception not rethrown") instead of exiting 130
        with deferred_interrupt() as interrupt:
            try:
                for i in range(len(self._results)):
                    if interrupt:
                        break
                    self._queue.start_async(pixels[i * b:(i + 1) * b], i, share_inputs=True)
            finally:
                self._queue.wait_all()
        interrupt.check()
        return {name: torch.from_numpy(np.concatenate([r[j] for r in self._results])[:n])
                for j, name in enumerate(self.layers)}


@contextlib.contextmanager
def channels_last(model: Model) -> Iterator[None]:
    """Run the network in ``channels_last`` layout for the duration (a wrapped user network is put back after)."""
    module = model.module
    params = list(module.parameters())
    if not params or not any(p.dim() == 4 for p in params):
        yield
        return
    was = [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in params if p.dim() == 4]
    module.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if not getattr(model, "_owned", False) and not all(was):
            module.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def open_reader(model: Model, layers: Sequence[str], *, engine: str = "auto") -> Iterator[LayerReader]:
    """A :class:`LayerReader` for ``layers`` of ``model`` on the chosen engine (see the module docstring)."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    layers = list(layers)
    reader: LayerReader | None = None
    on_cpu, available = model.device.type == "cpu", openvino_available()
    if engine == "openvino" and not on_cpu:
        raise UserError(f"the openvino engine runs on the CPU; this model is on {model.device}")
    if engine == "openvino" and not available:
        raise UserError("the openvino engine needs OpenVINO: pip install openvino")
    if engine != "torch" and on_cpu and layers and available:
        try:
            reader = _compile(model, layers, allow_torch=engine == "auto")
        except Exception as exc:  # any failure to compile means: read with PyTorch
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if engine == "openvino":
                raise UserError(f"OpenVINO could not run this network: {why}") from exc
            warnings.warn(f"OpenVINO could not run this network ({why}); reading it with PyTorch", stacklevel=3)
    if reader is not None:
        yield reader
        return
    with torch.no_grad(), channels_last(model):
        yield LayerReader(model, layers)


# --- compiling ----------------------------------------------------------------------------------------------

class _Upto(nn.Module):
    """The network as a function from pixels to the outputs of ``layers``, stopping after the deepest (to trace)."""

    def __init__(self, model: Model, layers: list[str]) -> None:
        super().__init__()
        self.net = model.module  # registered, so the tracer sees its weights as parameters, not constants
        self.model, self.layers = model, layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with Tap(self.model, self.layers, stop=True) as tap:
            tap.run(x)
        return tuple(tap.outputs[name] for name in self.layers)


def _compile(model: Model, layers: list[str], *, allow_torch: bool = False) -> _OpenVINOReader | None:
    """A reader on the network compiled by OpenVINO, checked against PyTorch, at the faster request batch;
    ``None`` when ``allow_torch`` and eager PyTorch reads this network faster (big dense layers can do that)."""
    ov: Any = _openvino()
    threads = torch.get_num_threads()
    module, pre = model.module, model.preprocess
    # a tensor changed in place (an optimiser step, load_state_dict) bumps its version; a layout change does not
    tensors = [*module.parameters(), *module.buffers()]
    key = (id(module), tuple(layers), pre.size, pre.mean, pre.std, threads, allow_torch,
           tuple((id(t), t._version) for t in tensors))
    if key in _readers:
        _readers.move_to_end(key)
        return _readers[key]
    h, w = pre.size
    path = _cache_path(ov, model, layers)
    remembered = path.with_suffix(f".threads{threads}")
    measured = None  # what an earlier process measured here: the request batch, or 0 when PyTorch was faster
    with contextlib.suppress(OSError, ValueError):
        measured = int(remembered.read_text())
    if measured == 0 and allow_torch:
        return _remember(key, None)
    batches = [measured] if measured else list(_REQUEST_BATCHES)
    network = _converted(ov, model, layers, path)
    check = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(1))  # not the traced input
    with torch.no_grad(), Tap(model, layers, stop=True, detach=True) as tap:
        tap.run(check)
    readers = []
    for b in batches:
        fixed = network.clone()
        fixed.reshape([b, 3, h, w])
        compiled = ov.Core().compile_model(fixed, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "PERFORMANCE_HINT": "THROUGHPUT",
                                                          "INFERENCE_NUM_THREADS": threads})
        reader = _OpenVINOReader(model, layers, compiled, b)
        got = reader(check)  # also the warm-up
        for name in layers:
            want = tap.outputs[name].float()
            err = float((got[name] - want).abs().max()) if got[name].shape == want.shape else float("inf")
            if not err <= 1e-4 * float(want.abs().max()) + 1e-5:
                raise RuntimeError(f"compiled output of {name} differs from PyTorch by {err:.2g}")
        readers.append(reader)
    if measured:
        return _remember(key, readers[0])
    chosen = _fastest(model, layers, readers, with_eager=allow_torch)
    if allow_torch:  # only a choice made against PyTorch too is remembered
        with contextlib.suppress(OSError):
            remembered.write_text(str(chosen.batch if chosen else 0))
    return _remember(key, chosen)


def _fastest(model: Model, layers: list[str], readers: list[_OpenVINOReader], *,
             with_eager: bool) -> _OpenVINOReader | None:
    """The fastest reader on 16 images, in alternating rounds (the machine's speed drifts); a bigger request batch
    must be 5% faster to win. ``None`` if eager PyTorch beats them all (when asked ``with_eager``)."""
    candidates: list[LayerReader] = [*readers, *([LayerReader(model, layers)] if with_eager else [])]
    if len(candidates) == 1:
        return readers[0]
    h, w = model.preprocess.size
    x = torch.rand(16, 3, h, w, generator=torch.Generator().manual_seed(2))
    seconds = [float("inf")] * len(candidates)
    with torch.no_grad(), channels_last(model):
        candidates[-1](x[:2])  # warm-up (the compiled readers were warmed up by their check)
        for _ in range(3):
            for i, reader in enumerate(candidates):
                seconds[i] = min(seconds[i], _seconds(reader, x))
    best = 0
    for i in range(1, len(readers)):
        if seconds[i] < 0.95 * seconds[best]:
            best = i
    return None if with_eager and seconds[-1] < seconds[best] else readers[best]


def _remember(key: tuple, reader: _OpenVINOReader | None) -> _OpenVINOReader | None:
    _readers[key] = reader
    while len(_readers) > 4:
        _readers.popitem(last=False)
    return reader


def _seconds(reader: LayerReader, x: torch.Tensor) -> float:
    t = time.perf_counter()
    reader(x)
    return time.perf_counter() - t


def _cache_path(ov: Any, model: Model, layers: list[str]) -> Path:
    """Where the converted network lives in the disk cache: named by a hash of the weights, the architecture, the
    layers read, the preprocessing and the versions (files beside it share its stem)."""
    key = cache_key(model, "openvino", ov.__version__, torch.__version__, list(layers), length=32)
    return cache_root() / "openvino" / f"{key}.xml"


def _converted(ov: Any, model: Model, layers: list[str], path: Path) -> Any:
    """The network converted to OpenVINO's form (any batch size): read from ``path``, or converted and saved there."""
    if path.exists() and path.with_suffix(".bin").exists():
        with contextlib.suppress(Exception):  # a damaged cache entry is rebuilt
            network = ov.Core().read_model(path)
            path.touch()  # most recently used: pruned last
            return network
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's deprecation and shape warnings
        probe = torch.rand(2, 3, *model.preprocess.size, generator=torch.Generator().manual_seed(0))
        network = ov.convert_model(_Upto(model, layers), example_input=probe, input=[(-1, 3, *model.preprocess.size)])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        ov.save_model(network, tmp, compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
        for old in sorted(path.parent.glob("*.xml"), key=lambda p: p.stat().st_mtime)[:-_KEEP_ON_DISK]:
            for f in old.parent.glob(f"{old.stem}.*"):
                f.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache only costs the next process a conversion
    return network
