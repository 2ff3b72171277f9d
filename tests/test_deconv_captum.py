"""convlens' DeconvNet and guided backprop agree with an independent implementation (Captum) on ReLU networks."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.attribute.gradients import deconvnet, guided_backprop

captum_attr = pytest.importorskip("captum.attr")
torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize("arch", ["vgg11", "resnet18"])
def test_deconvnet_and_guided_match_captum(arch):
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    for mod in net.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    model = convlens.Model.wrap(net, mean=(0.0,) * 3, std=(1.0,) * 3, size=64)
    x = torch.rand(2, 3, 64, 64)
    for ours, theirs in ((deconvnet, captum_attr.Deconvolution), (guided_backprop, captum_attr.GuidedBackprop)):
        a = ours(model, x, [3, 7])
        b = theirs(net).attribute(x.clone().requires_grad_(True), target=[3, 7])
        assert b.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())), ours.__name__
