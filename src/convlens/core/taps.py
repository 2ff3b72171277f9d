"""Taps: record activations and gradients at named layers, stop a forward pass early, swap backward rules.

Every tap is a context manager whose hooks are removed on exit, also when an exception passes through, and
which never swallows that exception. Recorded outputs are handed on downstream as copies, so an in-place
activation after the tapped layer cannot overwrite what was recorded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from typing_extensions import Self

from ..models.model import Model

__all__ = ["KINDS", "RULES", "BackwardRule", "RuleReport", "StopForward", "Tap", "activations", "backward_rule"]


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
        _, find = _modules(model)
        self._targets = {name: find(name) for name in self.names}
        self.grads_wanted = grads
        self.stop = stop
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Self:
        for name, mod in self._targets.items():
            self._handles.append(mod.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        # never swallow

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
#
# The paper's rules, for a rectifier y = relu(x) with incoming gradient R = dL/dy (Springenberg et al. 2015,
# "Striving for Simplicity", fig. 1; Zeiler & Fergus 2014):
#
#     gradient:  R_in = [x > 0] * R
#     deconv:    R_in = [R > 0] * R                      (the forward input is ignored)
#     guided:    R_in = [x > 0] * [R > 0] * R
#
# Every other elementwise activation f (SiLU/Swish, GELU, Hardswish, Mish, LeakyReLU, PReLU, ELU, CELU, SELU,
# Softplus, Hardsigmoid, timm's HardMish and QuickGELU) gets the same two rules with its own local slope f'(x)
# in place of the step [x > 0]:
#
#     guided:    R_in = max(f'(x), 0) * max(R, 0)        (only positive signal passes, only where f rises)
#     deconv:    R_in = k * max(R, 0)                    (k: the slope of f's passing part, 1 except SELU's
#                                                         scale and Hardsigmoid's 1/6)
#
# For ReLU f'(x) = [x > 0] and k = 1, so these are exactly the paper's rules; ReLU, ReLU6 and hardtanh keep
# their own exact implementation (_Rectifier). So under either rule the signal leaving every rectifier is
# non-negative, as in the paper, whatever the activation. Hardsigmoid (MobileNetV3's squeeze-excitation gate,
# relu6(x + 3) / 6) is a clamp like ReLU6 and gets the rule too -- timm's older HardSigmoid runs exactly
# relu6(x + 3) / 6, so both forms agree. Smooth gates (sigmoid, tanh: EfficientNet's SE gate) are not rectifiers
# and keep their gradient. Parameters (PReLU's slopes) get no gradient under guided / deconv.

RULES = ("gradient", "guided", "deconv")


class _Rectifier(torch.autograd.Function):
    """Clamp to [low, high] forward; backward by the chosen rule (Springenberg et al. 2015; Zeiler & Fergus 2014).

    In place, guided saves what plain autograd saves for that call (the clamped tensor itself: a later in-place
    change of it breaks the plain gradient just the same, with the same loud error) and its backward pass is the
    plain gradient's fused masking kernel plus an in-place clamp. Out of place it saves a 1-byte mask of where
    ``low < x < high``, so a later in-place operation on either the input or the output cannot invalidate it.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float | None, rule: str,
                inplace: bool = False) -> torch.Tensor:
        ctx.rule, ctx.low, ctx.high, ctx.inplace = rule, low, high, inplace
        if inplace:  # clamp the caller's tensor itself, as the in-place op would: no copy, no new buffer
            ctx.mark_dirty(x)
            out = x.clamp_(min=low) if high is None else x.clamp_(min=low, max=high)
            if rule == "guided":
                ctx.save_for_backward(out)  # out > low (and < high) exactly where x passed
            return out
        if rule == "guided":
            ctx.save_for_backward(x > low if high is None else (x > low) & (x < high))
        return x.clamp(min=low) if high is None else x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        if ctx.rule == "deconv":  # keep only positive incoming gradient, ignore the forward input
            return g.clamp(min=0), None, None, None, None
        (saved,) = ctx.saved_tensors  # guided: positive incoming gradient where the forward input passed
        if not ctx.inplace:
            gin = torch.where(saved, g, 0.0)
        elif ctx.high is None:
            gin = torch.ops.aten.threshold_backward(g, saved, ctx.low)
        else:
            gin = torch.ops.aten.hardtanh_backward(g, saved, ctx.low, ctx.high)
        return gin.clamp_(min=0), None, None, None, None


