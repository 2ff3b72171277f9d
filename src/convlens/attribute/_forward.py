"""Forward-only scoring of many perturbed copies of an image (deletion / insertion curves, RISE masks).

Methods that only *look* at the network's output for hundreds or thousands of masked images need no gradients,
so they can run on the fastest checked forward engine (:mod:`convlens.core.engine`: OpenVINO's fp32
compilation when installed, else eager PyTorch in ``channels_last``). The compiled network is compared with
eager PyTorch on the caller's own clean images before use; where it differs (or cannot be built) the eager
network is used, so the numbers never depend on the engine.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

from ..core.engine import ENGINES, channels_last, open_reader, openvino_available
from ..core.taps import Tap
from ..errors import UserError
from ..models.model import Model

__all__ = ["AUTO_MIN_PASSES", "forward_scores"]

AUTO_MIN_PASSES = 100  # below this many forward passes, compiling costs more than it saves

ForwardFn = Callable[[torch.Tensor], torch.Tensor]


class _Forward:
    """``fn(pixels) -> logits`` (or the output of ``layer``), and the ``engine`` that runs it."""

    def __init__(self, fn: ForwardFn, engine: str) -> None:
        self.fn, self.engine = fn, engine

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _eager(model: Model, layer: str | None) -> ForwardFn:
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if layer is None:
            return model(x)
        with Tap(model, layer, stop=True, detach=True) as tap:
            tap.run(x)
            return tap.outputs[layer]
    return run


@contextlib.contextmanager
def forward_scores(model: Model, *, layer: str | None = None, engine: str = "auto", passes: int = 0,
                   check: torch.Tensor | None = None) -> Iterator[_Forward]:
    """A forward-only function from pixel batches to the logits (``layer=None``) or to ``layer``'s output.

    ``engine`` is ``auto`` (OpenVINO on the CPU when installed and ``passes`` -- the forward passes the caller
    will run -- is at least :data:`AUTO_MIN_PASSES`, else PyTorch), ``openvino`` or ``torch``. ``check`` (a few
    clean images) is run through both engines; a compiled network that differs from eager PyTorch by more than
    1e-4 of the output's range is not used (``auto``) or is an error (``openvino``). The network is compiled for
    the model's input size: images of another size (``check``'s) run on PyTorch (``auto``) or are an error.
    """
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    size = tuple(model.preprocess.size)
    other_size = check is not None and tuple(check.shape[-2:]) != size
    if engine == "openvino" and other_size:
        raise UserError(f"the openvino engine runs the model's input size {size[0]}x{size[1]}, not "
                        f"{check.shape[-2]}x{check.shape[-1]}: use engine='auto' or 'torch'")  # type: ignore[union-attr]
    want_ov = engine == "openvino" or (engine == "auto" and passes >= AUTO_MIN_PASSES and model.device.type == "cpu"
                                       and openvino_available() and not other_size)
    read_layer = layer if layer is not None or not want_ov else model.layers.classifier()
    with torch.no_grad(), channels_last(model):
        eager = _eager(model, layer)
        if want_ov and read_layer is not None:
            with open_reader(model, [read_layer], engine=engine) as reader:
                if reader.engine == "openvino":
                    fn: ForwardFn = lambda x: reader(x)[read_layer]
                    if _agrees(fn, eager, check, strict=engine == "openvino"):
                        yield _Forward(fn, "openvino")
                        return
                elif engine == "openvino":
                    raise UserError("the openvino engine could not run this network")
        elif engine == "openvino":
            raise UserError("the openvino engine needs a classifier layer or a layer to read")
        yield _Forward(eager, "torch")


def _agrees(fast: ForwardFn, eager: ForwardFn, check: torch.Tensor | None, *, strict: bool) -> bool:
    """Whether the compiled network gives eager PyTorch's output on the caller's images (the tap of the
    classifier layer must also *be* the network's output: a model with a head after its last Linear fails)."""
    if check is None:
        return True
    probe = check[:2].float()
    got, want = fast(probe).float(), eager(probe).float()
    err = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    ok = err <= 1e-4 * float(want.abs().max()) + 1e-4
    if not ok:
        msg = f"the compiled network differs from PyTorch by {err:.2g} on these images"
        if strict:
            raise UserError(msg)
        warnings.warn(msg + "; scoring with PyTorch", stacklevel=4)
    return ok
