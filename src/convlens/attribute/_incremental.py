"""Incremental inference for occlusion (after Nakandala et al., "Krypton", SIGMOD 2019).

An occluder changes only a window of the image, so in the early layers only the units whose receptive field
meets the window change. We run the network once on the clean image and record a *chain* of module calls
from the image onwards (one module's output is the next one's input: convolutions, normalisations,
activations, whole residual blocks). For a batch of occluded copies each layer then only recomputes a patch
-- the changed region plus the halo the module's kernel needs -- pasted into the recorded clean activation,
and the patch grows layer by layer like the projective field of the window. Once the patch covers most of
the map we paste it into full activations and run the rest of the network normally.

Nothing is assumed about the architecture: the chain, every module's kernel/stride/padding (from the
receptive-field tracer of the layer index) and the point where the rest of the network depends on one tensor
only are found by tracing, and the plan is checked numerically against full forward passes before use; where
a check fails the plan cuts earlier (or is not used at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.layers import ReceptiveField, _Tracer
from ..models.model import Model

__all__ = ["IncrementalPlan"]


@dataclass
class _Edge:
    name: str
    module: nn.Module
    call: int  # which call of the module (a reused ReLU is called several times)
    base_in: torch.Tensor  # clean input and output of this call, 1 x C x H x W
    base_out: torch.Tensor
    k: tuple[int, int]  # effective kernel, stride, padding per axis (y, x), in units of the input map
    s: tuple[int, int]
    p: tuple[int, int]

    @property
    def pointwise(self) -> bool:
        return self.k == (1, 1) and self.s == (1, 1) and self.p == (0, 0) and \
            self.base_in.shape[-2:] == self.base_out.shape[-2:]


def _geometry(rin: ReceptiveField, rout: ReceptiveField) -> tuple[tuple[int, int], ...] | None:
    """Kernel, stride and padding of one module call from the receptive fields of its input and output."""
    if rin.whole or rout.whole:
        return None
    k, s, p = [], [], []
    for i in range(2):
        st = rout.stride[i] / rin.stride[i]
        kk = (rout.size[i] - rin.size[i]) / rin.stride[i] + 1
        pp = (kk - 1) / 2 - (rout.start[i] - rin.start[i]) / rin.stride[i]
        if round(st) < 1 or kk < 1:
            return None
        if abs(st - round(st)) > 1e-6 or abs(kk - round(kk)) > 1e-6 or abs(pp - round(pp)) > 1e-6:
            return None
        k.append(round(kk))
        s.append(round(st))
        p.append(round(pp))
    return tuple(k), tuple(s), tuple(p)  # type: ignore[return-value]


def _record(model: Model, xn: torch.Tensor) -> tuple[list[_Edge], torch.Tensor]:
    """Run once on the normalised clean image and return the longest chain of module calls from it."""
    module = model.module
    tracer = _Tracer(xn)
    calls: list[dict[str, Any]] = []
    keep: list[torch.Tensor] = []  # hold every tensor so ids are not reused while recording
    counts: dict[str, int] = {}
    stack: list[dict[str, Any]] = []

    def key(t: torch.Tensor) -> tuple[int, int]:
        return (id(t), t._version)

    def pre(name: str):
        def hook(mod: nn.Module, args: tuple) -> None:
            t = args[0] if args and isinstance(args[0], torch.Tensor) else None
            entry = {"name": name, "module": mod, "call": counts.get(name, 0), "in": None}
            counts[name] = counts.get(name, 0) + 1
            if t is not None and t.dim() == 4 and len(args) == 1:
                keep.append(t)
                entry.update({"in": key(t), "in_rf": tracer.field(t)})
            stack.append(entry)
        return hook

    def post(name: str):
        def hook(mod: nn.Module, args: tuple, out: object) -> None:
            entry = stack.pop()
            if entry["in"] is None or not isinstance(out, torch.Tensor) or out.dim() != 4:
                return
            keep.append(out)
            entry.update({"out": key(out), "out_rf": tracer.field(out)})
            if entry["out"] != entry["in"]:
                calls.append(entry)
        return hook

    handles = []
    for name, mod in module.named_modules():
        if name:
            handles.append(mod.register_forward_pre_hook(pre(name)))
            handles.append(mod.register_forward_hook(post(name)))
    try:
        with torch.no_grad(), model.running(), tracer:
            tracer.fields[id(xn)] = (xn, ReceptiveField())
            logits = module(xn)
    finally:
        for h in handles:
            h.remove()
    start = key(xn)
    best: dict[tuple[int, int], tuple[int, int]] = {start: (0, -1)}  # node -> (path length, index of last call)
    for i, c in enumerate(calls):  # calls are in completion order: a topological order of the graph
        if c["in"] in best:
            length = best[c["in"]][0] + 1
            if length > best.get(c["out"], (-1, -1))[0]:
                best[c["out"]] = (length, i)
    # the end of the chain: the node reached last in the pass, with its longest path back to the image
    end = max((n for n in best if n != start), key=lambda n: best[n][1], default=None)
    picked: list[dict[str, Any]] = []
    while end is not None and end != start:
        picked.append(calls[best[end][1]])
        end = picked[-1]["in"]
    picked.reverse()
    keep.clear()  # free the recorded tensors; the picked calls hold what the second pass needs
    calls.clear()
    # second pass: snapshots of the clean inputs of the chain's calls (in-place ops overwrite them later)
    values = _snapshots(model, xn, [(c["name"], c["call"]) for c in picked])
    chain: list[_Edge] = []
    for i, c in enumerate(picked):
        geo = _geometry(c["in_rf"], c["out_rf"]) if c["in_rf"] and c["out_rf"] else None
        k, s, p = geo if geo else ((0, 0), (0, 0), (0, 0))
        base_out = values[i + 1] if i + 1 < len(picked) else values[-1]
        chain.append(_Edge(c["name"], c["module"], c["call"], values[i], base_out, k, s, p))
    return chain, logits.detach()


def _snapshots(model: Model, xn: torch.Tensor, calls: list[tuple[str, int]]) -> list[torch.Tensor]:
    """Copies of the inputs of the given module calls as they were when each call started, plus the last
    call's output."""
    if not calls:
        return []
    mods = dict(model.module.named_modules())
    wanted = {c: i for i, c in enumerate(calls)}
    out: list[torch.Tensor | None] = [None] * (len(calls) + 1)
    counts: dict[str, int] = {}
    handles = []

    def pre(name: str):
        def hook(mod: nn.Module, args: tuple) -> None:
            n = counts.get(name, 0)
            counts[name] = n + 1
            i = wanted.get((name, n))
            if i is not None:
                out[i] = args[0].detach().clone()
        return hook

    last, last_call = calls[-1]

    def post(mod: nn.Module, args: tuple, res: object) -> None:
        if counts.get(last) == last_call + 1 and out[-1] is None and isinstance(res, torch.Tensor):
            out[-1] = res.detach().clone()

    try:
        for name in {n for n, _ in calls}:
            handles.append(mods[name].register_forward_pre_hook(pre(name)))
        handles.append(mods[last].register_forward_hook(post))
        with torch.no_grad(), model.running():
            model.module(xn)
    finally:
        for h in handles:
            h.remove()
    return out  # type: ignore[return-value]


