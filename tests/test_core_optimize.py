"""Parametrisations, transforms and the loop: round trips, identities, the loop improves its objective."""

from __future__ import annotations

import pytest
import torch

from convlens.core import (
    Blur,
    ClipContribution,
    ClipNorm,
    Decay,
    FourierImage,
    Jitter,
    Pad,
    PixelImage,
    RandomRotate,
    RandomScale,
    channel,
    class_logit,
    feature_match,
    gaussian_blur,
    jitter,
    layer_norm,
    optimize,
    standard_transforms,
    total_variation,
    unjitter,
)
from convlens.core.optimize import L1SGD, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def test_jitter_unjitter_identity() -> None:
    const = torch.full((2, 3, 17, 23), 0.3)
    rand = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    for dy, dx in [(0, 0), (3, -5), (-16, 22), (40, 1)]:
        assert torch.equal(unjitter(jitter(const, dy, dx), dy, dx), const)
        assert torch.equal(jitter(const, dy, dx), const)  # a constant image does not move at all
        assert torch.equal(unjitter(jitter(rand, dy, dx), dy, dx), rand)
    assert not torch.equal(jitter(rand, 1, 0), rand)


def test_roll_jitter_gradient_is_unjittered() -> None:
    """Stepping the rolled image and rolling back == stepping through the differentiable roll (DeepDream)."""
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    w = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    (jitter(x, 2, 3) * w).sum().backward()
    assert torch.allclose(x.grad, unjitter(w, 2, 3))


def test_fourier_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    for h, w in [(32, 32), (31, 40)]:
        x = torch.rand(2, 3, h, w, generator=gen) * 0.9 + 0.05
        for decorrelate in (True, False):
            p = FourierImage(init=x, decorrelate=decorrelate)
            assert torch.allclose(p(), x, atol=1e-5)
    p = FourierImage(size=(24, 30), batch=3, generator=gen)
    img = p()
    assert img.shape == (3, 3, 24, 30) and 0 < img.min() and img.max() < 1
    p.resize((48, 60))
    assert p().shape == (3, 3, 48, 60)


