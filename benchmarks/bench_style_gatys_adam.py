"""Claim: at 256 px, convlens' style transfer (library defaults) reaches a given loss in fewer seconds than a plain
PyTorch reimplementation of the Gatys loop with Adam (the loop most tutorials ship).

Both minimise the *same* loss on the same network (the embedded EfficientNet-Lite0), the same layers and the same
images (tubingen in the style of starry_night, longer side 256): ``content + 3 * style + 0.2 * tv`` with the
scale-free terms of :mod:`convlens.synthesize.style`. What differs is the loop and its defaults:

- peer: the tutorial recipe -- forward hooks on a full forward pass, start from the content photo, Adam
  (lr 0.02) on raw pixels clamped to [0, 1] after each step;
- ours: ``style_transfer`` defaults -- the core loop with L-BFGS, a forward pass that stops after the deepest
  tapped layer, 200 steps from the content photo.

The given loss is what the peer reaches after its whole budget (``--adam-steps``, default 300). Printed: the
seconds each needs to first reach it (each loop's own loss evaluations are part of its time),
and the ratio.

    python benchmarks/bench_style_gatys_adam.py [--adam-steps 300] [--size 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import convlens
from convlens.images import load_image, to_pixels
from convlens.synthesize.style import default_weights, style_transfer
from convlens.synthesize.texture import _resize_long, content_layer, gram, style_layers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def plain_gatys_adam(model: convlens.Model, content: torch.Tensor, style: torch.Tensor, steps: int, lr: float,
                     sw: float, tw: float) -> tuple[list[float], list[float], torch.Tensor]:
    """The tutorial loop, written out: hooks, targets, Adam on pixels, clamp. Returns (times, losses, image)."""
    module = model.module
    s_layers, c_layer = style_layers(model), content_layer(model)
    mods = dict(module.named_modules())
    store: dict[str, torch.Tensor] = {}
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: store.__setitem__(n, o.clone()))
             for n in set(s_layers + [c_layer])]
    norm = model.preprocess.normalize
    try:
        with torch.no_grad():
            module(norm(style))
            targets = {n: gram(store[n]) for n in s_layers}
            module(norm(content))
            fc = store[c_layer].clone()
        x = content.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        times, losses = [], []
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            module(norm(x))
            c = (store[c_layer] - fc).pow(2).sum() / fc.pow(2).sum()
            s = sum(((gram(store[n]) - targets[n]).pow(2).sum() / targets[n].pow(2).sum()) for n in s_layers)
            s = s / len(s_layers)
            dy = x[..., 1:, :-1] - x[..., :-1, :-1]
            dx = x[..., :-1, 1:] - x[..., :-1, :-1]
            tv = (dx.pow(2) + dy.pow(2) + 1e-8).pow(0.5).mean()
            loss = c + sw * s + tw * tv
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
    finally:
        for h in hooks:
            h.remove()
    return times, losses, x.detach()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adam-steps", type=int, default=300)
    ap.add_argument("--ours-steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.02)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = convlens.load_model("efficientnet_lite0")
    content = _resize_long(to_pixels(load_image(DATA / "content" / "tubingen.jpg"))[None], args.size)
    style = _resize_long(to_pixels(load_image(DATA / "styles" / "starry_night.jpg"))[None], args.size)
    sw, tw = default_weights(model)

    p_times, p_losses, _ = plain_gatys_adam(model, content, style, args.adam_steps, args.lr, sw, tw)
    target = p_losses[-1]
    p_reach = next(t for t, v in zip(p_times, p_losses) if v <= target)

    o_times: list[float] = []
    o_losses: list[float] = []
    start = time.perf_counter()

    def cb(i: int, loss: float) -> None:
        o_times.append(time.perf_counter() - start)
        o_losses.append(loss)

    res = style_transfer(model, content, [style], size=None, steps=args.ours_steps, callback=cb)
    hit = [t for t, v in zip(o_times, o_losses) if v <= target]
    print(f"same loss (content + {sw:g}*style + {tw:g}*tv, scale-free) at {content.shape[-1]}x{content.shape[-2]}")
    print(f"plain Gatys + Adam : {args.adam_steps} steps, final loss {target:.4f} reached in {p_reach:.1f} s")
    if hit:
        print(f"convlens defaults  : reached {target:.4f} in {hit[0]:.1f} s (step {len(o_times) - len(hit) + 1}); "
              f"final {o_losses[-1]:.4f} after {res.steps} steps, {o_times[-1]:.1f} s")
        print(f"ratio (peer / ours seconds to the same loss): {p_reach / hit[0]:.1f}x")
    else:
        print(f"convlens defaults  : did NOT reach {target:.4f}; best {min(o_losses):.4f} in {o_times[-1]:.1f} s")


if __name__ == "__main__":
    main()