def _axis(starts: list[int], h: int, L_in: int, L_out: int, k: int, s: int, p: int
          ) -> tuple[list[int], int, list[int], int, list[int]] | None:
    """Plan one axis of one module call for a batch of patches ``[a, a + h)`` of the input map.

    Returns the output patch starts and length, the input crop starts and length to run the module on, and
    where each output patch sits inside the module's output for its crop; ``None`` if it cannot be done exactly.
    """
    h_out = min(L_out, (h + k - 2) // s + 1)
    crop = min(L_in, s * math.ceil(((h_out - 1) * s + k + s - 1) / s))
    out_starts, crop_starts, offsets = [], [], []
    for a in starts:
        o_lo = -((k - 1 - p - a) // s)  # ceil((a + p - k + 1) / s): the first output whose window meets the patch
        o = max(0, min(o_lo, L_out - h_out))
        if crop == L_in:
            c = 0
        else:
            c = max(0, s * ((o * s - p) // s))
            if c + crop > L_in:
                c = L_in - crop
                if c % s:
                    return None
        produced = L_out if crop == L_in else crop // s
        top_ok = c == 0 or c <= o * s - p
        bottom_ok = c + crop == L_in or c + crop >= (o + h_out - 1) * s - p + k
        if c % s or not (top_ok and bottom_ok) or o - c // s < 0 or o - c // s + h_out > produced:
            return None
        out_starts.append(o)
        crop_starts.append(c)
        offsets.append(o - c // s)
    return out_starts, h_out, crop_starts, crop, offsets


class IncrementalPlan:
    """Evaluate many occluded copies of one image, recomputing only what each occluder changes.

    Build with :meth:`build` (returns ``None`` when the network offers no exact incremental prefix); call
    :meth:`logits` with the occluded windows.
    """

    def __init__(self, model: Model, chain: list[_Edge], cut: int, window: tuple[int, int],
                 base_logits: torch.Tensor, tiny: tuple[int, int]) -> None:
        self.model = model
        self.chain = chain[:cut]
        self.window = window
        self.base_logits = base_logits
        self.tiny = tiny

    # -- planning -----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model: Model, x: torch.Tensor, window: tuple[int, int], *, max_fraction: float = 0.6,
              check: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]] | None = None,
              origins: list[tuple[int, int]] | None = None) -> IncrementalPlan | None:
        """Plan incremental inference for the clean image ``x`` (``1 x 3 x H x W``) and occluders of ``window``.

        The chain is followed while the crops a call needs stay below ``max_fraction`` of its input map; ``check`` are occluded
        copies of ``x`` on which the plan must reproduce a full forward pass (else it cuts earlier or gives up).
        """
        xn = model.preprocess.normalize(x)
        chain, logits = _record(model, xn)
        # how far can we go exactly, and how far is it worth it
        h, w = window
        ys = sorted({o[0] for o in origins or [(0, 0)]})
        xs = sorted({o[1] for o in origins or [(0, 0)]})
        cut = 0
        for e in chain:
            if e.k == (0, 0):
                break
            if not e.pointwise:
                ay = _axis(ys, h, e.base_in.shape[-2], e.base_out.shape[-2], e.k[0], e.s[0], e.p[0])
                ax = _axis(xs, w, e.base_in.shape[-1], e.base_out.shape[-1], e.k[1], e.s[1], e.p[1])
                if ay is None or ax is None:  # some occluder position cannot be done exactly from here on
                    break
                if ay[3] * ax[3] >= max_fraction * e.base_in.shape[-2] * e.base_in.shape[-1]:
                    break  # the crop is (nearly) the whole map: nothing left to save from here on
                h, w, ys, xs = ay[1], ax[1], ay[0], ax[0]
            cut += 1
        while cut > 0:
            plan = cls(model, chain, cut, window, logits, (1, 1))
            if plan._suffix_ok() and plan._checks_ok(x, check or []):
                return plan
            cut -= 1
        return None

    def _suffix_ok(self) -> bool:
        e = self.chain[-1]
        H, W = self.chain[0].base_in.shape[-2:]
        sy = max(1, round(H / e.base_out.shape[-2]))
        sx = max(1, round(W / e.base_out.shape[-1]))
        for tiny in ((min(H, 2 * sy), min(W, 2 * sx)), (min(H, 4 * sy), min(W, 4 * sx))):
            self.tiny = tiny
            try:
                out = self._suffix(e.base_out)
            except Exception:  # noqa: BLE001, S112 -- a suffix that cannot run on a replaced activation: try another
                continue
            if out.shape == self.base_logits.shape and torch.allclose(out, self.base_logits, rtol=1e-4,
                                                                       atol=1e-5):
                return True
        return False

    def _checks_ok(self, x: torch.Tensor, checks: list[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]]) -> bool:
        if not checks:
            return True
        with torch.no_grad():
            full = self.model(torch.cat([c[0] for c in checks]))
            mine = self.logits(torch.cat([c[1] for c in checks]), [c[2] for c in checks])
        return bool(torch.allclose(mine, full, rtol=1e-4, atol=1e-4 * float(full.abs().max())))

    # -- running ------------------------------------------------------------------------------------------
    def _suffix(self, act: torch.Tensor) -> torch.Tensor:
        """The logits of the network from the cut on, given the full activation ``act`` at the cut."""
        e = self.chain[-1]
        seen = {"n": 0}

        def hook(mod: nn.Module, args: tuple, out: object) -> object:
            n = seen["n"]
            seen["n"] += 1
            return act if n == e.call else None

        handle = e.module.register_forward_hook(hook)
        try:
            tiny = torch.zeros(act.shape[0], 3, *self.tiny, dtype=act.dtype, device=act.device)
            with torch.no_grad(), self.model.running():
                out = self.model.module(self.model.preprocess.normalize(tiny))
        finally:
            handle.remove()
        return out

    def logits(self, patches: torch.Tensor, origins: list[tuple[int, int]]) -> torch.Tensor:
        """Logits for occluded copies given as ``patches`` (``B x 3 x h x w`` in pixel space: the occluded
        image inside the window box) at ``origins`` (top-left ``(y, x)`` of each box)."""
        # the chain's modules are called one by one here: in eval mode, or batch norm would update its
        # running statistics from the occluded crops (the user's network changed)
        with torch.no_grad(), self.model.running():
            patch = self.model.preprocess.normalize(patches)
            ys = [o[0] for o in origins]
            xs = [o[1] for o in origins]
            for e in self.chain:
                if e.pointwise:
                    patch = e.module(patch)
                    continue
                h, w = patch.shape[-2:]
                ay = _axis(ys, h, e.base_in.shape[-2], e.base_out.shape[-2], e.k[0], e.s[0], e.p[0])
                ax = _axis(xs, w, e.base_in.shape[-1], e.base_out.shape[-1], e.k[1], e.s[1], e.p[1])
                if ay is None or ax is None:  # cannot happen for windows of the planned size
                    raise RuntimeError("incremental plan does not fit this window")
                oy, ho, cy, hc, offy = ay
                ox, wo, cx, wc, offx = ax
                patch = _gather_out(e.module(_crops(e.base_in[0], patch, ys, xs, cy, cx, hc, wc)),
                                    offy, offx, ho, wo)
                ys, xs = oy, ox
            e = self.chain[-1]
            H, W = e.base_out.shape[-2:]
            full = _crops(e.base_out[0], patch, ys, xs, [0] * len(ys), [0] * len(xs), H, W)
            return self._suffix(full)


def _index(starts: list[int], length: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(starts, device=device).view(-1, 1) + torch.arange(length, device=device).view(1, -1)


def _crops(base: torch.Tensor, patch: torch.Tensor, ys: list[int], xs: list[int], cy: list[int], cx: list[int],
           hc: int, wc: int) -> torch.Tensor:
    """``B x C x hc x wc`` crops of the clean map ``base`` (``C x H x W``) at ``(cy, cx)`` with each item's
    patch (``B x C x h x w`` at ``(ys, xs)``) pasted in -- three vectorised gathers, no Python loop."""
    dev = base.device
    h, w = patch.shape[-2:]
    iy, ix = _index(cy, hc, dev), _index(cx, wc, dev)  # B x hc, B x wc: rows / columns of the map
    crops = base[:, iy[:, :, None], ix[:, None, :]].permute(1, 0, 2, 3).contiguous()  # B x C x hc x wc
    for b in range(patch.shape[0]):  # paste each patch where it overlaps its crop
        y0, x0 = max(ys[b], cy[b]), max(xs[b], cx[b])
        y1, x1 = min(ys[b] + h, cy[b] + hc), min(xs[b] + w, cx[b] + wc)
        if y1 > y0 and x1 > x0:
            crops[b, :, y0 - cy[b]:y1 - cy[b], x0 - cx[b]:x1 - cx[b]] = \
                patch[b, :, y0 - ys[b]:y1 - ys[b], x0 - xs[b]:x1 - xs[b]]
    return crops


def _gather_out(out: torch.Tensor, offy: list[int], offx: list[int], ho: int, wo: int) -> torch.Tensor:
    """Each item's ``ho x wo`` window of the module output at its own offset."""
    dev = out.device
    bi = torch.arange(out.shape[0], device=dev).view(-1, 1, 1)
    iy, ix = _index(offy, ho, dev), _index(offx, wo, dev)
    return out.permute(0, 2, 3, 1)[bi, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2).contiguous()
