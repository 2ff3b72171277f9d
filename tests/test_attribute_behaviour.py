"""Behaviour on real photos with the embedded model: occlusion finds the object, GrabCut cuts it out."""

from __future__ import annotations

import pytest
import torch

from convlens.attribute import deletion_insertion, grabcut, grad_cam, occlusion, saliency
from convlens.images import to_pixels

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cat(chelsea) -> torch.Tensor:
    """Chelsea, uncropped, 200 x 300 (non-square): the face in the middle, background on the right."""
    return to_pixels(chelsea.resize((300, 200))).unsqueeze(0)


CAT_BOX = (50, 170, 70, 240)  # y0, y1, x0, x1: eyes and nose
CORNER = (0, 60, 240, 300)  # background, top right


def _mean(m: torch.Tensor, box: tuple[int, int, int, int]) -> float:
    y0, y1, x0, x1 = box
    return float(m[y0:y1, x0:x1].mean())


def test_occluding_the_cat_hurts_more_than_a_corner(lite0, cat):
    t = int(lite0(cat).argmax())
    assert 281 <= t <= 285  # a cat class
    m = occlusion(lite0, cat, t, window=48, stride=24)[0]
    assert m.shape == (200, 300)
    assert _mean(m, CAT_BOX) > _mean(m, CORNER) + 0.01


def test_occlusion_singles_out_a_small_object(lite0, sample_dir):
    """The tennis ball lies at the bottom of a photo of a terrier; explaining 'tennis ball' must point at it."""
    x = lite0.load(sample_dir / "n04409515_tennis_ball.JPEG")
    m = occlusion(lite0, x, 852, window=48, stride=24)[0]
    ball = (145, 220, 105, 180)
    inside = _mean(m, ball)
    outside = (float(m.sum()) - inside * 75 * 75) / (224 * 224 - 75 * 75)
    assert inside > 3 * max(outside, 1e-4)
    y, x_ = divmod(int(m.argmax()), 224)
    assert 145 - 24 <= y < 220 and 105 - 24 <= x_ < 180 + 24


def test_grabcut_mask_covers_the_cat(lite0, cat):
    t = int(lite0(cat).argmax())
    seg = grabcut(cat, grad_cam(lite0, cat, t))
    mask = seg.masks[0].float()
    assert _mean(mask, CAT_BOX) > 0.7
    assert _mean(mask, CAT_BOX) > _mean(mask, CORNER) + 0.4
    assert 0.05 < float(seg.area[0]) < 0.95


def test_faithful_maps_beat_random_on_insertion(lite0, chelsea):
    x = lite0.load(chelsea)
    t = lite0(x).argmax(-1)
    gen = torch.Generator().manual_seed(0)
    cam = deletion_insertion(lite0, x, saliency(lite0, x, "gradcam", t), t, steps=10, generator=gen)
    rnd = deletion_insertion(lite0, x, saliency(lite0, x, "random", t, generator=gen), t, steps=10, generator=gen)
    assert cam.insertion_auc[0] > rnd.insertion_auc[0]
    assert 0 <= float(cam.deletion_auc[0]) <= 1 and cam.deletion.shape == (1, 11)


def test_greedy_insertion_reveals_the_ball_first_and_earns_its_insertion(lite0, sample_dir):
    """Explaining 'tennis ball' on the terrier photo: most of the first 10 % the search reveals lie on the ball, and its
    insertion curve rises at least as fast as guided Grad-CAM's (the search's prior, which it returns when no
    search beats it)."""
    x = lite0.load(sample_dir / "n04409515_tennis_ball.JPEG")
    m = saliency(lite0, x, "greedy", 852)[0]
    first = m >= torch.quantile(m.flatten(), 0.9)  # the first 10 % revealed
    assert float(first[145 - 16:220 + 16, 105 - 16:180 + 16].sum()) > 0.5 * float(first.sum())
    t = torch.tensor([852])
    prior = saliency(lite0, x, "guided_gradcam", t)
    gen = torch.Generator().manual_seed(0)
    ours = deletion_insertion(lite0, x, m[None], t, steps=20, generator=gen)
    base = deletion_insertion(lite0, x, prior, t, steps=20, generator=gen)
    assert float(ours.insertion_auc[0]) >= float(base.insertion_auc[0]) - 1e-6
