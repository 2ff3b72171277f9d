"""Class / unit / multifaceted visualization, DeepDream and inversion on tiny CNNs; the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import convlens
from convlens.cli import main
from convlens.core import evaluate, layer_norm
from convlens.errors import UserError
from convlens.synthesize import (
    PRESETS,
    default_invert_layers,
    dream,
    invert,
    judge_probs,
    multifaceted,
    preset,
    visualize_class,
    visualize_unit,
)
from convlens.synthesize.visualize import kmeans, quantize

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_raises_its_class_score(tiny, name) -> None:
    x0 = torch.full((2, 3, 32, 32), 0.5)
    from convlens.core import class_logit
    before = evaluate(tiny, class_logit([1, 3]), x0)
    res = visualize_class(tiny, ["class1", 3], preset=name, steps=12, seed=0)
    assert res.images.shape == (2, 3, 32, 32)
    assert torch.all(res.values > before)
    assert res.images.min() >= 0 and res.images.max() <= 1


def test_preset_overrides_and_unknown_names(tiny) -> None:
    assert preset("lucid", steps=7).steps == 7 and preset("lucid", steps=None).steps == PRESETS["lucid"].steps
    with pytest.raises(UserError, match="unknown preset"):
        preset("magic")
    with pytest.raises(UserError, match="ambiguous"):
        visualize_class(tiny, "class", steps=1)
    with pytest.raises(UserError, match="channels 0-7"):
        visualize_unit(tiny, "conv3", [1, 8], steps=1)
    with pytest.raises(UserError, match="unknown layer"):
        visualize_unit(tiny, "conv33", 1, steps=1)


def test_unit_visualization_neuron_and_channel(tiny) -> None:
    res = visualize_unit(tiny, "conv2", [0, 3], position=(4, 5), preset="simonyan", steps=5, lr=0.05)
    assert res.images.shape[0] == 2 and "neuron('conv2', [0, 3], y=4, x=5)" in res.objective


def test_judge_probs_sees_the_8bit_image(tiny) -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    p = judge_probs(tiny, x, [0, 4])
    with torch.no_grad():
        ref = tiny(quantize(x)).softmax(-1)
    assert p == pytest.approx([float(ref[0, 0]), float(ref[1, 4])], abs=1e-6)


def test_kmeans_finds_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(10, 3, generator=gen) * 0.1
    b = torch.randn(7, 3, generator=gen) * 0.1 + 5
    assign, _ = kmeans(torch.cat([a, b]), 2, seed=0)
    assert len(set(assign[:10].tolist())) == 1 and len(set(assign[10:].tolist())) == 1
    assert assign[0] != assign[10]
    with pytest.raises(UserError):
        kmeans(a, 11)


def test_multifaceted_one_facet_per_cluster(tiny) -> None:
    gen = torch.Generator().manual_seed(0)
    dark = torch.rand(5, 3, 32, 32, generator=gen) * 0.2
    bright = 0.8 + torch.rand(4, 3, 32, 32, generator=gen) * 0.2
    out = multifaceted(tiny, 2, torch.cat([dark, bright]), k=2, layer="conv4", steps=3, preset="simonyan")
    assert out.sizes == [5, 4] and out.assignments.tolist() == [0] * 5 + [1] * 4
    assert out.result.images.shape == (2, 3, 32, 32)
    mean = dark.mean(0)  # the start: the mean with one photo's contrast (its spread scaled to the photos' std)
    avg = mean.mean((1, 2), keepdim=True)
    gain = dark.std((2, 3), correction=0).mean() / (mean - avg).pow(2).mean().sqrt()
    assert gain > 2 and torch.allclose(out.starts[0], (avg + gain * (mean - avg)).clamp(0, 1), atol=1e-6)
    one = multifaceted(tiny, 2, torch.cat([dark, bright]), k=2, layer="conv4", nearest=1, steps=1, preset="simonyan")
    assert float((one.starts[1] - bright).abs().flatten(1).amax(1).min()) < 1e-5  # one photo starts as itself


def test_dream_grows_the_layer_and_keeps_the_photo(tiny) -> None:
    photo = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    res = dream(tiny, photo, layer="conv3", octaves=2, steps=4, jitter=4)
    assert res.images.shape == photo.shape
    assert res.values.item() > evaluate(tiny, layer_norm("conv3"), photo).item()
    small = torch.nn.functional.avg_pool2d
    assert (small(res.images, 8) - small(photo, 8)).abs().mean() < 0.05  # close to the photo at coarse scale
    guided = dream(tiny, photo, layer="conv3", octaves=1, steps=2, guide=torch.rand(1, 3, 32, 32))
    assert "layer_guide('conv3'" in guided.objective
    with pytest.raises(UserError, match="fewer octaves"):
        dream(tiny, photo, layer="conv3", octaves=8)


def test_invert_matches_the_code_far_better_than_grey(tiny) -> None:
    from convlens.core import feature_match
    from convlens.core.taps import activations
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = invert(tiny, photo, ["conv1", "conv4"], steps=60, tv=0.0, alpha_weight=0.0)
    assert set(res.errors) == {"conv1", "conv4"}
    assert res.images["conv1"].shape == photo.shape
    targets = activations(tiny, photo, ["conv1", "conv4"])
    for name, err in res.errors.items():
        grey = float(evaluate(tiny, feature_match(name, targets[name]), torch.full_like(photo, 0.5)).sqrt())
        assert err < 0.75 * grey, (name, err, grey)


def _tv(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_invert_one_recipe_loses_more_with_depth_without_colour_noise(lite0, chelsea) -> None:
    """One recipe for every layer (issue 13): the reconstruction drifts further from the photo at every deeper
    layer, the class scores last, and no layer fills the image with saturated
    high-frequency colour noise (the old Adam-with-jitter branch gave 3-4x the photo's total variation and ~8 %
    saturated pixels below the stem)."""
    x = torch.nn.functional.interpolate(lite0.load(chelsea), size=(64, 64), mode="bilinear", align_corners=False)
    names = default_invert_layers(lite0)
    assert names[0] == lite0.layers.stem() and names[-1] == lite0.layers.classifier()
    res = invert(lite0, x, names, steps=40)
    pixel = [res.pixel_errors[n] for n in names]
    assert pixel[0] == pytest.approx(float((res.images[names[0]] - x).norm() / x.norm()))
    assert pixel == sorted(pixel), dict(zip(names, pixel))
    for n in names:
        im = res.images[n]
        assert _tv(im) < 1.2 * _tv(x), n
        assert float(((im < 0.02) | (im > 0.98)).float().mean()) < 0.01, n


@pytest.fixture
def scripted(tiny_module) -> str:
    """A tiny random CNN registered in the zoo under a test name (so the CLI can load it by name)."""
    name = "test-synthesize-tiny"
    if name not in convlens.available_models():
        tiny_cnn = type(tiny_module)

        def build(weights: str | None) -> convlens.Model:
            torch.manual_seed(0)
            return convlens.Model(tiny_cnn().eval(), convlens.Preprocess(size=(32, 32), resize=36),
                                  labels=[f"class{i}" for i in range(5)], name=name)
        convlens.register(name)(build)
    return name


def test_cli_visualize_class_dream_invert(scripted, tmp_path, chelsea) -> None:
    runner = CliRunner()
    out = tmp_path / "vis"
    r = runner.invoke(main, ["visualize-class", scripted, "--class", "1,3", "--steps", "2", "--out", str(out),
                             "--judge", scripted], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "result.json").read_text())
    assert [im["class_index"] for im in doc["images"]] == [1, 3]
    for im in doc["images"]:
        assert (out / im["file"]).is_file() and 0 <= im["prob"] <= 1 and 0 <= im["judge_prob"] <= 1
        assert "objective" in im
    assert (out / "grid.png").is_file()

    photo = tmp_path / "cat.png"
    chelsea.resize((96, 64)).save(photo)
    r = runner.invoke(main, ["dream", str(photo), "--model", scripted, "--layer", "conv3", "--octaves", "2",
                             "--steps", "2", "--out", str(tmp_path / "d")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d" / "result.json").read_text())["images"][0]["file"] == "dream.png"
    r = runner.invoke(main, ["invert", str(photo), "--model", scripted, "--layers", "conv1,conv2", "--steps", "3",
                             "--out", str(tmp_path / "i")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "i" / "result.json").read_text())
    assert set(doc["errors"]) == {"conv1", "conv2"} and (tmp_path / "i" / "figure.png").is_file()


def test_cli_bad_input_is_one_line(scripted, tmp_path, capsys) -> None:
    from convlens.cli import run
    for args in (["visualize-unit", scripted, "--layer", "conv3", "--channels", "0-9"],
                 ["visualize-class", scripted, "--class", "class"],
                 ["dream", str(tmp_path / "missing.jpg"), "--model", scripted]):
        import sys
        sys.argv = ["convlens", *args, "--steps", "1", "--out", str(tmp_path)]
        with pytest.raises(SystemExit) as exc:
            run()
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("convlens: error:") and err.count("\n") == 1
