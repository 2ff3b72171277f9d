"""Weights, activation maps, receptive-field crops of top patches, the empirical receptive field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.core.taps import activations
from convlens.errors import UserError
from convlens.read import (
    activation_maps,
    conv_filters,
    empirical_receptive_field,
    linear_templates,
    load_dataset,
    top_patches,
)


class LinearNet(nn.Module):
    """Convolutions with leaky rectifiers only: every pixel of a unit's window has a non-zero gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.a1 = nn.LeakyReLU(0.3)
        self.c2 = nn.Conv2d(4, 4, 5, stride=2, padding=2)
        self.a2 = nn.LeakyReLU(0.3)
        self.c3 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.c3(self.a2(self.c2(self.a1(self.c1(x))))))


@pytest.fixture
def linear_model():
    torch.manual_seed(1)
    return convlens.Model.wrap(LinearNet().eval(), mean=(0.5,) * 3, std=(0.5,) * 3, size=32)


@pytest.mark.parametrize("layer,unit", [("c3", (3, 4)), ("c3", (0, 0)), ("c2", (15, 2)), ("dw", (7, 7))])
def test_crop_is_exactly_the_pixels_with_gradient(linear_model, layer, unit):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with convlens.Tap(linear_model, layer) as tap:
        tap.run(x)
        tap.outputs[layer][0, 1, unit[0], unit[1]].backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    got = (int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1)
    assert linear_model.layers[layer].rf.box(*unit, 32, 32) == got


def test_top_patches_crop_the_maximising_unit(tiny, tmp_path):
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    tp = top_patches(tiny, tmp_path, "conv3", channels=[0, 2], k=3, progress=False)
    assert tp.channels == [0, 2] and all(len(row) == 3 for row in tp.patches)
    rf = tiny.layers["conv3"].rf
    for c, row in zip(tp.channels, tp.patches):
        values = [p.value for p in row]
        assert values == sorted(values, reverse=True)
        for p in row:
            x = tiny.preprocess.to_tensor(p.file)
            a = activations(tiny, x[None], "conv3")["conv3"][0, c]
            assert float(a.max()) == pytest.approx(p.value, rel=1e-5)
            assert float(a[p.y, p.x]) == pytest.approx(p.value, rel=1e-5)
            x0, y0, x1, y1 = p.box
            assert p.box == rf.box(p.y, p.x, 32, 32)
            assert torch.equal(p.pixels, x[:, y0:y1, x0:x1])
            assert p.clipped == (p.box != rf.unclipped(p.y, p.x))
    with pytest.raises(UserError, match="out of range"):
        top_patches(tiny, tmp_path, "conv3", channels=[99], progress=False)
    with pytest.raises(UserError, match="spatial"):
        top_patches(tiny, tmp_path, "fc", progress=False)


def test_filters_kinds_and_values(tiny, tiny_module, linear_model):
    f = conv_filters(tiny)
    assert f.kind == "rgb" and f.layer == "conv1" and torch.equal(f.weight, tiny_module.conv1.weight)
    assert conv_filters(tiny, "conv2").kind == "kernels"
    assert conv_filters(linear_model, "dw").kind == "depthwise"
    with pytest.raises(UserError, match="not a Conv2d"):
        conv_filters(tiny, "act1")


def test_linear_templates_are_the_rows():
    fc = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 7))
    t = linear_templates(fc, shape=(3, 4, 5))
    assert t.shape == (7, 3, 4, 5)
    assert torch.equal(t[2].flatten(), fc[1].weight[2])
    with pytest.raises(UserError, match="not an image"):
        linear_templates(fc, shape=(3, 32, 32))


def test_activation_maps(tiny, chelsea):
    acts = activation_maps(tiny, chelsea, "conv2")
    x = tiny.load(chelsea)
    assert torch.allclose(acts.maps, activations(tiny, x, "conv2")["conv2"][0])
    # conv2 is linear (its ReLU6 follows): a nowhere-positive map is not "dead" there; after the rectifier it is
    assert not acts.rectified and not acts.dead.any()
    assert (acts.nonpositive == (acts.maps.flatten(1).amax(1) <= 0).numpy()).all()
    after = activation_maps(tiny, chelsea, "act2")
    assert after.rectified and (after.dead == (after.maps.flatten(1).amax(1) <= 0).numpy()).all()


def test_empirical_receptive_field_stays_inside_the_theoretical_one(linear_model):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    erf = empirical_receptive_field(linear_model, x, "c2", 1, units=[(8, 8), (7, 6)], occluder=3, stride=1)
    rf = linear_model.layers["c2"].rf
    for m, (y, x_) in zip(erf.maps, erf.units):
        x0, y0, x1, y1 = rf.box(y, x_, 32, 32)
        outside = m.copy()
        outside[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = 0  # occluders straddling the edge count inside
        assert outside.max() == 0 and m.max() > 0
    assert 0 < erf.empirical <= erf.theoretical + 3
    with pytest.raises(UserError, match="out of range"):
        empirical_receptive_field(linear_model, x, "c2", 9)


def test_dataset_limit_spreads(sample_dir):
    full = load_dataset(sample_dir)
    ds = load_dataset(sample_dir, limit=8)
    assert len(ds) == 8 and ds.labels[0] == full.labels[0] and ds.labels[-1] == full.labels[-1]
