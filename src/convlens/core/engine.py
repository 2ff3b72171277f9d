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

Small jobs stay small. Given the job's size (``open_reader(..., images=N)``, as the scan does), ``"auto"`` starts on
eager PyTorch and times its own first batches; it converts and compiles only when the images left would repay it:
``left * eager_seconds_per_image * (1 - 1 / speedup) > compile_seconds``. The speedup and the compile cost are what
an earlier process measured for this network on this machine (its *plan*, on disk beside the converted networks,
keyed like every cache entry: weights fingerprint, preprocessing, layers, code version, plus the machine and the
thread count), else priors (2x, 30 s: a cold conversion, compile and timing took 15-40 s on 2 cores). A 64-photo
scan therefore never compiles; a 100 000-photo one compiles after its second batch. The plan also remembers the
eager batch size once it was timed, so no process times it twice.

A busy machine costs proportionally: :func:`fair_threads` counts the runnable tasks of other processes and
uses only the free cores (at least one). OpenMP threads spin-wait for each other at every parallel region: with
two threads on two cores and one other busy process, one thread is always waiting for a core and eager PyTorch
slowed 20x; with one thread it slows about 2x, as the load says it should.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
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
from ..results import atomic_write
from .cache import cache_key
from .taps import Tap

__all__ = ["ENGINES", "LayerReader", "cache_root", "channels_last", "fair_threads", "load_plan", "machine",
           "open_reader", "openvino_available", "save_plan"]

ENGINES = ("auto", "openvino", "torch")
# images per OpenVINO request, whichever runs faster on this machine: small requests suit depthwise networks
# (EfficientNet-Lite0 on 2 cores: 2 per request), bigger ones networks with large fully connected layers (AlexNet, VGG)
_REQUEST_BATCHES = (2, 8)
_PRIOR_COMPILE_S = 30.0  # seconds to convert, compile, check and time a network never compiled on this machine
_PRIOR_WARM_COMPILE_S = 5.0  # the same when the converted network is already in the disk cache (compile + check)
_PRIOR_SPEEDUP = 2.0  # OpenVINO over eager PyTorch, until measured (EfficientNet-Lite0 on 2 cores: about 2.5x)
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


