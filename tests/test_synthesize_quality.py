"""Properties of the visualizations, not just their shapes: the Yosinski preset makes images with contrast that
another network recognises, and multifaceted facets differ more from each other than restarts of one facet."""

from __future__ import annotations

import pytest
import torch

import convlens
from convlens.synthesize import judge_probs, multifaceted, visualize_class

pytestmark = pytest.mark.usefixtures("one_thread")


def test_yosinski_preset_is_not_grey(lite0) -> None:
    # the old preset (Adam steps that the blur took away again) left std 6.8/255 here (8/255 at 224 px); now 13
    res = visualize_class(lite0, [0], preset="yosinski", size=96, steps=60, seed=0)
    assert float(res.images.std()) > 10 / 255


def test_yosinski_preset_is_recognised_by_another_network(lite0, chelsea) -> None:
    cls = int(lite0(lite0.load(chelsea)).argmax())  # the model's class for the tour's main photo
    res = visualize_class(lite0, [cls], preset="yosinski", size=160, steps=200, seed=0)
    judge = convlens.load_model("efficientnet_lite1")
    assert judge_probs(judge, res.images, [cls])[0] > 0.1  # tiger cat: 0.41; the old preset: 0.024


def test_facets_differ_more_than_restarts(tiny) -> None:
    gen = torch.Generator().manual_seed(0)
    dark = torch.rand(6, 3, 32, 32, generator=gen) * 0.3
    bright = 0.7 + torch.rand(6, 3, 32, 32, generator=gen) * 0.3
    out = multifaceted(tiny, 2, torch.cat([dark, bright]), k=2, layer="conv4", preset="yosinski", steps=20,
                       restarts=1)
    assert len(out.restarts) == 1 and out.restart_distance is not None
    assert out.facet_distance > 3 * out.restart_distance


def test_facets_of_a_concept_target_their_own_class() -> None:
    # a net whose logits are the mean of each colour channel: photos of red, green and blue things form three
    # clusters, and with target=None each facet maximises its own cluster's class (red 0, green 1, blue 2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(3, 3))
    with torch.no_grad():
        for layer in (net[0], net[3]):
            layer.weight.copy_(torch.eye(3).view_as(layer.weight))
            layer.bias.zero_()
    model = convlens.Model.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=16, labels=["r", "g", "b"])
    gen = torch.Generator().manual_seed(0)
    x = 0.2 * torch.rand(12, 3, 16, 16, generator=gen)
    for c in range(3):
        x[4 * c:4 * c + 4, c] += 0.7
    out = multifaceted(model, None, x, k=3, layer="0", nearest=3, preset="yosinski", steps=2)
    assert sorted(out.targets) == [0, 1, 2]
    assert all(out.targets[int(out.assignments[4 * c])] == c for c in range(3))
    assert multifaceted(model, "g", x, k=3, layer="0", preset="yosinski", steps=2).targets == [1, 1, 1]


def test_decay_and_clipping_pull_towards_an_image() -> None:
    from convlens.core.transforms import ClipNorm, Decay

    gen = torch.Generator().manual_seed(0)
    c, x = torch.rand(2, 3, 4, 4, generator=gen), torch.rand(2, 3, 4, 4, generator=gen)
    y = x.clone()
    Decay(0.25, c)(y, None, 0)
    assert torch.allclose(y, c + 0.75 * (x - c))
    ClipNorm(100.0, c)(y, None, 0)  # every pixel is at or below the 100th percentile of its distance to c
    assert torch.equal(y, c)
