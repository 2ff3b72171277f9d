"""The CAM family on any spatial layer, for any target.

Gradient-weighted maps read the activation ``A`` of a layer and ``g = d score / d A`` in one forward and one
backward pass (the backward stops at the layer):

* Grad-CAM (Selvaraju et al. 2017): ``relu(sum_k mean(g_k) A_k)``;
* Grad-CAM++ (Chattopadhay et al. 2018): channel weights ``sum_ij alpha_ij relu(g_ij)`` with
  ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)`` (their closed form for an exponential of the score, eq. 19);
* XGrad-CAM (Fu et al. 2020): weights ``sum_ij A_ij g_ij / sum_ij A_ij``;
* HiResCAM (Draelos & Carin 2020): ``relu(sum_k g_k * A_k)`` element-wise, no averaging;
* LayerCAM (Jiang et al. 2021): ``relu(sum_k relu(g_k) * A_k)`` element-wise.

Forward-only maps run the network many times:

* Score-CAM (Wang et al. 2020): weights ``softmax_k(score(x * M_k))`` where ``M_k`` is channel ``k`` upsampled
  to the image and scaled to [0, 1]; the masked copies run batched, and channels whose masks coincide (dead
  or constant channels, affine copies) run once;
* Ablation-CAM (Desai & Ramaswamy 2020): weights ``(y - y_k) / |y|`` where ``y_k`` is the score with channel
  ``k`` set to zero; the ablated activations run batched from the layer on (the network before the layer is
  not recomputed when the rest depends on the layer alone, which is checked numerically), and channels that
  are zero already are not run (their weight is 0);
* Eigen-CAM (Muhammad & Yeasin 2020): the projection of the activations on their first principal direction,
  its sign fixed so that it follows where the layer fires (SVD leaves it arbitrary); it ignores the target.

Every function takes one layer name, several (a list, or names separated by commas: the maps are scaled to
[0, 1] per image, upsampled and averaged, as pytorch-grad-cam does), and ``relu=False`` for the map before the
final rectification. One layer gives maps in the units of the score; ``upsample`` brings them to the image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..core.taps import RuleReport
from ..errors import UserError
from ..models.model import Model
from ._common import (
    OutputScore,
    Resolved,
    TargetLike,
    check_batch,
    chunks,
    describe,
    resolve_targets,
    scores,
    take,
    unit_layers,
)
from ._forward import forward_scores
from .gradients import guided_backprop

__all__ = ["CAMS", "class_activation_map", "grad_cam", "grad_cam_pp", "xgrad_cam", "hires_cam", "layer_cam",
           "score_cam", "ablation_cam", "eigen_cam", "guided_grad_cam"]

LayerSpec = str | Sequence[str] | None


# --- layers, activations and gradients ---------------------------------------------------------------------

def cam_layers(model: Model, target: Resolved, layer: LayerSpec) -> list[str]:
    """The CAM layers: the given name(s) (a list, or names separated by commas), else the last spatial layer
    (for a unit target: the unit's own layer, or the earliest of them, when it has a spatial map)."""
    if layer is None:
        units = unit_layers(target)
        order = {n: i for i, n in enumerate(model.layers.names())}
        first = min(units, key=lambda n: order.get(n, 0)) if units else None
        names = [first] if first and model.layers[first].spatial else [model.layers.last_spatial()]
    elif isinstance(layer, str):
        names = [s.strip() for s in layer.split(",") if s.strip()]
    else:
        names = [str(s) for s in layer]
    if not names:
        raise UserError("no CAM layer given")
    for n in names:
        info = model.layers[n]  # unknown -> UserError with the closest names
        if not info.spatial:
            raise UserError(f"layer {n!r} has no spatial map (output shape {tuple(info.shape)}); a CAM needs a "
                            f"C x H x W layer such as {model.layers.last_spatial()!r}")
    return list(dict.fromkeys(names))


def _capture(model: Model, x: torch.Tensor, target: Resolved, layers: list[str], *, grads: bool
             ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
    """Activations of ``layers`` (first call of each module) for ``x``, the target scores ``(N,)`` and, with
    ``grads``, ``d score / d activation``. The backward pass stops at the earliest layer; nested or chained
    layers keep the graph between them. Hooks are removed before returning, also on errors."""
    box: dict[int, torch.Tensor] = {}
    handles = []

    def make(i: int) -> Callable[..., object]:
        def hook(mod: torch.nn.Module, inp: object, out: object) -> object:
            if i in box or not isinstance(out, torch.Tensor):
                return None
            if not grads:
                box[i] = out.detach().clone()
                return None
            base = out if out.requires_grad else out.detach().requires_grad_(True)
            box[i] = base.clone()
            return box[i].clone()  # downstream in-place ops (ReLU(inplace=True)) modify a copy, not the record
        return hook

    try:
        for i, name in enumerate(layers):
            handles.append(model.layer(name).register_forward_hook(make(i)))
        with torch.enable_grad() if grads else torch.no_grad():
            s = scores(model, x, target)
            missing = [layers[i] for i in range(len(layers)) if i not in box]
            if missing:
                raise UserError(f"layer {missing[0]!r} does not run before the target {describe(target)} is "
                                f"computed: choose a CAM layer that the target depends on")
            acts = [box[i] for i in range(len(layers))]
            if not grads:
                return acts, None, s.detach()
            gs = torch.autograd.grad(s.sum(), acts, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for name, g in zip(layers, gs):
        if g is None:
            raise UserError(f"the target {describe(target)} does not depend on layer {name!r}")
    return [a.detach() for a in acts], [g.detach() for g in gs], s.detach()


# --- the maps ------------------------------------------------------------------------------------------------

def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum((2, 3), keepdim=True)


def _grad_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.mean((2, 3), keepdim=True) * a).sum(1)


def _grad_cam_pp_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    g2 = g * g
    den = 2 * g2 + _spatial_sum(a) * g2 * g
    ok = (g != 0) & (den != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(g))
    return (_spatial_sum(alpha * g.clamp(min=0)) * a).sum(1)


def _xgrad_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    total = _spatial_sum(a)
    w = torch.where(total != 0, _spatial_sum(a * g) / torch.where(total != 0, total, torch.ones_like(total)),
                    torch.zeros_like(total))
    return (w * a).sum(1)


def _hires_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g * a).sum(1)


def _layer_cam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.clamp(min=0) * a).sum(1)