def machine() -> str:
    """What a timing depends on besides the network: CPU model, cores usable by this process, platform."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.system()}-{platform.machine()}-{model}-{_cores()}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _runnable_elsewhere(samples: int = 3) -> int:
    """Runnable tasks of other processes right now (``/proc/loadavg``'s running count, less this reading thread),
    averaged over a few samples 10 ms apart; 0 where the system does not say."""
    counts = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(running - 1)
        if i + 1 < samples:
            time.sleep(0.01)
    return max(0, round(sum(counts) / len(counts)))


def fair_threads(limit: int | None = None) -> int:
    """Threads for a compute job now: the cores not busy with other processes, at most ``limit`` (default
    ``torch.get_num_threads()``), at least 1. Spin-waiting OpenMP threads on a shared core make a loaded machine
    many times slower than the load alone; on free cores alone it slows in proportion."""
    want = limit or torch.get_num_threads()
    return max(1, min(want, _cores() - _runnable_elsewhere()))


def _plan_path(model: Model, layers: Sequence[str], threads: int) -> Path:
    ov = _openvino()
    key = cache_key(model, "plan", machine(), threads, torch.__version__, getattr(ov, "__version__", None),
                    list(layers), length=32)
    return cache_root() / "plans" / f"{key}.json"


def load_plan(model: Model, layers: Sequence[str], threads: int | None = None) -> dict[str, Any]:
    """What earlier processes measured for reading ``layers`` of this network on this machine with ``threads``
    (default: torch's): ``eager_spi`` / ``openvino_spi`` (seconds per image), ``compile_s``, ``torch_faster``,
    ``eager_batch``. Empty when nothing was measured (or the file is unreadable)."""
    path = _plan_path(model, layers, threads or torch.get_num_threads())
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def save_plan(model: Model, layers: Sequence[str], threads: int | None = None, **measured: Any) -> None:
    """Merge ``measured`` into the plan on disk (written atomically; a read-only cache only costs a re-measure)."""
    path = _plan_path(model, layers, threads or torch.get_num_threads())
    plan = load_plan(model, layers, threads)
    plan.update({k: v for k, v in measured.items() if v is not None})
    with contextlib.suppress(UserError), atomic_write(path, "w") as fh:
        fh.write(json.dumps(plan, sort_keys=True))


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


class _AutoReader(LayerReader):
    """Eager PyTorch first; switches to OpenVINO mid-job once the images left repay compiling (module docstring).
    ``engine`` is the engine reading now."""

    def __init__(self, model: Model, layers: Sequence[str], images: int) -> None:
        super().__init__(model, layers)
        self.images, self.seen, self.calls = images, 0, 0
        self.threads = torch.get_num_threads()
        self.plan = load_plan(model, layers, self.threads)
        self._ov: _OpenVINOReader | None = None
        self._decided = bool(self.plan.get("torch_faster"))
        self._eager: list[float] = []  # seconds per image of eager calls after the first (the warm-up)
        self._compiled: list[float] = []
        self.compile_s: float | None = None

    @property  # type: ignore[override]
    def engine(self) -> str:  # type: ignore[override]
        return "openvino" if self._ov is not None else "torch"

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = time.perf_counter()
        out = self._ov(x) if self._ov is not None else super().__call__(x)
        dt = (time.perf_counter() - t) / max(1, len(x))
        self.calls += 1
        self.seen += len(x)
        if self._ov is not None:
            self._compiled.append(dt)
        elif self.calls > 1:
            self._eager.append(dt)
            if not self._decided:
                self._decided = True
                self._maybe_compile(dt)
        return out

    def repays(self, spi: float) -> bool:
        """Whether compiling now pays for itself over the images left, at ``spi`` eager seconds per image."""
        plan = self.plan
        speedup = _PRIOR_SPEEDUP
        if plan.get("eager_spi") and plan.get("openvino_spi"):
            speedup = plan["eager_spi"] / plan["openvino_spi"]
        cost = float(plan.get("compile_s", self._prior_compile_s()))
        left = self.images - self.seen
        return speedup > 1 and left * spi * (1 - 1 / speedup) > cost

    def _prior_compile_s(self) -> float:
        """Compile cost before one was measured here: small when the network is already converted on disk."""
        ov = _openvino()
        if ov is None:
            return float("inf")
        with contextlib.suppress(Exception):
            if _cache_path(ov, self.model, list(self.layers)).exists():
                return _PRIOR_WARM_COMPILE_S
        return _PRIOR_COMPILE_S

    def _maybe_compile(self, spi: float) -> None:
        if not self.repays(spi):
            return
        t = time.perf_counter()
        try:
            reader = _compile(self.model, self.layers, allow_torch=True)
        except Exception as exc:  # noqa: BLE001 -- any failure to compile means: keep reading with PyTorch
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"OpenVINO could not run this network ({why}); reading it with PyTorch", stacklevel=3)
            save_plan(self.model, self.layers, self.threads, torch_faster=True)
            return
        self.compile_s = time.perf_counter() - t
        save_plan(self.model, self.layers, self.threads, compile_s=round(self.compile_s, 3),
                  torch_faster=reader is None)
        self._ov = reader

    def close(self) -> None:
        """Remember the measured per-image costs for the next process."""
        def med(v: list[float]) -> float | None:
            return float(np.median(v)) if v else None

        if self._eager or self._compiled:
            save_plan(self.model, self.layers, self.threads, eager_spi=med(self._eager),
                      openvino_spi=med(self._compiled))


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
def open_reader(model: Model, layers: Sequence[str], *, engine: str = "auto",
                images: int | None = None) -> Iterator[LayerReader]:
    """A :class:`LayerReader` for ``layers`` of ``model`` on the chosen engine (see the module docstring).

    ``images``: how many images the job will read; with ``"auto"`` the reader then starts eager and compiles only
    when the rest of the job repays it. ``None``: compile (or use the remembered choice) now."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    layers = list(layers)
    reader: LayerReader | None = None
    on_cpu, available = model.device.type == "cpu", openvino_available()
    if engine == "openvino" and not on_cpu:
        raise UserError(f"the openvino engine runs on the CPU; this model is on {model.device}")
    if engine == "openvino" and not available:
        raise UserError("the openvino engine needs OpenVINO: pip install openvino")
    if engine == "auto" and images is not None and on_cpu and layers and available:
        with torch.no_grad(), channels_last(model):
            auto = _AutoReader(model, layers, images)
            try:
                yield auto
            finally:
                auto.close()
        return
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
