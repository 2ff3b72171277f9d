"""No library call changes the caller's torch RNG: randomness comes from ``seed=`` / ``generator=`` arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convlens
from convlens.attribute import deconvnet, grad_cam, guided_backprop, integrated_gradients, occlusion, smoothgrad
from convlens.read.embedding import pca
from convlens.runtime import private_rng


def _calls(tiny):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    from convlens.adversarial import fool, pgd
    from convlens.synthesize import dream, invert
    from convlens.synthesize.fast_style import FastStyleConfig, train_fast_style

    return {
        "pca": lambda: pca(np.random.default_rng(0).normal(size=(60, 40)).astype(np.float32), 5, seed=1),
        "guided": lambda: guided_backprop(tiny, x, 1),
        "deconv": lambda: deconvnet(tiny, x, 1),
        "smoothgrad": lambda: smoothgrad(tiny, x, 1, samples=3, generator=torch.Generator().manual_seed(1)),
        "integrated": lambda: integrated_gradients(tiny, x, 1, steps=4),
        "gradcam": lambda: grad_cam(tiny, x, 1),
        "occlusion": lambda: occlusion(tiny, x, 1, window=16, stride=16),
        "pgd": lambda: pgd(tiny, x, 1, steps=2, generator=torch.Generator().manual_seed(2)),
        "fool": lambda: fool(tiny, x, 2, max_steps=2),
        "dream": lambda: dream(tiny, x[:1], layer="conv3", octaves=1, steps=2, max_side=None),
        "invert": lambda: invert(tiny, x[:1], "conv2", steps=2),
        "fast_style": lambda: train_fast_style(tiny, [x[:1]], [convlens.images.to_pil(x[1])] * 2,
                                               config=FastStyleConfig(styles=["s"], size=32, style_size=32,
                                                                      batch_size=1, width=4, blocks=1),
                                               steps=1),
    }


NAMES = ["pca", "guided", "deconv", "smoothgrad", "integrated", "gradcam", "occlusion", "pgd", "fool", "dream",
         "invert", "fast_style"]


@pytest.mark.parametrize("name", NAMES)
def test_library_call_leaves_the_callers_rng_alone(tiny, name):
    call = _calls(tiny)[name]
    torch.manual_seed(1234)
    before = torch.random.get_rng_state().clone()
    call()
    assert torch.equal(torch.random.get_rng_state(), before), f"{name} changed the global torch RNG"


def test_private_rng_is_seeded_and_private():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with private_rng(0):
        a = torch.rand(2)
    with private_rng(0):
        b = torch.rand(2)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), expected)


def test_pca_is_reproducible():
    codes = np.random.default_rng(0).normal(size=(80, 60)).astype(np.float32)
    np.testing.assert_array_equal(pca(codes, 5, seed=3), pca(codes, 5, seed=3))


def test_run_tour_leaves_the_callers_rng_alone(tiny, tmp_path):
    from convlens.show.tour import run_tour

    torch.manual_seed(99)
    before = torch.random.get_rng_state().clone()
    report = run_tour(tiny, tmp_path, only=["model", "predictions"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert any(r.status == "ok" for r in report.sections)
