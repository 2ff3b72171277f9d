"""Gram matrices, style / content losses, default layers, original colours (texture and style transfer)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import convlens
from convlens.core.objectives import Recorded
from convlens.synthesize.style import keep_colors, rgb_to_yuv, style_transfer, yuv_to_rgb
from convlens.synthesize.texture import (
    GramTargets,
    content_layer,
    features,
    gram,
    gram_loss,
    style_layers,
    synthesize_texture,
)


def test_gram_equals_naive_double_loop() -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    n, c, h, w = f.shape
    naive = torch.zeros(n, c, c, dtype=torch.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                naive[b, i, j] = sum(f[b, i, y, x] * f[b, j, y, x] for y in range(h) for x in range(w))
    torch.testing.assert_close(gram(f, normalize="none"), naive)
    torch.testing.assert_close(gram(f), naive / (h * w))
    # the paper's E_l = 1/(4 N^2 M^2) sum (G - A)^2, by hand for one pair
    a = torch.randn(c, c, dtype=torch.float64)
    e = ((naive[0] - a) ** 2).sum() / (4 * c * c * (h * w) ** 2)
    torch.testing.assert_close(gram_loss(naive[:1], a, scale="gatys", m=h * w)[0], e)


def test_gram_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gram(torch.zeros(3, 4))


def test_style_loss_zero_for_style_itself_and_invariant_to_shuffling(tiny: convlens.Model) -> None:
    torch.manual_seed(1)
    style = torch.rand(1, 3, 32, 32)
    layers = ["conv1", "act2", "conv3"]
    targets = GramTargets.from_images(tiny, [style], layers)
    feats = features(tiny, style, layers)
    assert float(targets.loss(feats)) < 1e-10
    # shuffling feature positions (the same permutation for every channel) leaves every Gram unchanged
    shuffled = {}
    for name, f in feats.items():
        flat = f.flatten(2)
        perm = torch.randperm(flat.shape[-1])
        shuffled[name] = flat[..., perm].reshape(f.shape)
    assert float(targets.loss(shuffled)) < 1e-10
    # ... but another image is far from it, and the core objective agrees with the direct loss
    other = features(tiny, torch.rand(1, 3, 32, 32) * 0.3, layers)
    direct = targets.loss(other)
    assert float(direct) > 1e-3
    torch.testing.assert_close(targets.objective()(Recorded(acts=other)), direct)


def test_blended_targets_are_weighted_grams(tiny: convlens.Model) -> None:
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 0.5
    t = GramTargets.from_images(tiny, [a, b], ["conv2"], weights=[3, 1])
    ga = gram(features(tiny, a, ["conv2"])["conv2"])[0]
    gb = gram(features(tiny, b, ["conv2"])["conv2"])[0]
    torch.testing.assert_close(t.grams["conv2"], 0.75 * ga + 0.25 * gb)
    with pytest.raises(convlens.UserError, match="2 style images"):
        GramTargets.from_images(tiny, [a, b], ["conv2"], weights=[1])


def test_default_layers_from_the_layer_index_give_gatys_vgg19_choice() -> None:
    import torchvision

    torch.manual_seed(0)
    vgg = convlens.Model.wrap(torchvision.models.vgg19().eval(), name="vgg19")
    # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 and relu4_2 -- computed, not listed
    assert style_layers(vgg) == ["features.1", "features.6", "features.11", "features.20", "features.29"]
    assert style_layers(vgg, pre_activation=True) == ["features.0", "features.5", "features.10", "features.19",
                                                      "features.28"]
    assert content_layer(vgg) == "features.22"


def test_default_layers_on_tiny_model(tiny: convlens.Model) -> None:
    assert style_layers(tiny) == ["act1", "act2"]
    assert style_layers(tiny, pre_activation=True) == ["conv1", "conv2"]
    assert content_layer(tiny) in tiny.layers


def test_keep_colors_keeps_content_chrominance() -> None:
    torch.manual_seed(0)
    content = 0.25 + 0.5 * torch.rand(1, 3, 16, 16)
    stylized = 0.3 + 0.4 * torch.rand(1, 3, 16, 16)
    out = keep_colors(stylized, content)
    torch.testing.assert_close(rgb_to_yuv(out)[:, 1:], rgb_to_yuv(content)[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb_to_yuv(out)[:, :1], rgb_to_yuv(stylized)[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(yuv_to_rgb(rgb_to_yuv(content)), content, atol=1e-6, rtol=0)


def test_original_colors_mode_of_style_transfer(tiny: convlens.Model) -> None:
    torch.manual_seed(0)
    content = 0.3 + 0.4 * torch.rand(1, 3, 32, 32)
    style = torch.rand(1, 3, 32, 32)
    res = style_transfer(tiny, content, [style], size=None, steps=4, original_colors=True, init="content")
    uv_out, uv_in = rgb_to_yuv(res.image)[:, 1:], rgb_to_yuv(content)[:, 1:]
    inside = ((res.image > 0.002) & (res.image < 0.998)).all(1, keepdim=True).expand_as(uv_out)
    assert inside.float().mean() > 0.9
    # 8-bit-free float output: chrominance equal where nothing was clipped
    assert (uv_out - uv_in)[inside].abs().max() < 1e-4


def test_style_transfer_lowers_losses_and_reports_them(tiny: convlens.Model) -> None:
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 40) ** 2
    res = style_transfer(tiny, content, [style, style.flip(-1)], style_weights=[0.5, 0.5], size=None, steps=15,
                         seed=0)
    assert res.image.shape == (1, 3, 32, 32)
    assert 0 <= float(res.image.min()) and float(res.image.max()) <= 1
    assert res.history[-1] < res.history[0]
    assert res.steps == 15 and res.seconds > 0
    for v in (res.content_loss, res.style_loss, res.tv_loss):
        assert v >= 0 and math.isfinite(v)
    same = style_transfer(tiny, content, [style, style.flip(-1)], style_weights=[0.5, 0.5], size=None, steps=15,
                          seed=0)
    torch.testing.assert_close(same.image, res.image)  # same seed, same picture


def test_coarse_to_fine_and_dream_run(tiny: convlens.Model) -> None:
    content, style = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    res = style_transfer(tiny, content, [style], size=None, steps=6, octaves=2, dream_weight=0.1)
    assert res.image.shape == (1, 3, 48, 48) and res.steps >= 6


def test_texture_of_larger_size_matches_better_than_its_start(tiny: convlens.Model) -> None:
    torch.manual_seed(0)
    sample = torch.rand(1, 3, 24, 24)
    res = synthesize_texture(tiny, sample, size=(48, 40), steps=20, sample_size=None)
    assert res.image.shape == (1, 3, 48, 40)
    # history holds the core loop's last evaluation per step (a line-search trial can be large); the final
    # image's own loss is what must have dropped
    assert res.style_loss < 0.9 * res.history[0]


def test_unknown_layer_is_a_user_error(tiny: convlens.Model) -> None:
    with pytest.raises(convlens.UserError, match="unknown layer"):
        synthesize_texture(tiny, torch.rand(1, 3, 24, 24), layers=["conv9"], steps=1)
    with pytest.raises(convlens.UserError, match="init"):
        style_transfer(tiny, torch.rand(1, 3, 24, 24), [torch.rand(1, 3, 24, 24)], init="photo")


def test_tiny_model_is_left_unchanged(tiny: convlens.Model, tiny_module: nn.Module) -> None:
    before = {k: v.clone() for k, v in tiny_module.state_dict().items()}
    style_transfer(tiny, torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], size=None, steps=2)
    for k, v in tiny_module.state_dict().items():
        assert torch.equal(v, before[k])
    for m in tiny_module.modules():
        assert not m._forward_hooks


def test_regularity_finds_the_period_of_stripes_and_scores_noise_low() -> None:
    from convlens.synthesize.texture import regularity, regularity_score

    xs = torch.arange(64, dtype=torch.float32)
    stripes = (0.5 + 0.4 * torch.cos(2 * math.pi * xs / 8))[None, None, None, :].expand(1, 3, 48, 64)
    reg = regularity(stripes)
    assert abs(reg.period - 8) < 0.01 and abs(reg.angle) < 1e-6  # vertical stripes: f along x
    assert regularity_score(stripes, stripes) == pytest.approx(1.0)
    big = (0.5 + 0.4 * torch.cos(2 * math.pi * torch.arange(128.0) / 8))[None, None, None, :].expand(1, 3, 96, 128)
    assert regularity_score(stripes, big) > 0.8  # any size: frequencies in cycles per pixel
    assert regularity_score(stripes, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))) < 0.2


def test_spectrum_constraint_keeps_the_period(tiny: convlens.Model) -> None:
    from convlens.synthesize.texture import regularity_score

    xs = torch.arange(32, dtype=torch.float32)
    sample = (0.5 + 0.4 * torch.cos(2 * math.pi * xs / 8))[None, None, None, :].expand(1, 3, 32, 32).contiguous()
    kept = synthesize_texture(tiny, sample, size=(48, 48), steps=20, sample_size=None, spectrum_weight=1.0)
    plain = synthesize_texture(tiny, sample, size=(48, 48), steps=20, sample_size=None, spectrum_weight=0.0)
    assert torch.isfinite(plain.image).all()  # its L-BFGS diverges at full size: the loop keeps the last finite image
    assert regularity_score(sample, kept.image) > regularity_score(sample, plain.image) + 0.1


def test_coarse_to_fine_texture_runs_all_steps_at_the_output_size(tiny: convlens.Model) -> None:
    sample = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = synthesize_texture(tiny, sample, size=(40, 48), steps=9, sample_size=None, octaves=2)
    assert res.image.shape == (1, 3, 40, 48) and res.steps == 9  # 3 at half size, 6 at full size
    with pytest.raises(convlens.UserError, match="octaves"):
        synthesize_texture(tiny, sample, steps=1, octaves=0)


@pytest.fixture(scope="module")
def tubingen_starry(sample_dir):
    from convlens.images import load_image, to_pixels

    data = sample_dir.parent
    return tuple(to_pixels(load_image(data / d / f))[None] for d, f in
                 (("content", "tubingen.jpg"), ("styles", "starry_night.jpg")))


@pytest.mark.parametrize("knob", ["style_scale", "dream_weight"])
def test_style_knobs_change_the_output_visibly(lite0: convlens.Model, tubingen_starry, one_thread, knob: str) -> None:
    """The embedded model at 128 px, 30 steps (about 1 s a run). ``style_scale=2`` paints a coarse level first with
    the painting at scale 1: the output moves > 0.02 from the default (0.038; a magnified painting alone, the code
    before, moved it 0.013). ``dream_weight=0.1`` acts on DeepDream's own layer in style-weight units: that layer's
    energy rises > 1.5x (3.8x; the content-layer term before, 1.04x)."""
    from convlens.synthesize.dream import default_dream_layer

    content, style = tubingen_starry
    base = style_transfer(lite0, content, [style], size=128, steps=30, seed=0).image
    if knob == "style_scale":
        other = style_transfer(lite0, content, [style], size=128, steps=30, seed=0, style_scale=2.0).image
        assert float((other - base).abs().mean()) > 0.02  # five grey levels on average
    else:
        other = style_transfer(lite0, content, [style], size=128, steps=30, seed=0, dream_weight=0.1).image
        dl = default_dream_layer(lite0)
        energy = [float(features(lite0, im, [dl])[dl].float().pow(2).mean()) for im in (base, other)]
        assert energy[1] > 1.5 * energy[0]


def test_style_print_option_sizes_the_output_for_the_paper(tmp_path) -> None:
    import json

    from click.testing import CliRunner
    from PIL import Image

    from convlens.cli import main
    from convlens.images import to_pil

    for name in ("c", "s"):
        to_pil(torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(1))).save(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["style", str(tmp_path / "c.png"), str(tmp_path / "s.png"),
                                    "--print", "A6", "--dpi", "20", "--steps", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())
    side = round(148 / 25.4 * 20)  # A6's longer side, 148 mm, at 20 dots per inch
    assert max(doc["size"]) == side and doc["print"] == "A6" and doc["dpi"] == 20
    img = Image.open(out / "stylized.png")
    assert max(img.size) == side and round(img.info["dpi"][0]) == 20
