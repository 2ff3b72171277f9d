"""The fooling image: it stops at the first step that reaches the target, inside its eps-ball; one real photo."""

from __future__ import annotations

import pytest
import torch

from convlens.adversarial import fool


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, 24, 24), generator=g).float() / 255


def test_stops_at_the_first_step_that_reaches_the_target(tiny) -> None:
    x = _image()
    target = 0  # the tiny random net's top class at p = 0.26: a handful of steps lift it to 0.3
    r = fool(tiny, x, target, eps=None, alpha=8 / 255, max_steps=50, confidence=0.3)
    s = int(r.steps[0])
    assert bool(r.success[0]) and s >= 2
    assert r.target[0].index == target and r.target[0].prob >= 0.3
    # the probability history: below the threshold before step s, reached at step s, nothing recorded after
    assert r.history.shape[0] == s + 1
    assert float(r.history[s, 0]) >= 0.3 and not bool(torch.isnan(r.history[:, 0]).any())
    # one step fewer is not enough; exactly s steps give the very same image
    short = fool(tiny, x, target, eps=None, alpha=8 / 255, max_steps=s - 1, confidence=0.3)
    assert not bool(short.success[0]) and int(short.steps[0]) == s - 1
    exact = fool(tiny, x, target, eps=None, alpha=8 / 255, max_steps=s, confidence=0.3)
    assert bool(exact.success[0]) and torch.equal(exact.adversarial, r.adversarial)
    with torch.no_grad():
        p = tiny(short.adversarial).softmax(1)[0]
    assert int(p.argmax()) != target or float(p[target]) < 0.3


def test_already_fooled_image_takes_zero_steps(tiny) -> None:
    x = _image(1)
    with torch.no_grad():
        top = int(tiny(x).argmax(1))
    r = fool(tiny, x, top, confidence=0.01)
    assert int(r.steps[0]) == 0 and torch.equal(r.adversarial, x)


def test_bounded_fooling_respects_eps_and_box_per_image(tiny) -> None:
    x = torch.cat([_image(i) for i in range(4)])
    eps = 6 / 255
    r = fool(tiny, x, torch.tensor([0, 1, 2, 3]), eps=eps, alpha=1 / 255, max_steps=15, confidence=0.5)
    assert bool(((r.adversarial - x).abs() <= eps).all())
    assert float(r.adversarial.min()) >= 0 and float(r.adversarial.max()) <= 1
    assert torch.allclose(r.linf, (r.adversarial - x).flatten(1).abs().amax(1))
    # batched == one at a time (each image stops on its own)
    one = fool(tiny, x[2:3], 2, eps=eps, alpha=1 / 255, max_steps=15, confidence=0.5)
    assert int(one.steps[0]) == int(r.steps[2])
    assert torch.allclose(one.adversarial[0], r.adversarial[2], atol=1e-6)


@pytest.mark.slow
def test_real_photo_to_koala_under_8_of_255(lite0, chelsea) -> None:
    x = lite0.load(chelsea)
    r = fool(lite0, x, lite0.class_index("koala"), eps=8 / 255, max_steps=60)
    assert bool(r.success[0]) and r.target[0].prob >= 0.5
    assert float(r.linf[0]) < 8 / 255
    assert r.original[0].label != "koala"
