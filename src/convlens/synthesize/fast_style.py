"""Fast feed-forward style transfer (Johnson, Alahi & Fei-Fei 2016) with several styles in one network
(conditional instance normalisation, Dumoulin, Shlens & Kudlur 2017).

Instead of optimising the pixels of one image, optimise the weights of an image transformation network so
that its output, for any photo, has low perceptual losses (the same scale-free content / Gram / TV terms as
:mod:`~convlens.synthesize.style`) under a frozen loss network. Afterwards one forward pass stylises a photo of
any size. The network: a 9x9 convolution, two stride-2 convolutions, residual blocks, and two upsampling steps
done as nearest resize + convolution (Odena et al. 2016: no checkerboard from transposed convolutions), instance
normalisation everywhere (Ulyanov et al. 2016). With ``n_styles > 1`` every normalisation keeps one scale and
shift per style; mixing those per-style parameters with weights interpolates between the styles at apply time.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..images import ImageLike, list_images, load_image, to_pixels
from ..interrupts import deferred_interrupt
from ..models.model import Model
from ..models.zoo import read_torch_file
from ..results import save_torch
from .texture import GramTargets, _resize_long, content_layer, features, style_layers, total_variation

__all__ = [
    "ConditionalInstanceNorm",
    "FastStyleConfig",
    "PerceptualLoss",
    "TrainState",
    "TransformNet",
    "apply_fast_style",
    "load_fast_style",
    "pretrained_path",
    "save_fast_style",
    "train_fast_style",
]

FORMAT = "convlens-fast-style/1"


class ConditionalInstanceNorm(nn.Module):
    """Instance normalisation with one learned scale and shift per style (Dumoulin et al. 2017).

    ``forward(x, mix)`` takes ``mix`` of shape ``(N, n_styles)``: the scale and shift used for each image are the
    ``mix``-weighted combination of the per-style ones (a one-hot row selects one style).
    """

    def __init__(self, channels: int, n_styles: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_styles, channels))
        self.bias = nn.Parameter(torch.zeros(n_styles, channels))

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        x = F.instance_norm(x, eps=1e-5)
        gamma = (mix @ self.weight)[:, :, None, None]
        beta = (mix @ self.bias)[:, :, None, None]
        return x * gamma + beta


class _ConvNorm(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, n_styles: int, *, upsample: bool = False,
                 act: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(k // 2)
        self.conv = nn.Conv2d(cin, cout, k, stride)
        self.norm = ConditionalInstanceNorm(cout, n_styles)
        self.act = act

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), mix)
        return F.relu(x) if self.act else x


class _Residual(nn.Module):
    def __init__(self, c: int, n_styles: int) -> None:
        super().__init__()
        self.a = _ConvNorm(c, c, 3, 1, n_styles)
        self.b = _ConvNorm(c, c, 3, 1, n_styles, act=False)

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x, mix), mix)


class TransformNet(nn.Module):
    """Johnson et al.'s image transformation network, slimmed by ``width`` and with conditional instance norm.

    ``forward(x, style=0)`` maps a pixel batch ``(N, 3, H, W)`` in [0, 1] of any size to a stylised batch of the
    same size in [0, 1]. ``style`` is a style index, or a weight vector of length ``n_styles`` (or ``(N, n)``)
    that mixes the styles.
    """

    def __init__(self, n_styles: int = 1, width: int = 32, blocks: int = 5) -> None:
        super().__init__()
        self.n_styles, self.width, self.n_blocks = n_styles, width, blocks
        # the longer side to apply at (set from the file by load_fast_style; None: the image's own size)
        self.apply_max_side: int | None = None
        self.apply_source = ""
        w = width
        self.down = nn.ModuleList([_ConvNorm(3, w // 2, 9, 1, n_styles), _ConvNorm(w // 2, w, 3, 2, n_styles),
                                   _ConvNorm(w, 2 * w, 3, 2, n_styles)])
        self.res = nn.ModuleList([_Residual(2 * w, n_styles) for _ in range(blocks)])
        self.up = nn.ModuleList([_ConvNorm(2 * w, w, 3, 1, n_styles, upsample=True),
                                 _ConvNorm(w, w // 2, 3, 1, n_styles, upsample=True)])
        self.head = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(w // 2, 3, 9))

    def mix(self, style: int | Sequence[float] | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """The ``(n, n_styles)`` mixing matrix for a style index or weight vector."""
        if isinstance(style, int):
            if not 0 <= style < self.n_styles:
                raise UserError(f"style {style} out of range: this network has styles 0-{self.n_styles - 1}")
            m = F.one_hot(torch.tensor(style), self.n_styles).float()
        else:
            m = torch.as_tensor(style, dtype=torch.float32)
            if m.shape[-1] != self.n_styles:
                raise UserError(f"got {m.shape[-1]} mixing weights for a network of {self.n_styles} styles")
        m = m.to(device)
        return m.expand(n, -1) if m.dim() == 1 else m

    def forward(self, x: torch.Tensor, style: int | Sequence[float] | torch.Tensor = 0) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a pixel batch (N, 3, H, W), got shape {tuple(x.shape)}")
        mix = self.mix(style, x.shape[0], x.device)
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4  # any size: pad to a multiple of 4, crop back
        y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        y = y * 2 - 1
        for layer in self.down:
            y = layer(y, mix)
        for block in self.res:
            y = block(y, mix)
        for layer in self.up:
            y = layer(y, mix)
        y = torch.sigmoid(self.head(y))
        return y[..., :h, :w]


# --- perceptual losses -----------------------------------------------------------------------------------

class PerceptualLoss:
    """Johnson et al.'s perceptual losses on a frozen loss network, scale-free as in :mod:`.style`.

    ``loss(output, photo, style_index)`` returns ``(total, parts)`` for a batch: content distance at the content
    layer, Gram distance to that style's targets, total variation.
    """

    def __init__(self, model: Model, styles: Sequence[torch.Tensor], *, style_size: int = 256,
                 content_weight: float = 1.0, style_weight: float = 10.0, tv_weight: float = 0.02,
                 style_layers_: Sequence[str] | None = None, content_layer_: str | None = None,
                 style_layer_count: int = 5) -> None:
        self.model = model
        self.slayers = list(style_layers_) if style_layers_ else style_layers(model, count=style_layer_count)
        self.clayer = content_layer_ or content_layer(model)
        self.cw, self.sw, self.tw = content_weight, style_weight, tv_weight
        self.targets = [GramTargets.from_images(model, [_resize_long(s.to(model.device).float(), style_size)],
                                                self.slayers) for s in styles]
        self.layers = list(dict.fromkeys([*self.slayers, self.clayer]))

    def __call__(self, out: torch.Tensor, photo: torch.Tensor, style: int) -> tuple[torch.Tensor, dict[str, float]]:
        fc = features(self.model, photo, [self.clayer])[self.clayer].float()
        feats = features(self.model, out, self.layers, grad=True)
        f = feats[self.clayer].float()
        c = ((f - fc).pow(2).flatten(1).sum(1) / fc.pow(2).flatten(1).sum(1).clamp_min(1e-12)).mean()
        s = self.targets[style].loss(feats).mean()
        tv = total_variation(out).mean()
        total = self.cw * c + self.sw * s + self.tw * tv
        parts = {"content": float(c.detach()), "style": float(s.detach()), "tv": float(tv.detach()),
                 "total": float(total.detach())}
        return total, parts


# --- training ---------------------------------------------------------------------------------------------

@dataclass
class FastStyleConfig:
    """How a fast-style network was (or is to be) trained; stored inside the saved file."""

    styles: list[str]
    loss_model: str = "efficientnet_lite0"
    size: int = 256
    style_size: int = 256
    batch_size: int = 4
    lr: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 0.02
    width: int = 32
    blocks: int = 5
    seed: int = 0
    style_layer_count: int = 5


@dataclass
class TrainState:
    """Progress of a training run: step, epoch, the loss history ``[{step, content, style, tv, total}]``, seconds."""

    step: int = 0
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    rng: dict | None = None  # the crop / photo / flip random streams where the run stopped (resume goes on from here)


APPLY_SCALE = 4
"""Default apply side = ``APPLY_SCALE`` x the training crop. The strokes are a fixed number of pixels, learnt on
crops of ``size`` px that showed most of a photo; at 4x that side a photo's objects are 4x larger than in training
and the strokes still read as the painting's (the shipped network, 128 px crops: clear Starry Night at 512 px,
faint stippling at 1024 px)."""


def default_apply_side(train_size: int) -> int:
    """The longer side a network trained on ``train_size`` px crops is applied at by default."""
    return int(APPLY_SCALE * train_size)


def _photos(images: Sequence[ImageLike] | ImageLike, size: int) -> torch.Tensor:
    """Photos resized (shorter side ``size * 1.15``) and centre-cropped to a uint8 stack; random crops come later."""
    files = list_images(images) if not isinstance(images, (list, tuple)) else \
        [f for i in images for f in (list_images(i) if not hasattr(i, "size") else [i])]
    if not files:
        raise UserError(f"no images found in {images}")
    side = round(size * 1.15)
    out = []
    for f in files:
        img = load_image(f, draft=(side, side))
        scale = side / min(img.size)
        img = img.resize((max(side, round(img.size[0] * scale)), max(side, round(img.size[1] * scale))))
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        out.append((to_pixels(img.crop((left, top, left + side, top + side))) * 255).round().to(torch.uint8))
    return torch.stack(out)


def train_fast_style(model: Model, styles: Sequence[torch.Tensor], images: Sequence[ImageLike] | ImageLike, *,
                     config: FastStyleConfig, steps: int | None = None, epochs: int = 2,
                     net: TransformNet | None = None, state: TrainState | None = None,
                     optimizer_state: dict | None = None, time_limit: float | None = None,
                     checkpoint: Callable[[TransformNet, TrainState, dict], None] | None = None,
                     checkpoint_every: int = 100, progress: Callable[[TrainState, dict[str, float]], None] | None = None
                     ) -> tuple[TransformNet, TrainState]:
    """Train a :class:`TransformNet` to stylise photos in one pass (Johnson et al. 2016; Dumoulin et al. 2017).

    Each step takes a batch of random crops of ``images`` and one style (round-robin over ``styles``), and takes an
    Adam step on the perceptual loss of that style. Resume by passing ``net``, ``state`` and ``optimizer_state``
    from a checkpoint. Stops after ``steps`` (default: ``epochs`` passes over the photos) or ``time_limit`` seconds.
    ``checkpoint(net, state, optimizer_state)`` is called every ``checkpoint_every`` steps and at the end.

    Returns:
        The trained network (in eval mode) and the :class:`TrainState` with the loss history.
    """
    gen = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    if state is not None and state.rng:  # resume: the random streams continue where the checkpoint left them
        gen.set_state(state.rng["torch"])
        rng.setstate(_random_state(state.rng["python"]))
    elif state is not None and state.step:  # an older checkpoint without the streams: as before
        gen.manual_seed(config.seed + state.step)
        rng.seed(config.seed + state.step)
    dev = model.device
    photos = _photos(images, config.size)
    loss = PerceptualLoss(model, styles, style_size=config.style_size, content_weight=config.content_weight,
                          style_weight=config.style_weight, tv_weight=config.tv_weight,
                          style_layer_count=config.style_layer_count)
    if net is None:
        with torch.random.fork_rng(devices=[]):  # the initial weights from the seed; the global RNG is left alone
            torch.manual_seed(config.seed)
            net = TransformNet(len(styles), config.width, config.blocks)
    net.to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    state = state or TrainState()
    per_epoch = max(1, len(photos) // config.batch_size)
    total = steps if steps is not None else epochs * per_epoch
    started = time.perf_counter() - state.seconds
    side = photos.shape[-1]
    stop = deferred_interrupt()
    interrupt = stop.__enter__()  # Ctrl-C ends the step in progress, keeps it, then stops (see below)
    try:
        while state.step < total:
            if interrupt:
                break
            if time_limit is not None and time.perf_counter() - started > time_limit:
                break
            idx = torch.randint(len(photos), (config.batch_size,), generator=gen)
            y0, x0 = rng.randint(0, side - config.size), rng.randint(0, side - config.size)
            batch = photos[idx, :, y0:y0 + config.size, x0:x0 + config.size].float().div(255).to(dev)
            if rng.random() < 0.5:
                batch = batch.flip(-1)
            style = state.step % len(styles)
            out = net(batch, style)
            total_loss, parts = loss(out, batch, style)
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            opt.step()
            state.step += 1
            state.epoch = state.step // per_epoch
            state.seconds = time.perf_counter() - started
            state.history.append({"step": state.step, "style_index": style, **parts})
            state.rng = {"torch": gen.get_state(), "python": rng.getstate()}
            if progress is not None:
                progress(state, parts)
            if checkpoint is not None and state.step % checkpoint_every == 0:
                checkpoint(net, state, opt.state_dict())
    finally:  # Ctrl-C leaves the last finished step on disk
        stop.__exit__(None, None, None)
        net.eval()
        if checkpoint is not None and state.step:
            checkpoint(net, state, opt.state_dict())
    interrupt.check()  # after the checkpoint: the CLI exits 130, a resume goes on from the saved step
    return net, state


# --- files ------------------------------------------------------------------------------------------------

def save_fast_style(path: str | Path, net: TransformNet, config: FastStyleConfig, state: TrainState | None = None,
                    optimizer_state: dict | None = None, *, half: bool = False, **meta: object) -> Path:
    """Write a network with its training config (and, for checkpoints, the optimiser state and history).

    ``half`` stores the weights as float16 (half the size; loaded back as float32).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in net.state_dict().items()}
    doc: dict = {"format": FORMAT, "config": asdict(config), "state_dict": sd,
                 "arch": {"n_styles": net.n_styles, "width": net.width, "blocks": net.n_blocks},
                 "meta": {k: v for k, v in meta.items()},
                 "apply": {"train_size": int(config.size), "max_side": default_apply_side(config.size)}}
    if state is not None:
        doc["train"] = {"step": state.step, "epoch": state.epoch, "seconds": state.seconds, "history": state.history}
        if state.rng is not None:
            doc["train"]["rng"] = state.rng
    if optimizer_state is not None:
        doc["optimizer"] = optimizer_state
    return save_torch(doc, path)  # temp file + rename: an interrupted save never leaves a half file


