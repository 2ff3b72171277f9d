"""Deletion / insertion curves and RISE: batched and shared end points give the one-image-at-a-time numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convlens
from convlens.attribute import (
    Unit,
    deletion_insertion,
    deletion_insertion_many,
    greedy_insertion,
    rise,
    rise_masks,
    saliency,
)
from convlens.attribute.greedy import _order, _search
from convlens.attribute.occlusion import _filler
from convlens.core.engine import openvino_available


@pytest.fixture
def xs() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _reference(model, x, m, t, steps, generator):
    """Petsiuk et al.'s curves written plainly: one image per forward pass, rankings as in the library."""
    H, W = m.shape
    total = H * W
    noise = torch.rand(total, generator=generator) * 1e-6 * (m.abs().max().item() + 1e-12)
    order = torch.argsort(m.flatten() + noise, descending=True)
    blurred = _filler(x[None], "blur")[0]
    dele, ins = [], []
    for k in range(steps + 1):
        chosen = torch.zeros(total, dtype=torch.bool)
        chosen[order[:round(total * k / steps)]] = True
        chosen = chosen.view(H, W)
        with torch.no_grad():
            dele.append(model(torch.where(chosen, torch.zeros_like(x), x)[None]).softmax(-1)[0, t])
            ins.append(model(torch.where(chosen, x, blurred)[None]).softmax(-1)[0, t])
    return torch.stack(dele), torch.stack(ins)


def test_batched_curves_equal_the_plain_reference(tiny, xs):
    t = tiny(xs).argmax(-1)
    maps = {"gradient": saliency(tiny, xs, "gradient", t), "gradcam": saliency(tiny, xs, "gradcam", t)}
    res = deletion_insertion_many(tiny, xs, maps, t, steps=7, batch_size=5, generator=torch.Generator().manual_seed(0),
                                  engine="torch")
    g = torch.Generator().manual_seed(0)
    for name in maps:  # the library ranks map by map, image by image, in this order
        for i in range(2):
            d, n = _reference(tiny, xs[i], maps[name][i], int(t[i]), 7, g)
            assert torch.allclose(res[name].deletion[i], d, atol=1e-6)
            assert torch.allclose(res[name].insertion[i], n, atol=1e-6)
        r = res[name]
        assert torch.allclose(r.deletion_auc, torch.trapezoid(r.deletion, r.fractions, dim=-1))
        assert torch.allclose(r.insertion_auc, torch.trapezoid(r.insertion, r.fractions, dim=-1))
    single = deletion_insertion(tiny, xs, maps["gradcam"], t, steps=7, generator=torch.Generator().manual_seed(5))
    assert single.deletion.shape == (2, 8) and torch.equal(single.fractions, res["gradcam"].fractions)