_GRADIENT_MAPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": _grad_cam_map, "gradcampp": _grad_cam_pp_map, "xgradcam": _xgrad_cam_map,
    "hirescam": _hires_cam_map, "layercam": _layer_cam_map}


def _minmax(m: torch.Tensor) -> torch.Tensor:
    """Scale each map ``(N, ...)`` to [0, 1] (a constant map becomes 0)."""
    flat = m.flatten(1)
    lo = flat.amin(1).view(-1, *[1] * (m.dim() - 1))
    span = (flat.amax(1) - flat.amin(1)).view(-1, *[1] * (m.dim() - 1))
    return torch.where(span > 0, (m - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(m))


def _resize(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _finish(maps: list[torch.Tensor], x: torch.Tensor, relu: bool, upsample: bool) -> torch.Tensor:
    """One layer: rectified (``relu``) and upsampled to the image. Several: each rectified and scaled to
    [0, 1] per image (``relu=False``: divided by its largest magnitude), upsampled, averaged, scaled again."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if len(maps) == 1:
        m = maps[0].clamp(min=0) if relu else maps[0]
        return _resize(m, size) if upsample else m
    if not upsample:
        raise ValueError("several CAM layers are averaged at the image's resolution: upsample must be True")
    parts = []
    for m in maps:
        if relu:
            m = _minmax(m.clamp(min=0))
        else:
            m = m / m.abs().flatten(1).amax(1).clamp(min=torch.finfo(m.dtype).tiny).view(-1, 1, 1)
        parts.append(_resize(m, size))
    mean = torch.stack(parts).mean(0)
    return _minmax(mean) if relu else mean


def _prepare(model: Model, x: torch.Tensor, target: TargetLike, layer: LayerSpec
             ) -> tuple[torch.Tensor, Resolved, list[str]]:
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    return x, t, cam_layers(model, t, layer)


def _gradient_cam(kind: str, model: Model, x: torch.Tensor, target: TargetLike, layer: LayerSpec, relu: bool,
                  upsample: bool) -> torch.Tensor:
    x, t, names = _prepare(model, x, target, layer)
    acts, grads, _ = _capture(model, x, t, names, grads=True)
    assert grads is not None
    fn = _GRADIENT_MAPS[kind]
    return _finish([fn(a, g) for a, g in zip(acts, grads)], x, relu, upsample)


def grad_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
             relu: bool = True, upsample: bool = True) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ``relu(sum_k w_k A_k)`` with ``w_k`` the spatial mean of
    ``d score / d A_k`` at ``layer`` (default: the last layer with a spatial map, ``model.layers.last_spatial()``).

    ``target`` is anything :func:`~convlens.attribute.resolve_targets` takes (class, classes, unit, output
    score). Returns ``(N, H, W)`` at the input's resolution (bilinear upsampling; ``upsample=False`` keeps the
    layer's resolution), unnormalised: the values are in the units of the score. ``relu=False`` returns the map
    before the final ReLU; several layers are scaled to [0, 1] and averaged.
    """
    return _gradient_cam("gradcam", model, x, target, layer, relu, upsample)


def grad_cam_pp(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
                relu: bool = True, upsample: bool = True) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018): channel weights ``sum_ij alpha_ij relu(g_ij)`` with
    ``alpha_ij = g_ij^2 / (2 g_ij^2 + sum_ab A_ab g_ij^3)`` (eq. 19, the score's exponential), 0 where the
    gradient is 0. Same arguments and units as :func:`grad_cam`; ``(N, H, W)``."""
    return _gradient_cam("gradcampp", model, x, target, layer, relu, upsample)


def xgrad_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
              relu: bool = True, upsample: bool = True) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM"): channel weights ``sum_ij (A_ij / sum_ab A_ab) g_ij``
    (0 for a channel that sums to 0). Same arguments and units as :func:`grad_cam`; ``(N, H, W)``."""
    return _gradient_cam("xgradcam", model, x, target, layer, relu, upsample)


def hires_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
              relu: bool = True, upsample: bool = True) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): ``relu(sum_k g_k * A_k)`` element-wise -- the gradient is not averaged,
    so the map shows the locations the score actually reads. Same arguments as :func:`grad_cam`; ``(N, H, W)``."""
    return _gradient_cam("hirescam", model, x, target, layer, relu, upsample)


def layer_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
              relu: bool = True, upsample: bool = True) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ``relu(sum_k relu(g_k) * A_k)`` element-wise; meaningful at shallow layers
    too (give several, e.g. ``layer="blocks.2,blocks.4,bn2"``). Same arguments as :func:`grad_cam`; ``(N, H, W)``."""
    return _gradient_cam("layercam", model, x, target, layer, relu, upsample)


