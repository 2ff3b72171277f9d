"""The zoo sweep: library recipes on torchvision and timm architectures with random weights, no downloads.

Every architecture: building, the layer index and its stage picker, guided backprop (which must differ from the
plain gradient on every one of them: all have rectifiers), DeconvNet, Grad-CAM and the reading recipes. Two
architectures (one torchvision ResNet, one timm EfficientNet) run every recipe of the library
(``benchmarks/bench_zoo_sweep.py`` runs every recipe on every architecture and prints the table in docs/zoo.md).
"""

from __future__ import annotations

import pytest
import torch

from zoo_recipes import ARCHS, _rel, build, photos, recipes

pytest.importorskip("timm")
CHEAP = ["filters", "activations", "top-patches", "receptive-field", "dead-units", "fool", "attack"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photos(tmp_path_factory.mktemp("zoo"))


@pytest.mark.slow
@pytest.mark.parametrize("spec", ARCHS)
def test_guided_and_cheap_recipes_on_every_architecture(spec, folder):
    from convlens.attribute import deconvnet, grad_cam, guided_backprop, vanilla_gradient
    from convlens.core.taps import RuleReport

    model = build(spec)
    h = model.preprocess.size[0]
    x = torch.rand(1, 3, h, h, generator=torch.Generator().manual_seed(0))
    report = RuleReport("guided")
    gb = guided_backprop(model, x, 1, report=report)
    v = vanilla_gradient(model, x, 1)
    assert report.changed > 0 and torch.isfinite(gb).all()
    assert _rel(gb, v) > 1e-3, f"{spec}: guided backprop equals the plain gradient"
    assert torch.isfinite(deconvnet(model, x, 1)).all()
    assert grad_cam(model, x, 1).shape == (1, h, h)
    run = recipes(model, folder)
    for name in CHEAP:
        run[name]()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:mobilenetv3_small_050"])
def test_every_recipe(spec, folder):
    for call in recipes(build(spec), folder).values():
        call()