def test_pixel_image_starts_and_resizes() -> None:
    assert torch.equal(PixelImage(size=(4, 5), fill=(0.1, 0.2, 0.3))()[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    photo = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    p = PixelImage(init=photo, octave_mode="detail")
    p.resize((20, 20))
    with torch.no_grad():
        p.pixels.add_(0.0)
    p.resize((40, 40))  # no change was made, so the photo comes back exactly
    assert torch.allclose(p(), photo, atol=1e-6)


def test_transforms_shapes_and_determinism() -> None:
    x = torch.rand(2, 3, 32, 32)
    ts = standard_transforms()
    a = x
    b = x
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t in ts:
        a, b = t(a, g1), t(b, g2)
    assert torch.equal(a, b)
    assert Pad(4)(x).shape[-1] == 40 and Jitter(4, mode="crop")(x).shape[-1] == 24
    assert RandomScale(2.0, 2.0)(x).shape[-1] == 64
    assert torch.allclose(RandomRotate(0.0)(x), x, atol=1e-5)
    assert repr(ts[3]) == "RandomRotate(30)"


def test_post_step_operations() -> None:
    const = torch.full((1, 3, 16, 16), 0.7)
    assert torch.allclose(gaussian_blur(const, 1.0), const)
    x = const.clone()
    Blur(1.0, every=2)(x, None, 0)
    Decay(0.5)(x, None, 0)
    assert torch.allclose(x, torch.full_like(x, 0.6))
    y = torch.full((1, 3, 4, 4), 0.5)
    y[0, :, 0, 0] = 1.0
    ClipNorm(50)(y, None, 0)
    assert y[0, 0, 0, 0] == 1.0 and torch.all(y[0, :, 1:, :] == 0.5)
    z = torch.rand(1, 3, 4, 4)
    g = torch.zeros_like(z)
    g[..., 0, 0] = 1.0
    ClipContribution(90)(z, g, 0)
    assert (z[0, 0] == 0.5).sum() >= 14


@pytest.mark.parametrize("optimizer,param", [("adam", "pixel"), ("sgd-l1", "pixel"), ("lbfgs", "pixel"),
                                             ("adam", "fft")])
def test_loop_increases_objective(tiny, optimizer, param) -> None:
    gen = torch.Generator().manual_seed(0)
    p = PixelImage(size=32, noise=0.05, generator=gen) if param == "pixel" else FourierImage(size=32, generator=gen)
    obj = channel("conv3", 2)
    before = evaluate(tiny, obj, p().detach())
    res = optimize(tiny, obj, p, steps=15, optimizer=optimizer, lr=0.02 if optimizer == "sgd-l1" else None)
    assert res.values.item() > before.item() + 1e-3
    assert len(res.losses) == 15 and res.losses[-1] < res.losses[0]
    assert res.images.min() >= 0 and res.images.max() <= 1


def test_loop_minimises_with_transforms_copies_octaves_and_post(tiny) -> None:
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = {}
    from convlens.core import activations
    target = activations(tiny, photo, "conv2")["conv2"]
    obj = feature_match("conv2", target)
    start = PixelImage(size=32, noise=0.1, generator=torch.Generator().manual_seed(2))
    before = evaluate(tiny, obj, start().detach()).item()
    res = optimize(tiny, obj, start, maximize=False, steps=12, copies=2, transforms=[Jitter(1)],
                   regularizers=[0.01 * total_variation()], post=[Blur(0.5, every=4)], snapshot_every=6)
    assert res.values.item() < before
    assert res.steps == 12 and len(res.snapshots) == 2
    assert "penalty 0.01*total_variation(beta=2)" in res.objective


def test_octaves_end_at_the_param_size(tiny) -> None:
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen = []
    p = PixelImage(init=photo, octave_mode="detail")
    res = optimize(tiny, layer_norm("conv3"), p, steps=3, optimizer="sgd-l1", octaves=3, octave_scale=1.5,
                   callback=lambda step, img, loss: seen.append(tuple(img.shape[-2:])))
    assert seen == [(14, 14)] * 3 + [(21, 21)] * 3 + [(32, 32)] * 3
    assert res.images.shape == (1, 3, 32, 32) and res.values.item() > evaluate(tiny, layer_norm("conv3"), photo)


def test_same_seed_same_image_and_no_hooks_left(tiny) -> None:
    def go(seed: int) -> torch.Tensor:
        p = FourierImage(size=32, generator=torch.Generator().manual_seed(seed))
        return optimize(tiny, class_logit(1), p, steps=5, transforms=standard_transforms(), copies=2,
                        seed=seed).images
    assert torch.equal(go(0), go(0))
    assert not torch.equal(go(0), go(1))
    mods = list(tiny.module.modules())
    assert all(not m._forward_hooks for m in mods)
    with pytest.raises(ValueError, match="out of range: 'conv3' has channels 0-7"):
        optimize(tiny, layer_norm("conv2") + channel("conv3", 99), PixelImage(size=32), steps=2)  # bad channel
    assert all(not m._forward_hooks for m in mods)
    with pytest.raises(ValueError, match="post-step"):
        optimize(tiny, class_logit(0), FourierImage(size=32), post=[Blur()], steps=1)


def test_l1sgd_step_is_normalised() -> None:
    p = torch.nn.Parameter(torch.zeros(2, 4))
    p.grad = torch.tensor([[1.0, -1.0, 2.0, 0.0], [100.0, 100.0, 100.0, 100.0]])
    L1SGD([p], lr=0.1).step()
    assert torch.allclose(p.data[1], torch.full((4,), -0.1))
    assert torch.allclose(p.data[0], torch.tensor([-0.1, 0.1, -0.2, 0.0]))