class _Corner(nn.Module):
    """Class 0's logit is 20x the mean brightness of the top-left 8x8 corner; class 1's is 19."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, :, :8, :8].mean((1, 2, 3)) * 20
        return torch.stack([c, torch.full_like(c, 19.0)], 1)


def test_the_right_map_wins_and_the_wrong_one_loses():
    model = convlens.Model.wrap(_Corner(), mean=(0, 0, 0), std=(1, 1, 1), size=32)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :8, :8] = 1  # p(class 0) = sigmoid(1) = 0.73 on the image, 0 without the corner, 0.2 blurred
    right = torch.zeros(1, 32, 32)
    right[:, :8, :8] = 1
    good = deletion_insertion(model, x, right, torch.tensor([0]), steps=16, engine="torch")
    bad = deletion_insertion(model, x, 1 - right, torch.tensor([0]), steps=16, engine="torch")
    # the corner first: the probability is at its floor (deletion) or its top (insertion) after 1/16 of the pixels
    assert float(good.deletion_auc) < 0.05 and float(bad.deletion_auc) > 0.6
    assert float(good.insertion_auc) > 0.65 and float(bad.insertion_auc) < 0.3


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO not installed")
def test_openvino_curves_equal_torch(tiny, xs):
    t = tiny(xs).argmax(-1)
    m = saliency(tiny, xs, "gradient", t)
    a = deletion_insertion(tiny, xs, m, t, steps=10, generator=torch.Generator().manual_seed(0), engine="torch")
    b = deletion_insertion(tiny, xs, m, t, steps=10, generator=torch.Generator().manual_seed(0), engine="openvino")
    assert b.engine == "openvino" and a.engine == "torch"
    assert torch.allclose(a.deletion, b.deletion, atol=1e-5) and torch.allclose(a.insertion, b.insertion, atol=1e-5)


def test_rise_equals_its_definition_and_is_batched(tiny, xs):
    t = tiny(xs).argmax(-1)
    got = rise(tiny, xs, t, masks=40, batch_size=16, generator=torch.Generator().manual_seed(1), engine="torch")
    masks = rise_masks(40, (32, 32), generator=torch.Generator().manual_seed(1))
    # Petsiuk et al.: S = sum_i p(x * M_i) M_i / (N p) -- here one mask at a time; batches of 8 masks draw the
    # same masks as one draw of 40 only if the generator is consumed the same way, so compare with batch size 40*2
    again = rise(tiny, xs, t, masks=40, batch_size=80, generator=torch.Generator().manual_seed(1), engine="torch")
    for i in range(2):
        with torch.no_grad():
            p = torch.stack([tiny((xs[i] * m)[None]).softmax(-1)[0, t[i]] for m in masks])
        want = (p[:, None, None] * masks).sum(0) / (40 * 0.5)
        assert torch.allclose(again[i], want, atol=1e-5)
    one = rise(tiny, xs[1:], t[1:], masks=40, batch_size=40, generator=torch.Generator().manual_seed(1), engine="torch")
    assert torch.allclose(again[1], one[0], atol=1e-6)
    assert got.shape == (2, 32, 32) and bool((got >= 0).all())
    u = rise(tiny, xs, Unit("conv4", 2), masks=16, generator=torch.Generator().manual_seed(0), engine="torch")
    assert u.shape == (2, 32, 32) and torch.isfinite(u).all()
    assert "rise" in convlens.attribute.METHODS


def test_rise_finds_the_corner():
    model = convlens.Model.wrap(_Corner(), mean=(0, 0, 0), std=(1, 1, 1), size=32)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :8, :8] = 1
    m = rise(model, x, 0, masks=300, cells=4, generator=torch.Generator().manual_seed(0),
             engine="torch")[0]
    assert m[:8, :8].mean() > 1.5 * m[16:, 16:].mean()


def test_masks_are_smooth_and_keep_about_half():
    m = rise_masks(200, (40, 30), cells=5, keep=0.5, generator=torch.Generator().manual_seed(0))
    assert m.shape == (200, 40, 30) and 0.4 < float(m.mean()) < 0.6
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert float((m[:, 1:] - m[:, :-1]).abs().max()) < 0.5  # bilinear upsampling: no hard cell edges


def test_insertion_canvas_blur_is_a_knob():
    """The corner image blurred by 1 px keeps most of its corner (high start of insertion), by 8 px far less."""
    model = convlens.Model.wrap(_Corner(), mean=(0, 0, 0), std=(1, 1, 1), size=32)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :8, :8] = 1
    right = torch.zeros(1, 32, 32)
    right[:, :8, :8] = 1
    mild = deletion_insertion_many(model, x, {"m": right}, torch.tensor([0]), steps=4, engine="torch", blur=1.0)["m"]
    strong = deletion_insertion_many(model, x, {"m": right}, torch.tensor([0]), steps=4, engine="torch", blur=8.0)["m"]
    assert float(mild.insertion[0, 0]) > float(strong.insertion[0, 0]) + 0.1
    assert torch.equal(mild.deletion, strong.deletion)  # deletion never sees the canvas


def test_rise_fill_is_the_canvas_of_the_hidden_pixels(tiny, xs):
    """fill="blur" shows the blurred image where a mask hides the photo: the map equals that definition."""
    t = tiny(xs).argmax(-1)
    got = rise(tiny, xs, t, masks=12, batch_size=24, fill="blur", generator=torch.Generator().manual_seed(2),
               engine="torch")
    masks = rise_masks(12, (32, 32), generator=torch.Generator().manual_seed(2))
    canvas = _filler(xs, "blur")
    for i in range(2):
        with torch.no_grad():
            p = torch.stack([tiny((xs[i] * m + canvas[i] * (1 - m))[None]).softmax(-1)[0, t[i]] for m in masks])
        assert torch.allclose(got[i], (p[:, None, None] * masks).sum(0) / (12 * 0.5), atol=1e-5)


class _TwoCorners(nn.Module):
    """Class 0 needs both bright corners at once: its logit is 20 x the dimmer corner's mean brightness (plus a
    trace of the top-left one, so that corner alone is a hair better than nothing); class 1's is a constant 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, :, :8, :8].mean((1, 2, 3)), x[:, :, 24:, 24:].mean((1, 2, 3))
        c = 20 * torch.minimum(a, b) + 0.1 * a
        return torch.stack([c, torch.full_like(c, 10.0)], 1)


