"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading parameter randomisation and label
randomisation on tiny nets (what they do, that the user's model is left alone) and the paper's finding on the
embedded model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from convlens.attribute.sanity import (
    cascading_randomization,
    label_randomization,
    randomization_groups,
    randomize,
    rank_correlation,
    ssim,
)
from convlens.cli import main
from convlens.errors import UserError


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_similarity_measures() -> None:
    a = torch.arange(64.0).view(1, 8, 8)
    assert rank_correlation(a, a)[0] == pytest.approx(1.0)
    assert rank_correlation(a, -a)[0] == pytest.approx(-1.0)
    assert rank_correlation(a, torch.ones_like(a))[0] == 0.0  # a constant map ranks nothing
    assert rank_correlation(a, a ** 3)[0] == pytest.approx(1.0)  # ranks only: any increasing transform
    assert ssim(a, 5 * a + 2)[0] == pytest.approx(1.0)  # scaled to [0, 1] first
    noise = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert ssim(a, noise)[0] < 0.5


def test_groups_run_from_the_output_down(tiny) -> None:
    groups = randomization_groups(tiny)
    assert groups[0] == "fc" and groups[-1] == "conv1"
    assert groups == ["fc", "conv4", "conv3", "conv2", "conv1"]


def test_randomize_redraws_and_keeps_scale(tiny) -> None:
    conv = tiny.module.conv2
    before = conv.weight.detach().clone()
    clone = torch.nn.Conv2d(6, 8, 3)
    clone.load_state_dict(conv.state_dict())
    randomize(clone, torch.Generator().manual_seed(0))
    assert not torch.allclose(clone.weight, before)
    assert float(clone.weight.std()) == pytest.approx(float(before.std()), rel=0.3)
    assert torch.equal(conv.weight, before)  # only the module given is touched


def test_cascading_randomisation_destroys_the_gradient_and_leaves_the_model(tiny, images) -> None:
    state = _state(tiny)
    flags = [p.requires_grad for p in tiny.module.parameters()]
    res = cascading_randomization(tiny, images, ["gradient", "gradcam"], target=1, seed=0)
    assert res.steps == ["trained", "fc", "conv4", "conv3", "conv2", "conv1"]
    for m in ("gradient", "gradcam"):
        assert res.spearman[m].shape == (6, 3) and res.ssim[m].shape == (6, 3)
        np.testing.assert_allclose(res.spearman[m][0], 1.0)
        np.testing.assert_allclose(res.ssim[m][0], 1.0)
        assert res.mean(m)[-1] < 0.6, (m, res.mean(m))  # every layer random: the map is unrelated
    assert res.maps["gradient"].shape == (6, 3, 32, 32)
    # the user's model: same parameters, same flags, and its maps did not change
    assert _same(state, _state(tiny))
    assert flags == [p.requires_grad for p in tiny.module.parameters()]
    again = cascading_randomization(tiny, images, ["gradient"], target=1, seed=0)
    np.testing.assert_allclose(again.spearman["gradient"], res.spearman["gradient"])  # seeded
    other = cascading_randomization(tiny, images, ["gradient"], target=1, seed=1)
    assert not np.allclose(other.spearman["gradient"][1:], res.spearman["gradient"][1:])
    doc = json.loads(json.dumps(res.to_dict()))
    assert doc["steps"] == res.steps and len(doc["methods"]["gradient"]["spearman_mean"]) == 6


def test_cascading_groups_given_and_unknown(tiny, images) -> None:
    res = cascading_randomization(tiny, images, ["gradient"], target=1, groups=["fc"])
    assert res.steps == ["trained", "fc"]
    with pytest.raises(UserError, match="unknown parameter group"):
        cascading_randomization(tiny, images, ["gradient"], groups=["conv9"])


def test_label_randomisation_fits_random_labels_on_a_copy(tiny, images) -> None:
    state = _state(tiny)
    with torch.no_grad():
        pred = tiny(images).argmax(-1)
    res = label_randomization(tiny, images, ["gradient", "gradcam"], seed=0, steps=300, lr=1e-2)
    labels = torch.tensor(res.parameters["random_labels"])
    assert (labels != pred).all() and res.targets == pred.tolist()  # never the model's own prediction
    assert res.parameters["fitted"] == 1.0 and res.parameters["train_steps"] < 300
    assert res.steps == ["trained", "random labels"]
    assert res.spearman["gradient"].shape == (2, 3)
    assert float(res.mean("gradient")[1]) < 0.95  # another function, another map
    assert _same(state, _state(tiny))  # the training happened on a copy
    assert all(not p.requires_grad or p.grad is None for p in tiny.module.parameters())


def test_paper_finding_on_the_embedded_model(lite0, sample_dir) -> None:
    """Adebayo et al.'s finding: with the classifier layer re-drawn, guided backprop's map is the same picture,
    while the gradient and Grad-CAM change."""
    x = lite0.load(str(sample_dir / "n01530575_brambling.JPEG"))
    res = cascading_randomization(lite0, x, ["gradient", "guided", "gradcam"], groups=["classifier"], seed=0)
    rho = {m: float(res.mean(m)[1]) for m in res.methods}
    assert rho["guided"] > 0.95, rho
    assert rho["gradient"] < 0.8 and rho["gradcam"] < 0.8, rho


@pytest.mark.slow
def test_sanity_command(tmp_path, sample_dir) -> None:
    photo = str(sample_dir / "n01530575_brambling.JPEG")
    res = CliRunner().invoke(main, ["sanity-check", photo, "--methods", "gradient,guided", "--groups",
                                    "classifier,conv_head", "--labels", "--train-steps", "5", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "result.json").read_text())["sanity"]
    assert doc["cascading"]["steps"] == ["trained", "classifier", "conv_head"]
    assert set(doc["labels"]["methods"]) == {"gradient", "guided"}
    for f in ("sanity.png", "sanity_maps.png", "label_maps.png"):
        assert (tmp_path / f).is_file()
    bad = CliRunner().invoke(main, ["sanity-check", photo, "--methods", "nosuch", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "unknown method" in str(bad.exception)


def test_a_constant_trained_map_is_reported(tiny, images) -> None:
    """Grad-CAM of class 0 on this tiny net is zero everywhere: equal to itself (1), and flagged."""
    res = cascading_randomization(tiny, images, ["gradcam"], target=0, groups=["fc"])
    np.testing.assert_allclose(res.spearman["gradcam"][0], 1.0)
    assert res.parameters["constant_trained_maps"] == {"gradcam": 3}