_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _gelu_grad(x: torch.Tensor, approximate: str) -> torch.Tensor:
    if approximate == "tanh":
        u = _SQRT_2_PI * (x + 0.044715 * x.pow(3))
        t = torch.tanh(u)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_PI * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _silu_grad(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    s = torch.sigmoid(beta * x)
    return s * (1 + beta * x * (1 - s))


def _mish_grad(x: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(F.softplus(x))
    return t + x * (1 - t * t) * torch.sigmoid(x)


def _one_where_positive(x: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, torch.ones_like(x), negative)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


@dataclass(frozen=True)
class _Kind:
    """An elementwise activation: its value, its local slope ``f'(x)`` and the slope ``k`` of its passing part."""

    name: str
    value: Callable[[torch.Tensor, tuple, torch.Tensor | None], torch.Tensor]
    slope: Callable[[torch.Tensor, tuple, torch.Tensor | None], torch.Tensor]
    passing: Callable[[tuple], float] = lambda p: 1.0


def _prelu_weight(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return w.view(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 1 and w.numel() > 1 else w


KINDS: dict[str, _Kind] = {k.name: k for k in (
    _Kind("silu", lambda x, p, w: F.silu(x), lambda x, p, w: _silu_grad(x)),
    _Kind("gelu", lambda x, p, w: F.gelu(x, approximate=p[0]), lambda x, p, w: _gelu_grad(x, p[0])),
    _Kind("hardswish", lambda x, p, w: F.hardswish(x),
          lambda x, p, w: torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, x / 3 + 0.5,
                                                                                torch.ones_like(x)))),
    _Kind("mish", lambda x, p, w: F.mish(x), lambda x, p, w: _mish_grad(x)),
    _Kind("leaky_relu", lambda x, p, w: F.leaky_relu(x, p[0]),
          lambda x, p, w: _one_where_positive(x, torch.full_like(x, p[0]))),
    _Kind("prelu", lambda x, p, w: F.prelu(x, w),  # type: ignore[arg-type]
          lambda x, p, w: _one_where_positive(x, _prelu_weight(x, w).to(x.dtype).expand_as(x))),  # type: ignore
    _Kind("elu", lambda x, p, w: F.elu(x, p[0]), lambda x, p, w: _one_where_positive(x, p[0] * torch.exp(x))),
    _Kind("celu", lambda x, p, w: F.celu(x, p[0]),
          lambda x, p, w: _one_where_positive(x, torch.exp(x / p[0]))),
    _Kind("selu", lambda x, p, w: F.selu(x),
          lambda x, p, w: _SELU_SCALE * _one_where_positive(x, _SELU_ALPHA * torch.exp(x)),
          lambda p: _SELU_SCALE),
    _Kind("softplus", lambda x, p, w: F.softplus(x, p[0], p[1]),
          lambda x, p, w: torch.where(x * p[0] > p[1], torch.ones_like(x), torch.sigmoid(p[0] * x))),
    _Kind("hardsigmoid", lambda x, p, w: F.hardsigmoid(x),
          lambda x, p, w: ((x > -3) & (x < 3)).to(x.dtype) / 6, lambda p: 1.0 / 6),
    _Kind("hardmish", lambda x, p, w: 0.5 * x * (x + 2).clamp(min=0, max=2),
          lambda x, p, w: torch.where(x > 0, torch.ones_like(x), (x + 1) * ((x > -2).to(x.dtype)))),
    _Kind("quick_gelu", lambda x, p, w: x * torch.sigmoid(1.702 * x), lambda x, p, w: _silu_grad(x, 1.702)),
)}
"""The smooth and leaky activations with a guided / deconv rule, by name (see the rules above)."""


class _Smooth(torch.autograd.Function):
    """``f(x)`` forward; backward ``max(f'(x), 0) * max(R, 0)`` (guided) or ``k * max(R, 0)`` (deconv)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, kind: _Kind, params: tuple,
                rule: str) -> torch.Tensor:
        with torch._C.DisableTorchFunction():
            out = kind.value(x, params, weight)
        ctx.kind, ctx.params, ctx.rule = kind, params, rule
        if rule == "guided":
            ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        with torch._C.DisableTorchFunction():
            if ctx.rule == "deconv":
                k = ctx.kind.passing(ctx.params)
                gin = g.clamp(min=0) if k == 1.0 else g.clamp(min=0).mul_(k)
            else:
                x, weight = ctx.saved_tensors
                gin = ctx.kind.slope(x, ctx.params, weight).clamp_(min=0).mul_(g.clamp(min=0))
        return gin, None, None, None, None


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
if hasattr(torch._C._nn, "relu6_"):
    _RECTIFIERS[torch._C._nn.relu6_] = lambda a, k: (0.0, 6.0, True)

# func -> (kind, parse(args, kwargs) -> (params, weight, inplace)); modules call the functional forms.
_Parse = Callable[[tuple, dict], tuple[tuple, "torch.Tensor | None", bool]]
_SMOOTH: dict[Any, tuple[str, _Parse]] = {}


def _register(kind: str, funcs: Sequence[Any], parse: _Parse) -> None:
    for f in funcs:
        _SMOOTH[f] = (kind, parse)


def _flag(i: int, forced: bool | None = None) -> _Parse:
    return lambda a, k: ((), None, bool(_arg(a, k, i, "inplace", False)) if forced is None else forced)


_nn = torch._C._nn
_register("silu", [F.silu], _flag(1))
_register("silu", [_nn.silu], _flag(99, False))
_register("silu", [_nn.silu_], _flag(99, True))
_register("gelu", [F.gelu, _nn.gelu], lambda a, k: ((str(_arg(a, k, 1, "approximate", "none")),), None, False))
_register("hardswish", [F.hardswish], _flag(1))
_register("hardswish", [_nn.hardswish], _flag(99, False))
_register("hardswish", [_nn.hardswish_], _flag(99, True))
_register("mish", [F.mish], _flag(1))
_register("mish", [_nn.mish], _flag(99, False))
_register("mish", [_nn.mish_], _flag(99, True))
_register("hardsigmoid", [F.hardsigmoid], _flag(1))
_register("hardsigmoid", [_nn.hardsigmoid], _flag(99, False))
_register("hardsigmoid", [_nn.hardsigmoid_], _flag(99, True))
_register("leaky_relu", [F.leaky_relu], lambda a, k: ((float(_arg(a, k, 1, "negative_slope", 0.01)),), None,
                                                      bool(_arg(a, k, 2, "inplace", False))))
_register("leaky_relu", [_nn.leaky_relu], lambda a, k: ((float(_arg(a, k, 1, "negative_slope", 0.01)),), None,
                                                        False))
_register("leaky_relu", [_nn.leaky_relu_], lambda a, k: ((float(_arg(a, k, 1, "negative_slope", 0.01)),), None,
                                                         True))
_register("prelu", [F.prelu, torch.prelu, torch.Tensor.prelu], lambda a, k: ((), _arg(a, k, 1, "weight", None),
                                                                            False))
_register("elu", [F.elu], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None,
                                        bool(_arg(a, k, 2, "inplace", False))))
_register("elu", [_nn.elu], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None, False))
_register("elu", [_nn.elu_], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None, True))
_register("celu", [F.celu], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None,
                                          bool(_arg(a, k, 2, "inplace", False))))
_register("celu", [torch.celu], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None, False))
_register("celu", [torch.celu_], lambda a, k: ((float(_arg(a, k, 1, "alpha", 1.0)),), None, True))
_register("selu", [F.selu], _flag(1))
_register("selu", [torch.selu], _flag(99, False))
_register("selu", [torch.selu_], _flag(99, True))
_register("softplus", [F.softplus, _nn.softplus], lambda a, k: ((float(_arg(a, k, 1, "beta", 1.0)),
                                                                 float(_arg(a, k, 2, "threshold", 20.0))), None,
                                                                False))


@functools.cache
def _timm_modules() -> dict[type, str]:
    """timm's own activation layers that compute their activation from smaller operations (``x * x.sigmoid()``,
    ``relu6(x + 3) / 6``, custom autograd functions): caught as modules, since no single function names them.
    timm's defaults (``nn.SiLU``, ``nn.Hardswish``, ``nn.Mish``, ``nn.Hardsigmoid``, its ``GELU`` / ``PReLU``)
    call the functional forms and are caught there."""
    found: dict[type, str] = {}
    try:
        from timm.layers import activations as a
    except Exception:  # noqa: BLE001 -- timm is optional for this table
        return found
    for name, kind in (("Swish", "silu"), ("Mish", "mish"), ("HardSwish", "hardswish"),
                       ("HardSigmoid", "hardsigmoid"), ("HardMish", "hardmish"), ("QuickGELU", "quick_gelu")):
        if hasattr(a, name):
            found[getattr(a, name)] = kind
    try:
        from timm.layers import activations_me as me
    except Exception:  # noqa: BLE001
        return found
    for name, kind in (("SwishMe", "silu"), ("MishMe", "mish"), ("HardSwishMe", "hardswish"),
                       ("HardSigmoidMe", "hardsigmoid"), ("HardMishMe", "hardmish")):
        if hasattr(me, name):
            found[getattr(me, name)] = kind
    return found


@dataclass
class RuleReport:
    """What a backward rule changed: ``changed`` rectifier calls (per activation kind in ``kinds``) whose
    backward pass ran under ``rule`` instead of the plain gradient. Zero means the result is the plain gradient."""

    rule: str
    changed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.changed += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def merge(self, other: RuleReport) -> RuleReport:
        """Add ``other``'s counts to this report (for several passes of one method, e.g. SmoothGrad)."""
        self.changed += other.changed
        for k, v in other.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v
        return self


class BackwardRule(TorchFunctionMode):
    """Swap the backward pass of every rectifier for ``guided`` or ``deconv`` while the context is active.

    Rectifiers are ReLU, ReLU6, hardtanh (exactly the paper's rules) and SiLU/Swish, GELU, Hardswish, Mish,
    LeakyReLU, PReLU, ELU, CELU, SELU, Softplus, Hardsigmoid (the generalisation documented in this module:
    ``max(f'(x), 0) * max(R, 0)`` for guided, ``k * max(R, 0)`` for deconv) -- modules or functional forms, in-place
    or not, reused modules. With ``model`` given, timm's own composite activation layers (``Swish``,
    ``HardSwish``, ``Mish``, ``HardSigmoid``, ``HardMish``, ``QuickGELU`` and their ``*Me`` autograd forms) in
    it are caught too. The operation is intercepted, not the module, so nothing of the user's network changes.

    ``report`` counts the rectifier calls changed. Leaving the context after a pass that changed none (the
    result would silently be the plain gradient) raises :class:`UserError`, unless ``strict=False``.
    """

    def __init__(self, rule: str, model: Model | nn.Module | None = None, *, strict: bool = True) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        super().__init__()
        self.rule = rule
        self.strict = strict
        self.report = RuleReport(rule)
        module = model.module if isinstance(model, Model) else model
        self._module = module
        self._handles: list[Any] = []
        self._inside = 0  # > 0 while a caught timm module runs: its inner operations are not counted again
        self._pending: list[torch.Tensor] = []

    def __enter__(self) -> Self:
        if self._module is not None and self.rule != "gradient":
            table = _timm_modules()
            if table:
                for mod in self._module.modules():
                    kind = table.get(type(mod))
                    if kind is not None:
                        self._handles.append(mod.register_forward_pre_hook(self._pre))
                        self._handles.append(mod.register_forward_hook(self._post(kind)))
        super().__enter__()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._pending.clear()
            self._inside = 0
        if exc_type is None and self.strict and self.rule != "gradient" and self.report.changed == 0:
            from ..errors import UserError
            raise UserError(f"the {self.rule} rule changed no rectifier: this network ran none of ReLU, ReLU6, "
                            f"hardtanh, {', '.join(KINDS)} with gradients on, so the result would be the plain "
                            f"gradient; use the gradient method instead")
        # never swallow

    def _pre(self, mod: nn.Module, args: tuple) -> tuple | None:
        if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor) \
                or not args[0].requires_grad:
            self._pending.append(None)  # type: ignore[arg-type]
            self._inside += 1
            return None
        x = args[0]
        self._pending.append(x)
        self._inside += 1
        return (x.clone(), *args[1:])  # an in-place module works on the copy; x stays for the ruled output

    def _post(self, kind: str) -> Callable[..., Any]:
        def hook(mod: nn.Module, args: tuple, out: Any) -> Any:
            self._inside -= 1
            x = self._pending.pop()
            if x is None:
                return None
            self.report.add(kind)
            return _Smooth.apply(x, None, KINDS[kind], (), self.rule)
        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.rule == "gradient" or self._inside or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        spec = _RECTIFIERS.get(func)
        smooth = _SMOOTH.get(func) if spec is None else None
        if spec is None and smooth is None:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return func(*args, **kwargs)  # no gradient flows here: nothing to change
        if spec is not None:
            low, high, inplace = spec(args, kwargs)
            self.report.add("relu" if high is None and low == 0.0 else "relu6" if (low, high) == (0.0, 6.0)
                            else "hardtanh")
            if inplace and not x.is_leaf:
                return _Rectifier.apply(x, low, high, self.rule, True)
            out = _Rectifier.apply(x, low, high, self.rule)
        else:
            kind, parse = smooth  # type: ignore[misc]
            params, weight, inplace = parse(args, kwargs)
            self.report.add(kind)
            out = _Smooth.apply(x.clone() if inplace else x, weight, KINDS[kind], params, self.rule)
        if inplace:
            x.copy_(out)
            return x
        return out


def backward_rule(rule: str, model: Model | nn.Module | None = None, *, strict: bool = True) -> BackwardRule:
    """Context manager: ``with backward_rule("guided", model) as r: ...`` -- see :class:`BackwardRule`;
    ``r.report.changed`` is the number of rectifier calls whose backward pass was changed."""
    return BackwardRule(rule, model, strict=strict)
