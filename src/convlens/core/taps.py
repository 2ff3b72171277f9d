"""Taps: record activations and gradients at named layers, stop a forward pass early, swap backward rules.

Every tap is a context manager whose hooks are removed on exit, also when an exception passes through, and
which never swallows that exception. Recorded outputs are handed on downstream as copies, so an in-place
activation after the tapped layer cannot overwrite what was recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..models.model import Model

__all__ = ["Tap", "StopForward", "BackwardRule", "backward_rule", "activations", "RULES"]


class StopForward(Exception):
    """Raised inside a forward pass to stop it once every tapped layer has been recorded."""


def _modules(model: Model | nn.Module) -> tuple[nn.Module, Callable[[str], nn.Module]]:
    if isinstance(model, Model):
        return model.module, model.layer
    mods = dict(model.named_modules())

    def find(name: str) -> nn.Module:
        if name not in mods or not name:
            from ..errors import UserError, closest
            raise UserError(f"unknown layer {name!r}; closest: {', '.join(closest(name, mods))}")
        return mods[name]
    return model, find


class Tap:
    """Record the outputs (and optionally their gradients) of named layers during forward passes.

    Args:
        model: a :class:`Model` or any ``nn.Module``.
        layers: dotted module names.
        grads: also record ``d(objective)/d(output)`` when a backward pass runs through the layer.
        stop: stop the forward pass (raising :class:`StopForward`, caught by :meth:`run`) as soon as every
            layer has been recorded, so reading an early layer does not run the rest of the network.
        detach: store detached outputs (for reading under ``no_grad``); keep ``False`` to optimise through them.

    ``tap.outputs[name]`` holds the last call's output of each layer (a module called several times in one
    pass -- a reused ReLU -- is recorded at its last call), ``tap.grads[name]`` its gradient.
    """

    def __init__(self, model: Model | nn.Module, layers: Sequence[str] | str, *, grads: bool = False,
                 stop: bool = False, detach: bool = False) -> None:
        self.model = model
        self.names = [layers] if isinstance(layers, str) else list(layers)
        module, find = _modules(model)
        self._targets = {name: find(name) for name in self.names}
        self.grads_wanted = grads
        self.stop = stop
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Tap:
        for name, mod in self._targets.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return None  # never swallow

    def clear(self) -> None:
        self.outputs.clear()
        self.grads.clear()

    def _hook(self, name: str) -> Callable[..., Any]:
        def hook(mod: nn.Module, inp: object, out: object) -> object:
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            if not isinstance(tensor, torch.Tensor):
                return None
            self.outputs[name] = tensor.detach() if self.detach else tensor
            if self.grads_wanted and tensor.requires_grad:
                tensor.register_hook(lambda g, name=name: self.grads.__setitem__(name, g))
            if self.stop and all(n in self.outputs for n in self.names):
                raise StopForward
            if isinstance(out, torch.Tensor):
                return out.clone()  # downstream in-place ops work on the copy, never on what we recorded
            return None
        return hook

    def run(self, x: torch.Tensor) -> torch.Tensor | None:
        """Forward ``x`` (pixel space for a :class:`Model`); returns the output, or ``None`` if stopped early."""
        self.clear()
        runner = self.model.running() if isinstance(self.model, Model) else _nullcontext()
        with runner:
            try:
                return self.model(x)
            except StopForward:
                return None


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def activations(model: Model | nn.Module, x: torch.Tensor, layers: Sequence[str] | str) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for the batch ``x``, running the network only as far as the deepest of them."""
    with torch.no_grad(), Tap(model, layers, stop=True, detach=True) as tap:
        tap.run(x)
        return dict(tap.outputs)


# --- backward rules ---------------------------------------------------------------------------------------

RULES = ("gradient", "guided", "deconv")


class _Rectifier(torch.autograd.Function):
    """Clamp to [low, high] forward; backward by the chosen rule (Springenberg et al. 2015; Zeiler & Fergus 2014)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float | None, rule: str) -> torch.Tensor:  # noqa: D102
        out = x.clamp(min=low, max=high)
        # where the input passed, as a mask of our own: saving ``out`` breaks when a later in-place operation
        # modifies it (ReLU6 followed by ``x += ...``: "modified by an inplace operation")
        if rule != "deconv":
            ctx.save_for_backward((x > low) if high is None else (x > low) & (x < high))
        ctx.rule = rule
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # noqa: D102
        if ctx.rule == "deconv":  # keep only positive incoming gradient, ignore the forward input
            return g.clamp(min=0), None, None, None
        (passed,) = ctx.saved_tensors
        if ctx.rule == "guided":  # positive incoming gradient where the forward input passed
            return g.clamp(min=0).mul_(passed), None, None, None
        return g * passed, None, None, None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _relu(a: tuple, k: dict) -> tuple[float, float | None, bool]:
    return 0.0, None, bool(_arg(a, k, 1, "inplace", False))


def _relu6(a: tuple, k: dict) -> tuple[float, float | None, bool]:
    return 0.0, 6.0, bool(_arg(a, k, 1, "inplace", False))


def _hardtanh(a: tuple, k: dict) -> tuple[float, float | None, bool]:
    return (float(_arg(a, k, 1, "min_val", -1.0)), float(_arg(a, k, 2, "max_val", 1.0)),
            bool(_arg(a, k, 3, "inplace", False)))


def _hardtanh_(a: tuple, k: dict) -> tuple[float, float | None, bool]:
    low, high, _ = _hardtanh(a, k)
    return low, high, True


_RECTIFIERS: dict[Any, Callable[[tuple, dict], tuple[float, float | None, bool]]] = {
    F.relu: _relu, torch.relu: lambda a, k: (0.0, None, False), torch.Tensor.relu: lambda a, k: (0.0, None, False),
    torch.relu_: lambda a, k: (0.0, None, True), torch.Tensor.relu_: lambda a, k: (0.0, None, True),
    F.relu6: _relu6, F.hardtanh: _hardtanh, torch._C._nn.hardtanh: _hardtanh, torch._C._nn.hardtanh_: _hardtanh_,
    F.hardtanh_: _hardtanh_,
}
if hasattr(F, "relu_"):
    _RECTIFIERS[F.relu_] = lambda a, k: (0.0, None, True)
if hasattr(torch._C._nn, "relu6"):
    _RECTIFIERS[torch._C._nn.relu6] = lambda a, k: (0.0, 6.0, False)


class BackwardRule(TorchFunctionMode):
    """Swap the backward pass of every rectifier (ReLU, ReLU6, hardtanh; modules or functional; in-place or
    not; reused modules) for ``guided`` or ``deconv``, while the context is active.

    The operation is intercepted, not the module, so nothing of the user's network is changed.
    """

    def __init__(self, rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        spec = _RECTIFIERS.get(func)
        if spec is None or self.rule == "gradient" or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        x = args[0]
        low, high, inplace = spec(args, kwargs)
        out = _Rectifier.apply(x, low, high, self.rule)
        if inplace:
            x.copy_(out)
            return x
        return out


def backward_rule(rule: str) -> BackwardRule:
    """Context manager: ``with backward_rule("guided"): ...`` -- see :class:`BackwardRule`."""
    return BackwardRule(rule)