def test_greedy_insertion_finds_regions_that_only_act_together():
    model = convlens.Model.wrap(_TwoCorners(), mean=(0, 0, 0), std=(1, 1, 1), size=32)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :8, :8] = 1
    x[:, :, 24:, 24:] = 1
    m = greedy_insertion(model, x, 0, cells=8, reveal=1 / 16, prior=None, engine="torch")[0]  # a cell per round
    cells = m[::8, ::8].flatten()
    first_two = set(cells.argsort(descending=True)[:2].tolist())
    assert first_two == {0, 15}  # the top-left corner (a trace alone), then the bottom-right one it needs
    # one cell per step: after two steps the class is back (p = 1 - 5e-5), so the area is close to its top
    res = deletion_insertion(model, x, m[None], torch.tensor([0]), steps=16, engine="torch")
    assert float(res.insertion_auc) > 0.85
    assert float(m.min()) > 0 and float(m.max()) <= 1 + 1e-6


def test_greedy_insertion_is_batched_and_takes_any_target(tiny, xs):
    t = tiny(xs).argmax(-1)
    both = greedy_insertion(tiny, xs, t, cells=(8, 16), engine="torch")
    for i in range(2):
        one = greedy_insertion(tiny, xs[i:i + 1], t[i:i + 1], cells=(8, 16), engine="torch")
        assert torch.allclose(both[i], one[0])
        # the map returned is one of the candidates: the search on either grid, or the prior map itself
        prior = saliency(tiny, xs[i:i + 1], "guided_gradcam", t[i:i + 1])[0].clamp(min=0)
        candidates = [greedy_insertion(tiny, xs[i:i + 1], t[i:i + 1], cells=c, engine="torch")[0] for c in (8, 16)]
        candidates.append(_order(prior))  # as a reveal order, like the searches' maps
        assert any(torch.allclose(both[i], c) for c in candidates)
    assert torch.equal(saliency(tiny, xs, "greedy", t, cells=(8, 16), engine="torch"), both)
    for target in (Unit("conv4", 2), convlens.attribute.margin(0, 1)):
        m = greedy_insertion(tiny, xs, target, cells=16, engine="torch")
        assert m.shape == (2, 32, 32) and torch.isfinite(m).all()
    order = _order(torch.tensor([[0.5, 2.0], [0.5, -1.0]]))
    assert torch.equal(order, torch.tensor([[0.75, 1.0], [0.5, 0.25]]))  # ties in pixel order
    with pytest.raises(ValueError, match="cells"):
        greedy_insertion(tiny, xs, t, cells=0)
    with pytest.raises(ValueError, match="stop"):
        greedy_insertion(tiny, xs, t, stop=0)


def test_greedy_search_orders_pixels_within_cells_only(xs):
    """The prior orders the pixels inside a cell and never moves a pixel past another cell's."""
    x = xs[0]
    canvas = _filler(x[None], "blur")[0]
    pix = torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    score = lambda b: b[:, 0, :16, :16].mean((1, 2)) + 0.5 * b[:, 1, 16:, :].mean((1, 2))
    m = _search(x, canvas, 8, score, pix, 1 / 16, 0.95, 0.15, 64, score(torch.stack([canvas, x])))
    cells = m.unfold(0, 8, 8).unfold(1, 8, 8).flatten(2).flatten(0, 1)  # (16 cells, 64 pixels)
    lo, hi = cells.amin(-1), cells.amax(-1)
    assert bool((hi > lo).all())
    order = lo.argsort()
    assert bool((hi[order[:-1]] < lo[order[1:]]).all())


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO not installed")
def test_forward_only_methods_take_images_of_any_size(tiny):
    """The compiled network has the model's input size; a non-square image of another size runs on PyTorch
    (``auto``) -- before, OpenVINO refused its shape and the curves, RISE and greedy insertion crashed."""
    from convlens.errors import UserError

    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    t = tiny(x).argmax(-1)
    m = saliency(tiny, x, "gradient", t)
    auto = deletion_insertion(tiny, x, m, t, steps=60, generator=torch.Generator().manual_seed(0))
    ref = deletion_insertion(tiny, x, m, t, steps=60, generator=torch.Generator().manual_seed(0), engine="torch")
    assert auto.engine == "torch" and torch.allclose(auto.insertion, ref.insertion)
    assert rise(tiny, x, t, masks=120).shape == (1, 24, 40)
    with pytest.raises(UserError, match="input size"):
        deletion_insertion(tiny, x, m, t, steps=60, engine="openvino")
