"""The layer index: every addressable module with its output shape and the receptive field of one unit.

Receptive fields are computed, not hard-coded: one forward pass carries, beside every tensor, the geometry
of the input window its units see (size, stride and centre of unit 0), updated by every convolution, pooling
and padding call and merged where branches meet (the union of their windows). Because it follows the calls
rather than the modules, it handles residual additions, parallel Inception branches, TF "same" padding and
functional pooling alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UserError, closest

__all__ = ["ReceptiveField", "LayerInfo", "LayerIndex"]


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of one unit's input window, per axis ``(y, x)``, in input pixels.

    ``size`` is the window's side, ``stride`` the step between neighbouring units, ``start`` the centre of
    unit (0, 0). ``whole`` marks layers whose units see the whole image (after global pooling or a linear layer).
    """

    size: tuple[float, float] = (1.0, 1.0)
    stride: tuple[float, float] = (1.0, 1.0)
    start: tuple[float, float] = (0.0, 0.0)
    whole: bool = False

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The window ``(x0, y0, x1, y1)`` (exclusive ends) of unit ``(y, x)``, clipped to the image."""
        if self.whole:
            return (0, 0, width, height)
        cy = self.start[0] + y * self.stride[0]
        cx = self.start[1] + x * self.stride[1]
        y0 = math.floor(cy - (self.size[0] - 1) / 2)
        x0 = math.floor(cx - (self.size[1] - 1) / 2)
        y1, x1 = y0 + int(self.size[0]), x0 + int(self.size[1])
        return (max(0, x0), max(0, y0), min(width, x1), min(height, y1))

    def unclipped(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The window ``(x0, y0, x1, y1)`` of unit ``(y, x)`` before clipping to the image."""
        cy = self.start[0] + y * self.stride[0]
        cx = self.start[1] + x * self.stride[1]
        y0 = math.floor(cy - (self.size[0] - 1) / 2)
        x0 = math.floor(cx - (self.size[1] - 1) / 2)
        return (x0, y0, x0 + int(self.size[1]), y0 + int(self.size[0]))


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))  # type: ignore[call-overload]


def _window(rf: ReceptiveField, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
            d: tuple[int, int]) -> ReceptiveField:
    size = tuple(rf.size[i] + (k[i] - 1) * d[i] * rf.stride[i] for i in range(2))
    start = tuple(rf.start[i] + ((k[i] - 1) * d[i] / 2 - p[i]) * rf.stride[i] for i in range(2))
    stride = tuple(rf.stride[i] * s[i] for i in range(2))
    return ReceptiveField(size, stride, start, rf.whole)  # type: ignore[arg-type]


def _union(rfs: list[ReceptiveField]) -> ReceptiveField:
    if len(rfs) == 1:
        return rfs[0]
    if any(r.whole for r in rfs):
        return ReceptiveField(whole=True)
    lo = [min(r.start[i] - (r.size[i] - 1) / 2 for r in rfs) for i in range(2)]
    hi = [max(r.start[i] + (r.size[i] - 1) / 2 for r in rfs) for i in range(2)]
    stride = tuple(max(r.stride[i] for r in rfs) for i in range(2))
    return ReceptiveField(tuple(hi[i] - lo[i] + 1 for i in range(2)), stride,  # type: ignore[arg-type]
                          tuple((hi[i] + lo[i]) / 2 for i in range(2)))  # type: ignore[arg-type]


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: object) -> object:
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