def load_fast_style(path: str | Path, *, device: str | torch.device = "cpu"
                    ) -> tuple[TransformNet, FastStyleConfig, TrainState | None, dict | None]:
    """Read a file written by :func:`save_fast_style`: the network in eval mode, its config, training state and
    optimiser state (the last two ``None`` for a network saved without them)."""
    p = Path(path)
    doc = read_torch_file(p, "fast-style model")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{p} is not a convlens fast-style model (expected format {FORMAT})")
    # a damaged or crafted file: every part checked, every failure one line (never a KeyError / TypeError)
    arch, sd, cfg = doc.get("arch"), doc.get("state_dict"), doc.get("config")
    for key, value in (("arch", arch), ("state_dict", sd), ("config", cfg)):
        if not isinstance(value, dict):
            raise UserError(f"{p} is damaged: its {key!r} entry is missing or not a table")
    sizes = {k: arch.get(k) for k in ("n_styles", "width", "blocks")}  # type: ignore[union-attr]
    if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4096 for v in sizes.values()):
        raise UserError(f"{p} is damaged: 'arch' needs n_styles, width and blocks as positive integers, got {sizes}")
    known = {f.name for f in fields(FastStyleConfig)}
    unknown = sorted(set(cfg) - known)  # type: ignore[arg-type]
    if unknown or "styles" not in cfg:  # type: ignore[operator]
        raise UserError(f"{p} is damaged: its config has unknown keys {unknown} or lacks 'styles'" if unknown else
                        f"{p} is damaged: its config lacks 'styles'")
    if any(not isinstance(v, torch.Tensor) for v in sd.values()):  # type: ignore[union-attr]
        raise UserError(f"{p} is damaged: its state_dict holds something other than tensors")
    net = TransformNet(sizes["n_styles"], sizes["width"], sizes["blocks"])  # type: ignore[arg-type]
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})  # type: ignore
    except RuntimeError as exc:
        raise UserError(f"weights in {p} do not fit the transformation network: {str(exc).splitlines()[0]}") from None
    net.to(device).eval()
    try:
        config = FastStyleConfig(**cfg)  # type: ignore[arg-type]
        stored = doc.get("apply")
        side = stored.get("max_side") if isinstance(stored, dict) else None
        if isinstance(side, int) and not isinstance(side, bool) and side > 0:
            net.apply_max_side, net.apply_source = side, "stored with the network"
        else:  # a file from before the scale was stored: derive it from the training crop size in its config
            net.apply_max_side = default_apply_side(int(config.size))
            net.apply_source = f"{APPLY_SCALE} x its {int(config.size)} px training crops"
        train = doc.get("train")
        state = TrainState(int(train["step"]), int(train["epoch"]), list(train["history"]), float(train["seconds"]),
                           train.get("rng")) if train else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{p} is damaged: cannot read its config or training state ({exc.__class__.__name__})") \
            from None
    return net, config, state, doc.get("optimizer")