# --- Score-CAM ---------------------------------------------------------------------------------------------

def _scaled(a: torch.Tensor) -> torch.Tensor:
    """Each channel of ``a`` ``(C, h, w)`` scaled to [0, 1] (a constant channel becomes 0), flattened ``(C, hw)``."""
    return _minmax(a.flatten(1))


def _score_weights(model: Model, x: torch.Tensor, t: Resolved, a: torch.Tensor, batch_size: int,
                   engine: str) -> torch.Tensor:
    """Score-CAM's channel weights ``(N, C)``: softmax over channels of the score of ``x`` masked by each channel."""
    n, c, h, w = a.shape
    weights = torch.empty(n, c, dtype=a.dtype, device=a.device)
    # masks that coincide after scaling (constant channels, affine copies) give the same masked image
    distinct = [torch.unique(_scaled(a[i]), dim=0, return_inverse=True) for i in range(n)]
    passes = sum(len(d) for d, _ in distinct)
    with contextlib.ExitStack() as stack:
        if isinstance(t, (torch.Tensor, OutputScore)):  # scored from the logits: the fastest checked engine
            fwd = stack.enter_context(forward_scores(model, engine=engine, passes=passes, check=x[:2]))

            def score(batch: torch.Tensor, ti: Resolved) -> torch.Tensor:
                out = fwd(batch).to(x.device)
                if isinstance(ti, OutputScore):
                    return ti(out)
                if not isinstance(ti, torch.Tensor):  # unreachable: take() of a class tensor is a class tensor
                    raise TypeError(f"expected class indices, got {type(ti).__name__}")
                return out.gather(1, ti.view(-1, 1).to(out.device))[:, 0]
        else:  # a unit: the forward pass stops at its layer
            def score(batch: torch.Tensor, ti: Resolved) -> torch.Tensor:
                with torch.no_grad():
                    return scores(model, batch, ti)
        for i, (uniq, inverse) in enumerate(distinct):
            s = torch.empty(len(uniq), dtype=x.dtype, device=a.device)
            for sl in chunks(len(uniq), batch_size):
                masks = _minmax(_resize(uniq[sl].view(-1, h, w), (int(x.shape[-2]), int(x.shape[-1]))))  # upsample, then scale
                batch = x[i:i + 1] * masks[:, None].to(x.dtype)
                s[sl] = score(batch, take(t, [i] * len(batch))).to(s.dtype)
            weights[i] = s[inverse].to(torch.promote_types(s.dtype, torch.float32)).softmax(0).to(a.dtype)
    return weights