class _Tracer(TorchFunctionMode):
    """Carries a :class:`ReceptiveField` beside every tensor through one forward pass."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.fields: dict[int, tuple[torch.Tensor, ReceptiveField]] = {id(image): (image, ReceptiveField())}

    def field(self, t: object) -> ReceptiveField | None:
        if isinstance(t, torch.Tensor):
            entry = self.fields.get(id(t))
            if entry is not None and entry[0] is t:
                return entry[1]
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat = list(args) + list(kwargs.values())
        flat = [a for x in flat for a in (x if isinstance(x, (list, tuple)) else [x])]
        inputs = [rf for rf in (self.field(a) for a in flat) if rf is not None]
        if not inputs:
            return out
        rf = self._rule(func, args, kwargs, inputs, out)
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.fields[id(o)] = (o, rf)
        return out

    @staticmethod
    def _rule(func, args, kwargs, inputs, out) -> ReceptiveField:
        name = getattr(func, "__name__", "")
        rf = inputs[0]
        first = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(first, torch.Tensor) and first.dim() < 3:
            return ReceptiveField(whole=True)
        if name == "conv2d":
            weight = args[1]
            k = (weight.shape[-2], weight.shape[-1])
            s = _pair(_arg(args, kwargs, 3, "stride", 1))
            d = _pair(_arg(args, kwargs, 5, "dilation", 1))
            pad = _arg(args, kwargs, 4, "padding", 0)
            if pad == "valid":
                pad = 0
            elif pad == "same":
                pad = tuple((k[i] - 1) * d[i] // 2 for i in range(2))
            return _window(rf, k, s, _pair(pad), d)
        if "pool2d" in name and "adaptive" not in name:
            k = _pair(_arg(args, kwargs, 1, "kernel_size", 1))
            s_arg = _arg(args, kwargs, 2, "stride", None)
            s = _pair(s_arg) if s_arg not in (None, [], ()) else k
            p = _pair(_arg(args, kwargs, 3, "padding", 0))
            d = _pair(_arg(args, kwargs, 4, "dilation", 1)) if "max" in name else (1, 1)
            return _window(rf, k, s, p, d)
        if "adaptive" in name and "pool2d" in name:
            src = args[0]
            oh, ow = first.shape[-2:]
            if (oh, ow) == (1, 1):
                return ReceptiveField(whole=True)
            k = (math.ceil(src.shape[-2] / oh), math.ceil(src.shape[-1] / ow))
            s = (src.shape[-2] // oh, src.shape[-1] // ow)
            return _window(rf, k, s, (0, 0), (1, 1))
        if name == "pad":
            pads = list(_arg(args, kwargs, 1, "pad", ()))  # type: ignore[call-overload]
            if len(pads) >= 4:
                return ReceptiveField(rf.size, rf.stride,
                                      (rf.start[0] - pads[2] * rf.stride[0], rf.start[1] - pads[0] * rf.stride[1]),
                                      rf.whole)
            return rf
        if name in ("interpolate", "upsample", "upsample_nearest2d", "upsample_bilinear2d"):
            src = args[0]
            fy, fx = first.shape[-2] / src.shape[-2], first.shape[-1] / src.shape[-1]
            return ReceptiveField(rf.size, (rf.stride[0] / fy, rf.stride[1] / fx), rf.start, rf.whole)
        return _union(inputs)


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer index."""

    name: str
    type: str
    shape: tuple[int, ...]  # output shape of one image, e.g. (C, H, W) or (features,)
    rf: ReceptiveField = field(default_factory=ReceptiveField)

    @property
    def channels(self) -> int:
        return int(self.shape[0]) if self.shape else 0

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3


