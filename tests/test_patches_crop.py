"""Top patches cropped to the effective field (guided-backprop mass) where the theoretical one is the whole image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.errors import UserError
from convlens.read import guided_patches, top_patches
from convlens.read.patches import erf_box, large_rf
from convlens.read.render import to_rgb, top_patches_figure


def _inside(mass: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return float(mass[y0:y1, x0:x1].sum())


def test_erf_box_is_the_smallest_centred_square_holding_the_mass():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:100, :120]
    mass = np.exp(-((yy - 40) ** 2 + (xx - 70) ** 2) / (2 * 9.0 ** 2)) + 1e-4 * rng.random((100, 120))
    box, full = erf_box(mass, 40, 70, fraction=0.9, min_side=4)
    side = full[2] - full[0]
    assert full[3] - full[1] == side and box == full  # a square, inside the image here
    assert _inside(mass, box) >= 0.9 * mass.sum()
    smaller, _ = erf_box(mass, 40, 70, fraction=0.9 * _inside(mass, (full[0] + 1, full[1] + 1, full[2] - 1,
                                                                      full[3] - 1)) / _inside(mass, box), min_side=4)
    assert smaller[2] - smaller[0] < side  # one pixel less on each side no longer holds 90%
    assert 20 < side < 60  # ~ 2 x 1.65 sigma for a Gaussian of sigma 9
    assert box[0] <= 70 < box[2] and box[1] <= 40 < box[3]
    # at least min_side, and clipped (not shifted) at the border: the unit stays at the centre of `full`
    corner = np.zeros((100, 120))
    corner[2, 3] = 1.0
    b, f = erf_box(corner, 2, 3, fraction=0.9, min_side=30)
    assert f[2] - f[0] == 30 and b[0] == 0 and b[1] == 0 and f[0] < 0
    # an all-zero map gives the minimum square
    b, f = erf_box(np.zeros((50, 50)), 25, 25, min_side=10)
    assert f[2] - f[0] == 10


def test_whole_rf_layer_crops_are_smaller_than_the_image_and_hold_the_unit(lite0, sample_dir):
    files = sorted(sample_dir.glob("*.JPEG"))[:12]
    layer = "blocks.4"
    h, w = lite0.preprocess.size
    rf = lite0.layers[layer].rf
    assert min(rf.size) > max(h, w) and large_rf(lite0, layer)  # the theoretical crop is the whole photo
    before = top_patches(lite0, files, layer, channels=[0, 1], k=3, progress=False, crop="rf")
    assert all(p.box == (0, 0, w, h) or p.clipped for ps in before.patches for p in ps)
    tp = top_patches(lite0, files, layer, channels=[0, 1], k=3, progress=False)  # auto -> erf here
    assert tp.crop == "erf" and tp.guided is not None
    for ps, gs in zip(tp.patches, tp.guided):
        for p, g in zip(ps, gs):
            x0, y0, x1, y1 = p.box
            cy, cx = rf.start[0] + p.y * rf.stride[0], rf.start[1] + p.x * rf.stride[1]
            assert x0 <= cx < x1 and y0 <= cy < y1  # the unit's position is inside its crop
            assert (x1 - x0) * (y1 - y0) < 0.5 * h * w  # well below the whole image
            assert p.full[2] - p.full[0] >= 2 * rf.stride[1]  # at least the minimum side
            assert tuple(p.pixels.shape) == (3, y1 - y0, x1 - x0) == tuple(g.shape)
            assert p.rf_box is not None and p.rf_box[0] <= x0 and p.rf_box[2] >= x1
    assert guided_patches(lite0, tp) is tp  # no second backward pass
    # the figure says what the crop is and what the theoretical field is
    fig = top_patches_figure(tp, guided=[[to_rgb(t) for t in row] for row in tp.guided])
    assert fig.width > 6 * 64


def test_crop_option(tiny, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(UserError, match="crop must be"):
        top_patches(tiny, tmp_path, "conv4", k=2, progress=False, crop="whole")
    assert not large_rf(tiny, "conv2")
    auto = top_patches(tiny, tmp_path, "conv2", channels=[0, 1], k=2, progress=False)
    assert auto.crop == "rf" and auto.guided is None  # a small field keeps the receptive-field crop
    erf = top_patches(tiny, tmp_path, "conv4", channels=[0, 1], k=2, progress=False, crop="erf", min_side=3)
    rf = tiny.layers["conv4"].rf
    for ps in erf.patches:
        for p in ps:
            x0, y0, x1, y1 = p.box
            rx0, ry0, rx1, ry1 = p.rf_box
            assert rx0 <= x0 < x1 <= rx1 and ry0 <= y0 < y1 <= ry1  # inside the theoretical field
            cy, cx = rf.start[0] + p.y * rf.stride[0], rf.start[1] + p.x * rf.stride[1]
            assert x0 <= cx < x1 and y0 <= cy < y1
            assert torch.equal(p.pixels, tiny.preprocess.to_tensor(p.file)[:, y0:y1, x0:x1])


def test_microscope_crops_a_whole_field_unit_like_top_patches(lite0, sample_dir, tmp_path):
    from PIL import Image

    from convlens.show.microscope import build_microscope

    files = sorted(sample_dir.glob("*.JPEG"))[:6]
    out = tmp_path / "site"
    build_microscope(lite0, files, out, layers=["blocks.4"], k=2, max_channels=1, vis_steps=0, progress=False)
    tp = top_patches(lite0, files, "blocks.4", channels=[0], k=2, progress=False)
    for j, p in enumerate(tp.patches[0]):
        x0, y0, x1, y1 = p.box
        size = Image.open(out / "layers" / "blocks.4" / "img" / f"c0_p{j}.jpg").size
        scale = max(1, 112 // max(x1 - x0, y1 - y0))  # the page upscales small crops to 112 px
        assert size == ((x1 - x0) * scale, (y1 - y0) * scale) and (x1 - x0) * (y1 - y0) < 0.5 * 224 * 224


class _OffUnits(torch.nn.Module):
    """Hand-set: ``pre = ReLU6(grey), ReLU6(grey + 3), ReLU6(grey)``; a depthwise 3x3 mean with signs ``-, -, +``
    and biases ``2, 6, 0``; then ReLU6 (``act``). Channel 0 is an off-unit: its maximum, 2, is its value with a
    dark (all-zero) window -- a resting value with zero gradient. Channel 1 never rests but only falls with its
    input, so guided backprop (positive paths only) is zero while the plain gradient is not. Channel 2 is normal."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = torch.nn.Conv2d(3, 3, 1)
        self.act_pre = torch.nn.ReLU6()
        self.dw = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.act = torch.nn.ReLU6()
        with torch.no_grad():
            self.pre.weight.fill_(1 / 3)
            self.pre.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
            self.dw.weight.copy_(torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1, 1).expand(3, 1, 3, 3) / 9)
            self.dw.bias.copy_(torch.tensor([2.0, 6.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dw(self.act_pre(self.pre(x)))).mean((2, 3))


def _off_unit_photos(folder) -> None:
    """Four 16 px photos, bright with one dark square each: channel 0 of :class:`_OffUnits` rests inside it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        a = rng.uniform(0.55, 0.95, (16, 16, 3))
        y, x = rng.integers(2, 10, 2)
        a[y:y + 5, x:x + 5] = 0.1  # a dark square: channel 0 rests at 2 inside it
        Image.fromarray((255 * a).astype(np.uint8)).save(folder / f"{i}.png")


def test_zero_guided_map_says_why_resting_unit_or_negative_paths(tmp_path, one_thread):

    import convlens

    model = convlens.Model.wrap(_OffUnits().eval(), mean=(0.5,) * 3, std=(0.25,) * 3, size=16, labels=["a", "b", "c"])
    _off_unit_photos(tmp_path)
    tp = top_patches(model, tmp_path, "act", k=3, progress=False, crop="erf", min_side=3)
    rest, neg, normal = tp.patches
    assert all(abs(p.value - 2.0) < 1e-5 for p in rest) and tp.ties[0] == 3  # every top value is the resting one
    assert [p.fallback for p in rest] == ["resting"] * 3 and all(p.box == p.rf_box for p in rest)
    assert [p.fallback for p in neg] == ["guided"] * 3
    assert [p.fallback for p in normal] == [None] * 3
    assert tp.guided is not None and all(float(g.sub(0.5).abs().max()) == 0 for g in tp.guided[0])  # blank tiles
    fig = top_patches_figure(tp, guided=[[to_rgb(t) for t in row] for row in tp.guided])
    assert fig.width > 6 * 64
    # the theoretical-field crop says the same, from guided_patches
    rf = guided_patches(model, top_patches(model, tmp_path, "act", k=3, progress=False, crop="rf"))
    assert [[p.fallback for p in ps] for ps in rf.patches] == [["resting"] * 3, ["guided"] * 3, [None] * 3]


def test_microscope_pages_say_why_a_guided_map_is_zero(tmp_path, one_thread):
    """The microscope names the same reasons as top-patches, and keeps them when a rerun reuses the pictures."""
    import convlens
    from convlens.show.microscope import build_microscope

    model = convlens.Model.wrap(_OffUnits().eval(), mean=(0.5,) * 3, std=(0.25,) * 3, size=16, labels=["a", "b", "c"])
    _off_unit_photos(tmp_path / "photos")
    out = tmp_path / "site"
    for _ in range(2):  # the second run reuses the pictures and must keep the reasons
        build_microscope(model, tmp_path / "photos", out, layers=["act"], k=3, vis_steps=0, progress=False)
        pages = [(out / "layers" / "act" / f"{c}.html").read_text() for c in range(3)]
        assert pages[0].count("guided map 0 (resting)") == 3
        assert pages[1].count("guided map 0 (guided)") == 3
        assert "guided map 0" not in pages[2]