def score_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
              relu: bool = True, upsample: bool = True, batch_size: int = 32, engine: str = "auto") -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): ``relu(sum_k w_k A_k)`` with ``w = softmax_k(score(x * M_k))``, ``M_k``
    channel ``k`` of ``layer`` upsampled (bilinear) and scaled to [0, 1], the masked pixels black.

    Gradient-free: one forward pass per distinct mask, ``batch_size`` masked copies at a time (channels whose
    masks coincide -- dead or constant channels, affine copies -- share one pass: the result is the same), on
    the fastest checked forward ``engine`` for class and output-score targets (``auto``: OpenVINO when
    installed and there are enough passes, compared with eager PyTorch on the image first; see
    :func:`~convlens.attribute._forward.forward_scores`). Same targets, layers and units as :func:`grad_cam`;
    returns ``(N, H, W)``.
    """
    x, t, names = _prepare(model, x, target, layer)
    acts, _, _ = _capture(model, x, t, names, grads=False)
    maps = [(_score_weights(model, x, t, a, batch_size, engine)[:, :, None, None] * a).sum(1) for a in acts]
    return _finish(maps, x, relu, upsample)


# --- Ablation-CAM --------------------------------------------------------------------------------------------

class _FromLayer:
    """Scores of the network run from ``layer`` on, its output replaced by given activations.

    When the rest of the network depends on the layer's output alone, the part before the layer runs on a
    tiny image (almost free); that is checked on the clean activation and on one ablated copy against full
    forward passes. Otherwise every call reruns the whole network on the image (still exact).
    """

    def __init__(self, model: Model, layer: str, x1: torch.Tensor, t1: Resolved, a1: torch.Tensor,
                 y1: torch.Tensor) -> None:
        self.model, self.module, self.x1, self.t1 = model, model.layer(layer), x1, t1
        self.tiny: tuple[int, int] | None = None
        H, W = x1.shape[-2:]
        sy, sx = max(1, round(H / a1.shape[-2])), max(1, round(W / a1.shape[-1]))
        probe = a1.clone()
        alive = a1.flatten(1).abs().amax(1)
        if alive.numel() and float(alive.max()) > 0:
            probe[int(alive.argmax())] = 0
        acts = torch.stack([a1, probe])
        full = self._run(acts, None)
        if not torch.allclose(full[0].float(), y1.float(), rtol=1e-4, atol=1e-5):
            raise RuntimeError("replacing the layer's output by itself changed the score")  # the layer is not pure
        for size in ((min(H, 2 * sy), min(W, 2 * sx)), (min(H, 4 * sy), min(W, 4 * sx))):
            try:
                got = self._run(acts, size)
            except Exception:  # noqa: BLE001, S112 -- the prefix cannot run on that image: try the next, or run it all
                continue
            if got.shape == full.shape and torch.allclose(got.float(), full.float(), rtol=1e-4,
                                                          atol=1e-5 * (1 + float(full.abs().max()))):
                self.tiny = size
                break

    def _run(self, acts: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        b = acts.shape[0]
        seen = {"n": 0}

        def hook(mod: torch.nn.Module, inp: object, out: object) -> object:
            seen["n"] += 1
            return acts if seen["n"] == 1 else None

        inp = self.x1.expand(b, -1, -1, -1) if size is None else self.x1.new_zeros(b, 3, *size)
        handle = self.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return scores(self.model, inp, take(self.t1, [0] * b))
        finally:
            handle.remove()

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        return self._run(acts, self.tiny)


def _ablation_weights(model: Model, x: torch.Tensor, t: Resolved, layer: str, a: torch.Tensor, y: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    n, c = a.shape[:2]
    weights = torch.zeros(n, c, dtype=a.dtype, device=a.device)
    for i in range(n):
        ti = take(t, [i])
        run = _FromLayer(model, layer, x[i:i + 1], ti, a[i], y[i:i + 1])
        alive = torch.nonzero(a[i].flatten(1).abs().amax(1) > 0)[:, 0]  # zeroing a zero channel changes nothing
        drops = torch.empty(len(alive), dtype=y.dtype, device=a.device)
        for sl in chunks(len(alive), batch_size):
            ch = alive[sl]
            batch = a[i].expand(len(ch), -1, -1, -1).clone()
            batch[torch.arange(len(ch), device=a.device), ch] = 0
            drops[sl] = y[i] - run(batch)
        scale = abs(float(y[i]))
        weights[i, alive] = (drops / scale if scale > 0 else drops).to(a.dtype)
    return weights


def ablation_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
                 relu: bool = True, upsample: bool = True, batch_size: int = 64) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``relu(sum_k w_k A_k)`` with ``w_k = (y - y_k) / |y|``, ``y_k`` the
    score when channel ``k`` of ``layer`` is set to zero (the paper divides by ``y``; ``|y|`` keeps a negative
    score from flipping the map; a zero score is not divided).

    Gradient-free: ablated activations run ``batch_size`` at a time from the layer on -- the network before the
    layer is not recomputed where the rest depends on the layer alone (checked) -- and channels that are zero
    already are skipped (weight 0). Same targets, layers and units as :func:`grad_cam`; returns ``(N, H, W)``.
    """
    x, t, names = _prepare(model, x, target, layer)
    maps = []
    for name in names:
        (a,), _, y = _capture(model, x, t, [name], grads=False)
        maps.append((_ablation_weights(model, x, t, name, a, y, batch_size)[:, :, None, None] * a).sum(1))
    return _finish(maps, x, relu, upsample)


