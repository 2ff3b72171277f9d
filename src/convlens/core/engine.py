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

``engine="auto"`` picks OpenVINO when it is installed and the model is on the CPU; ``"torch"`` and
``"openvino"`` force one. Compiled networks are kept in memory for the process and their converted form on
disk under :func:`cache_root` (``$CONVLENS_CACHE``, else ``$XDG_CACHE_HOME/convlens``, else
``~/.cache/convlens``; the 16 most recently used), keyed by a hash of the weights, so the next process starts
in a fraction of a second.
OpenVINO is imported with its usage telemetry left out: convlens sends nothing anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..models.model import Model
from .taps import Tap

__all__ = ["ENGINES", "LayerReader", "cache_root", "channels_last", "open_reader", "openvino_available"]

ENGINES = ("auto", "openvino", "torch")
_REQUEST_BATCH = 2  # images per OpenVINO request; measured 1, 2, 4, 8: 2 is fastest, 1 within 5%
_KEEP_ON_DISK = 16  # converted networks kept in the cache folder, the most recently used
_compiled: OrderedDict[tuple, Any] = OrderedDict()  # in-process cache of compiled networks (a few at most)


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

    def __init__(self, model: Model, layers: Sequence[str], compiled: Any) -> None:
        super().__init__(model, layers)
        ov: Any = _openvino()
        self._queue = ov.AsyncInferQueue(compiled, 2 * max(1, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._results: list[Any] = []
        outputs = len(self.layers)

        def done(request: Any, i: int) -> None:
            self._results[i] = [request.get_output_tensor(j).data.copy() for j in range(outputs)]

        self._queue.set_callback(done)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.layers:
            return {}
        n, b = len(x), _REQUEST_BATCH
        x = x.detach().to("cpu", torch.float32).contiguous()
        if n % b:
            x = torch.cat([x, x[-1:].expand(b - n % b, -1, -1, -1)])  # the last request is padded, then cut off
        pixels = x.numpy()
        self._results = [None] * (len(pixels) // b)
        for i in range(len(self._results)):
            self._queue.start_async(pixels[i * b:(i + 1) * b], i, share_inputs=True)
        self._queue.wait_all()
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
    on_cpu = model.device.type == "cpu"
    if engine == "openvino" and not on_cpu:
        raise UserError(f"the openvino engine runs on the CPU; this model is on {model.device}")
    if engine == "openvino" and not openvino_available():
        raise UserError("the openvino engine needs OpenVINO: pip install openvino")
    if engine != "torch" and on_cpu and layers and openvino_available():
        try:
            reader = _OpenVINOReader(model, layers, _compile(model, layers))
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


def _compile(model: Model, layers: list[str]) -> Any:
    ov: Any = _openvino()
    threads = torch.get_num_threads()
    state = [t for t in model.module.state_dict().values() if isinstance(t, torch.Tensor)]
    pre = model.preprocess
    key = (id(model.module), tuple(layers), pre.size, pre.mean, pre.std, threads,
           tuple((t.data_ptr(), t._version) for t in state))  # a changed or retrained tensor changes the key
    if key in _compiled:
        _compiled.move_to_end(key)
        return _compiled[key]
    shape = (_REQUEST_BATCH, 3, *model.preprocess.size)
    probe = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    network = _converted(ov, model, layers, probe)
    compiled = ov.Core().compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                        "PERFORMANCE_HINT": "THROUGHPUT",
                                                        "INFERENCE_NUM_THREADS": threads})
    check = torch.rand(shape, generator=torch.Generator().manual_seed(1))  # not the traced input
    got = compiled(check.numpy())
    with torch.no_grad(), Tap(model, layers, stop=True, detach=True) as tap:
        tap.run(check)
    for j, name in enumerate(layers):
        want = tap.outputs[name].float()
        err = float(np.abs(got[j] - want.numpy()).max()) if got[j].shape == tuple(want.shape) else float("inf")
        if not err <= 1e-4 * float(want.abs().max()) + 1e-5:
            raise RuntimeError(f"compiled output of {name} differs from PyTorch by {err:.2g}")
    _compiled[key] = compiled
    while len(_compiled) > 4:
        _compiled.popitem(last=False)
    return compiled


def _converted(ov: Any, model: Model, layers: list[str], probe: torch.Tensor) -> Any:
    """The network converted to OpenVINO's form, from the disk cache when these weights were converted before."""
    digest = hashlib.blake2b(digest_size=16)
    pre = model.preprocess
    digest.update(repr((ov.__version__, torch.__version__, layers, tuple(probe.shape), pre.mean, pre.std,
                        repr(model.module))).encode())
    for name, t in model.module.state_dict().items():
        digest.update(name.encode())
        if t.numel():
            digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy())
    path = cache_root() / "openvino" / f"{digest.hexdigest()}.xml"
    if path.exists() and path.with_suffix(".bin").exists():
        with contextlib.suppress(Exception):  # a damaged cache entry is rebuilt
            network = ov.Core().read_model(path)
            path.touch()  # most recently used: pruned last
            return network
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's deprecation and shape warnings
        network = ov.convert_model(_Upto(model, layers), example_input=probe, input=[probe.shape])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.xml")
        ov.save_model(network, tmp, compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        tmp.replace(path)
        for old in sorted(path.parent.glob("*.xml"), key=lambda p: p.stat().st_mtime)[:-_KEEP_ON_DISK]:
            old.with_suffix(".bin").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache only costs the next process a conversion
    return network
