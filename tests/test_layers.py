"""The layer index: output shapes and receptive fields, checked against where gradients actually reach."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens.errors import UserError


class Branchy(nn.Module):
    """Convs, TF-style asymmetric padding, pooling, a residual and parallel branches of different widths."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 5, stride=2, padding=2)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.narrow = nn.Conv2d(4, 4, 1)
        self.wide = nn.Conv2d(4, 4, 5, padding=2)
        self.dilated = nn.Conv2d(8, 4, 3, padding=2, dilation=2)
        self.down = nn.Conv2d(4, 4, 3, stride=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.tanh(self.stem(x)))
        x = torch.cat([self.narrow(x), self.wide(x)], 1)  # parallel branches: the union of their windows
        x = self.dilated(x) + x[:, :4]  # residual
        x = self.down(F.pad(x, (0, 1, 0, 1)))  # TF "same" padding: only right / bottom
        return self.head(x.mean((2, 3)))


def _measured_box(module: nn.Module, layer: str, size: int, y: int, x: int) -> tuple[int, int, int, int]:
    inp = torch.rand(1, 3, size, size, requires_grad=True)
    with convlens.Tap(module, layer) as tap:
        module(inp)
    tap.outputs[layer][0, :, y, x].sum().backward()
    nz = inp.grad[0].abs().sum(0).nonzero()
    return (int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1)


@pytest.mark.parametrize("layer", ["stem", "pool", "wide", "dilated", "down"])
def test_receptive_field_matches_gradient(layer):
    torch.manual_seed(0)
    net = Branchy().eval()
    for p in net.parameters():
        p.data.abs_().add_(0.01)  # positive weights: no accidental cancellation of gradients
    size = 64
    index = convlens.LayerIndex.build(net, (size, size))
    info = index[layer]
    _, h, w = info.shape
    for (y, x) in [(h // 2, w // 2), (0, 0), (h - 1, w - 1)]:
        assert info.rf.box(y, x, size, size) == _measured_box(net, layer, size, y, x), (layer, y, x)


def test_lite0_receptive_fields_match_gradient(lite0):
    for layer in ["conv_stem", "blocks.1", "blocks.2.0.conv_dw"]:
        info = lite0.layers[layer]
        _, h, w = info.shape
        y, x = h // 2, w // 2
        inp = torch.rand(1, 3, 224, 224, requires_grad=True)
        with convlens.Tap(lite0, layer) as tap:
            lite0(inp)
        tap.outputs[layer][0, :, y, x].sum().backward()
        nz = inp.grad[0].abs().sum(0).nonzero()
        measured = (int(nz[:, 1].min()), int(nz[:, 0].min()), int(nz[:, 1].max()) + 1, int(nz[:, 0].max()) + 1)
        assert info.rf.box(y, x, 224, 224) == measured, layer


def test_index_shapes_and_lookup(lite0):
    layers = lite0.layers
    assert layers["conv_stem"].shape == (32, 112, 112)
    assert layers["blocks.6"].shape == (320, 7, 7)
    assert layers["classifier"].shape == (1000,)
    assert layers["global_pool"].rf.whole
    assert layers.first_conv() == "conv_stem"
    assert layers.classifier() == "classifier"
    assert layers.last_spatial() in ("bn2", "bn2.act")
    with pytest.raises(UserError, match="blocks.4"):
        layers["blocks.4x"]
    assert lite0.layers["conv_stem"].rf.size == (3.0, 3.0) and lite0.layers["conv_stem"].rf.stride == (2.0, 2.0)


def test_resnet_style_model_index():
    import torchvision
    model = convlens.Model.wrap(torchvision.models.resnet18(weights=None), size=224)
    info = model.layers["layer4"]
    assert info.shape == (512, 7, 7)
    assert info.rf.stride == (32.0, 32.0)
    assert info.rf.size == (435.0, 435.0)  # the textbook receptive field of ResNet-18's last stage