def _to_tuple(value: object) -> object:
    """``random.Random.getstate()`` after a round trip through a file (lists where tuples were)."""
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _random_state(value: object) -> tuple[Any, ...]:
    """A stored ``random.Random.getstate()`` back as the tuple ``setstate`` takes."""
    state = _to_tuple(value)
    if not isinstance(state, tuple):
        raise UserError("the checkpoint is damaged: its Python random state is not a sequence")
    return state


def pretrained_path() -> Path:
    """The small fast-style network that ships with convlens (starry_night on EfficientNet-Lite0 losses)."""
    return Path(__file__).resolve().parents[1] / "assets" / "fast_style_starry_night.pt"


@torch.no_grad()
def apply_fast_style(net: TransformNet, image: torch.Tensor, *, style: int | Sequence[float] = 0,
                     max_side: int | str | None = None) -> torch.Tensor:
    """Stylise a pixel batch ``(N, 3, H, W)`` in one forward pass; ``style`` is an index or mixing weights.

    ``max_side`` first resizes the longer side to at most that: ``"auto"`` is the network's own apply size
    (``net.apply_max_side``, from its training scale), ``None`` keeps the image's size. Returns a pixel batch in
    [0, 1] on the CPU.
    """
    if max_side == "auto":
        max_side = net.apply_max_side
    dev = next(net.parameters()).device
    x = image.to(dev).float()
    if isinstance(max_side, str):
        raise UserError(f"max_side must be a number of pixels, 'auto' or None, got {max_side!r}")
    if max_side and max(x.shape[-2:]) > max_side:
        x = _resize_long(x, max_side)
    if not isinstance(style, int):
        w = torch.as_tensor(list(style), dtype=torch.float32)
        if (w < 0).any() or float(w.sum()) <= 0 or not math.isfinite(float(w.sum())):
            raise UserError(f"mixing weights must be >= 0 with a positive sum, got {list(style)}")
        style = (w / w.sum()).tolist()
    return net.eval()(x, style).clamp(0, 1).cpu()


def load_style_images(paths: Sequence[ImageLike]) -> list[torch.Tensor]:
    """Style images as pixel batches ``(1, 3, H, W)``."""
    return [to_pixels(load_image(p))[None] for p in paths]