class LayerIndex:
    """Every named module of a network (dotted ``named_modules()`` names) with output shape and receptive field.

    Built by one traced forward pass at the model's input size. Modules that are called several times
    (a ReLU reused inside a ResNet block) are described by their first call; ``calls[name]`` says how often a
    module ran in that pass.
    """

    def __init__(self, infos: list[LayerInfo], modules: dict[str, nn.Module],
                 calls: dict[str, int] | None = None) -> None:
        self.infos = {i.name: i for i in infos}
        self.modules = modules
        self.calls = calls or {}

    @classmethod
    def build(cls, module: nn.Module, size: tuple[int, int], normalize=None) -> LayerIndex:
        """Trace ``module`` on one zero image of ``size`` and index every module that produced a tensor."""
        if isinstance(module, torch.jit.ScriptModule):
            raise UserError("a TorchScript model's layers cannot be read (PyTorch hooks do not work on a ScriptModule); "
                            "use the Python model (convlens.Model.wrap) or --model ARCH --weights FILE")
        modules = dict(module.named_modules())
        order: list[LayerInfo] = []
        seen: set[str] = set()
        calls: dict[str, int] = {}
        ref = next(module.parameters(), torch.zeros(0))
        image = torch.zeros(1, 3, *size, device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        tracer = _Tracer(image)

        def make_hook(name: str):
            def hook(mod: nn.Module, inp: object, out: object) -> None:
                calls[name] = calls.get(name, 0) + 1
                if name in seen:
                    return
                o = out[0] if isinstance(out, (tuple, list)) and out else out
                if not isinstance(o, torch.Tensor):
                    return
                seen.add(name)
                rf = tracer.field(o) or ReceptiveField(whole=True)
                order.append(LayerInfo(name, type(mod).__name__, tuple(o.shape[1:]), rf))
            return hook

        handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items() if n]
        try:
            with torch.no_grad(), tracer:
                x = image if normalize is None else normalize(image)
                tracer.fields[id(x)] = (x, ReceptiveField())
                module(x)
        finally:
            for h in handles:
                h.remove()
        # modules in the order they first ran; the ones that never ran are not addressable by output
        return cls(order, modules, calls)

    def __iter__(self):
        return iter(self.infos.values())

    def __len__(self) -> int:
        return len(self.infos)

    def __contains__(self, name: object) -> bool:
        return name in self.infos

    def names(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> LayerInfo | None:
        """The layer's info, or ``None`` if the network has no layer of that name."""
        return self.infos.get(name)

    def __getitem__(self, name: str) -> LayerInfo:
        info = self.infos.get(name)
        if info is None:
            hint = closest(name, self.infos)
            more = f"; closest: {', '.join(hint)}" if hint else ""
            raise UserError(f"unknown layer {name!r}{more} (see `convlens layers MODEL`)")
        return info

    def module(self, name: str) -> nn.Module:
        self[name]
        return self.modules[name]

    def spatial(self) -> list[LayerInfo]:
        """Layers whose output is a ``C x H x W`` map."""
        return [i for i in self if i.spatial]

    def first_conv(self) -> str:
        """Name of the first ``Conv2d`` that reads the image (3 input channels)."""
        for info in self:
            m = self.modules[info.name]
            if isinstance(m, nn.Conv2d) and m.in_channels == 3:
                return info.name
        raise UserError("this model has no Conv2d reading the RGB image")

    def last_spatial(self) -> str:
        """Name of the deepest module whose output still has a spatial map (Grad-CAM's default layer)."""
        best = None
        for info in self.spatial():
            if info.shape[1] > 1:
                best = info.name
        if best is None:
            raise UserError("this model has no layer with a spatial output")
        return best

    def stages(self) -> list[str]:
        """Stage outputs, shallow to deep: the spatial layers (side > 1) that are numbered children of a top-level
        sequence (``blocks.3``, ``features.10``, ``layer2.1``, ``stages.2``), else the top-level modules
        (``layer2``), else every spatial layer. The one structural layer picker behind every default layer."""
        spatial = [i.name for i in self.spatial() if i.shape[1] > 1]
        top = {n for n, m in self.modules.items() if n and "." not in n and isinstance(m, (nn.Sequential,
                                                                                                nn.ModuleList))}
        children = [n for n in spatial if n.count(".") == 1 and n.split(".")[0] in top and n.split(".")[1].isdigit()]
        holders = {n.split(".")[0] for n in children}
        if len(holders) > 1:  # a separate stem sequence (ConvNeXt's ``stem.0, stem.1``) is not a stage
            try:
                home = self.first_conv().split(".")[0]
            except UserError:
                home = ""
            children = [n for n in children if n.split(".")[0] != home]
        return children or [n for n in spatial if "." not in n] or spatial

    def spread(self, n: int, names: list[str] | None = None) -> list[str]:
        """``n`` of ``names`` (default :meth:`stages`) spread evenly over the depth, the very first and last
        skipped when there are more than ``n``."""
        names = self.stages() if names is None else list(names)
        if not names:
            raise UserError("this model has no layer with a spatial output")
        if len(names) <= n:
            return names
        picks = [round(1 + k * (len(names) - 3) / max(1, n - 1)) for k in range(n)]
        return [names[i] for i in dict.fromkeys(picks)]

    def at_depth(self, fraction: float) -> str:
        """The stage output nearest ``fraction`` (0 = first stage, 1 = last) of the network's depth."""
        names = self.stages()
        if not names:
            raise UserError("this model has no layer with a spatial output")
        return names[min(len(names) - 1, max(0, round(fraction * (len(names) - 1))))]

    def stem(self) -> str:
        """The stem's output: the last layer right after the first convolution with its output shape (its
        normalisation or activation), else that convolution."""
        names = self.names()
        first = self.first_conv()
        shape = self.infos[first].shape
        out = first
        stages = self.stages()

        def owner(name: str) -> str | None:
            return next((s for s in stages if name == s or name.startswith(s + ".")), None)

        home = owner(first)
        for name in names[names.index(first) + 1:]:
            if self.infos[name].shape != shape or isinstance(self.modules[name], nn.Conv2d) or owner(name) != home:
                break  # a new shape, a new convolution, or the next stage: the stem ended
            out = name
        return out

    def classifier(self) -> str | None:
        """Name of the last ``Linear`` layer, if any."""
        name = None
        for info in self:
            if isinstance(self.modules[info.name], nn.Linear):
                name = info.name
        return name