# --- Eigen-CAM -----------------------------------------------------------------------------------------------

def _first_component(a: torch.Tensor, center: bool) -> torch.Tensor:
    """Projection ``(N, h, w)`` of each position's activation vector on the first principal direction."""
    n, _, h, w = a.shape
    m = a.flatten(2).transpose(1, 2).double()  # N x hw x C
    if center:
        m = m - m.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = m @ vh[:, 0, :, None]  # N x hw x 1
    proj = proj[..., 0]
    total = a.flatten(2).sum(1).double()  # where the layer fires
    agree = ((proj - proj.mean(1, keepdim=True)) * (total - total.mean(1, keepdim=True))).sum(1)
    sign = torch.where(agree != 0, agree.sign(), torch.where(proj.sum(1) < 0, -1.0, 1.0).to(agree.dtype))
    return (proj * sign[:, None]).view(n, h, w).to(a.dtype)


def eigen_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *, layer: LayerSpec = None,
              relu: bool = True, upsample: bool = True, center: bool = False) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations of ``layer`` projected on their first principal
    direction (SVD of the ``hw x C`` matrix; ``center=True`` subtracts the mean first, as pytorch-grad-cam does).

    The SVD's sign is arbitrary; it is fixed here so the map correlates positively with the summed activation.
    The map does not depend on the target (it is class-agnostic); the target only picks the default layer of a
    unit and stops the forward pass. Returns ``(N, H, W)``.
    """
    x, t, names = _prepare(model, x, target, layer)
    acts, _, _ = _capture(model, x, t, names, grads=False)
    return _finish([_first_component(a, center) for a in acts], x, relu, upsample)


# --- by name ---------------------------------------------------------------------------------------------------

CAMS: dict[str, Callable[..., torch.Tensor]] = {
    "gradcam": grad_cam, "gradcampp": grad_cam_pp, "xgradcam": xgrad_cam, "hirescam": hires_cam,
    "layercam": layer_cam, "scorecam": score_cam, "ablationcam": ablation_cam, "eigencam": eigen_cam}
"""Every CAM variant by name: ``fn(model, x, target, *, layer, relu, upsample, ...) -> (N, H, W)``."""


def class_activation_map(model: Model, x: torch.Tensor, target: TargetLike = None, *, method: str = "gradcam",
                         layer: LayerSpec = None, relu: bool = True, upsample: bool = True,
                         **options: object) -> torch.Tensor:
    """Any CAM variant by name (a key of :data:`CAMS`); ``options`` go to it (``batch_size=``, ``center=``)."""
    if method not in CAMS:
        raise UserError(f"unknown CAM method {method!r}; known: {', '.join(CAMS)}")
    return CAMS[method](model, x, target, layer=layer, relu=relu, upsample=upsample, **options)


def guided_grad_cam(model: Model, x: torch.Tensor, target: TargetLike = None, *,
                    layer: LayerSpec = None, report: RuleReport | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop ``(N, 3, H, W)`` multiplied by the upsampled Grad-CAM map
    (Selvaraju et al. 2017) -- class-discriminative and high-resolution. Returns ``(N, 3, H, W)``;
    ``report`` as in :func:`~convlens.attribute.guided_backprop`."""
    x = check_batch(x)
    t = resolve_targets(model, x, target)
    return guided_backprop(model, x, t, report=report) * grad_cam(model, x, t, layer=layer)[:, None]
