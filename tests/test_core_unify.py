"""One core piece per concept: the empirical receptive field is occlusion of a unit; the layer picker by stage."""

from __future__ import annotations

import numpy as np
import torch

from convlens.core.taps import activations
from convlens.read.receptive_field import empirical_receptive_field


def test_empirical_rf_map_is_the_hand_computed_discrepancy(tiny):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rf = empirical_receptive_field(tiny, x, "conv3", 2, units=[(7, 9)], occluder=5, stride=2, seed=3)
    noise = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(3))
    a0 = float(activations(tiny, x, "conv3")["conv3"][0, 2, 7, 9])
    x0, y0, x1, y1 = tiny.layers["conv3"].rf.unclipped(7, 9)
    acc, cnt = np.zeros((32, 32)), np.zeros((32, 32))
    for t in range(max(0, y0 - 2), min(32 - 5, y1 - 2) + 1, 2):
        for le in range(max(0, x0 - 2), min(32 - 5, x1 - 2) + 1, 2):
            occ = x.clone()
            occ[0, :, t:t + 5, le:le + 5] = noise
            d = abs(float(activations(tiny, occ, "conv3")["conv3"][0, 2, 7, 9]) - a0)
            acc[t:t + 5, le:le + 5] += d
            cnt[t:t + 5, le:le + 5] += 1
    expected = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    np.testing.assert_allclose(rf.maps[0], expected, rtol=1e-4, atol=1e-6)


def test_layer_picker_by_stage_on_several_families(lite0):
    import timm
    import torchvision

    import convlens
    from convlens.show.microscope import default_layers
    from convlens.synthesize import default_dream_layer, default_invert_layers

    assert lite0.layers.stages() == [f"blocks.{i}" for i in range(7)]
    assert default_dream_layer(lite0) == "blocks.4" and default_layers(lite0) == ["blocks.1.1.bn2", "blocks.3.2.bn2",
                                                                                     "blocks.5.3.bn2"]
    assert default_invert_layers(lite0)[0] == "bn1"
    r18 = convlens.Model.wrap(torchvision.models.resnet18(), size=64)
    assert r18.layers.stages() == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert r18.layers.stem() == "relu" and default_dream_layer(r18) == "layer3.1"
    cnx = convlens.Model.wrap(timm.create_model("convnext_atto"), size=64)
    assert cnx.layers.stem() == "stem" and cnx.layers.stages() == [f"stages.{i}" for i in range(4)]
    flat = convlens.Model.wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), size=16)
    assert flat.layers.stages() == ["0", "1"]


def test_grabcut_on_a_flat_map_is_one_clear_error():
    import pytest

    from convlens import UserError
    from convlens.attribute import grabcut

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for flat in (torch.zeros(1, 32, 32), torch.full((1, 32, 32), 3.0), torch.full((1, 32, 32), float("nan"))):
        with pytest.raises(UserError, match="saliency map 0"):
            grabcut(x, flat)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32).expand(1, 32, 32)
    assert grabcut(x, ramp).masks.shape == (1, 32, 32)
