"""Issue 13: the spectrum constraint must not ask for the jump between a sample's opposite edges (a dark strip)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convlens.synthesize.texture import SpectrumMatch, periodic_component


def _axis_share(amp: torch.Tensor) -> float:
    """Share of the (unshifted) spectra's energy ``(..., H, W)`` on the two frequency axes, DC excluded."""
    p = amp.pow(2).clone()
    p[..., 0, 0] = 0
    return float((p[..., 0, :].sum() + p[..., :, 0].sum()) / p.sum())


def test_spectrum_target_has_no_edge_cross() -> None:
    gen = torch.Generator().manual_seed(0)
    h = w = 64
    noise = 0.2 * torch.rand(1, 3, h, w, generator=gen)
    ramp = torch.linspace(0, 0.6, w)[None, None, None, :] + torch.linspace(0, 0.2, h)[None, None, :, None]
    sample = (noise + ramp).clamp(0, 1)  # a texture lit from one side: its right and bottom edges are brighter
    share = _axis_share(SpectrumMatch(sample).target(h, w))
    assert share < 0.1, share  # the raw spectrum puts ~90% of its energy on the axes (the edge jump)
    assert _axis_share(SpectrumMatch(noise).target(h, w)) < 0.1


def test_periodic_component_solves_moisans_equation() -> None:
    u = torch.rand(2, 20, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    p = periodic_component(u)
    lap_per = sum(torch.roll(p, s, d) for s in (1, -1) for d in (-2, -1)) - 4 * p
    q = F.pad(u[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    lap_free = q[:, :-2, 1:-1] + q[:, 2:, 1:-1] + q[:, 1:-1, :-2] + q[:, 1:-1, 2:] - 4 * u
    assert torch.allclose(lap_per, lap_free, atol=1e-10)
    assert torch.allclose(p.mean((-2, -1)), u.mean((-2, -1)))
    assert (p[..., 0, :] - p[..., -1, :]).abs().mean() < (u[..., 0, :] - u[..., -1, :]).abs().mean()


def test_coarse_levels_follow_the_sample_size() -> None:
    import convlens
    from convlens.synthesize.texture import coarse_levels, style_layers

    model = convlens.load_model("efficientnet_lite0")
    layers = style_layers(model, pre_activation=True)  # deepest at stride 32: a level needs 128 px
    assert [coarse_levels(model, torch.zeros(1, 3, s, s), layers) for s in (64, 128, 255, 256, 512)] == [1, 1, 1, 2, 3]
    assert coarse_levels(model, torch.zeros(1, 3, 256, 400), layers[:2]) == 5  # stride 4: 256, 128, 64, 32, 16 px
