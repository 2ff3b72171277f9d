"""Objectives: gradients against finite differences, hand-computed values, algebra and repr, batch targets."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from convlens.core import (
    Recorded,
    Tap,
    alpha_norm,
    channel,
    class_logit,
    class_logprob,
    feature_match,
    gram,
    gram_match,
    l2,
    layer_guide,
    layer_norm,
    neuron,
    total_variation,
)
from convlens.core.optimize import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def _finite_difference_check(tiny, objective, x: torch.Tensor, n_dirs: int = 3) -> None:
    """Directional derivative by central differences (float64) equals the autograd gradient along it."""
    tiny.module.double()
    try:
        x = x.double().requires_grad_(True)
        layers = objective.layers

        def f(img: torch.Tensor) -> torch.Tensor:
            with Tap(tiny, layers, stop=not objective.uses_logits) if layers else _Null() as tap:
                logits = tap.run(img) if layers else tiny(img)
                acts = dict(tap.outputs) if layers else {}
            if objective.uses_logits and logits is None:
                logits = tiny(img)
            return objective(Recorded(acts, logits, img)).sum()

        g, = torch.autograd.grad(f(x), x)
        gen = torch.Generator().manual_seed(1)
        eps = 1e-5
        for _ in range(n_dirs):
            d = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            with torch.no_grad():
                fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
            analytic = (g * d).sum()
            assert torch.allclose(fd, analytic, rtol=1e-4, atol=1e-7), (objective, float(fd), float(analytic))
    finally:
        tiny.module.float()


class _Null:
    outputs: ClassVar[dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.mark.parametrize("make", [
    lambda t: class_logit(2),
    lambda t: class_logprob([1, 3]),
    lambda t: channel("conv2", [0, 5]),
    lambda t: neuron("conv3", 4, 3, 5),
    lambda t: layer_norm("conv4"),
    lambda t: feature_match("conv2", t["conv2"]),
    lambda t: gram_match({"conv1": gram(t["conv1"]), "conv3": gram(t["conv3"])}, weights={"conv3": 0.5}),
    lambda t: layer_guide("conv3", t["conv3"][0]),
    lambda t: l2() + total_variation(beta=2) + total_variation(beta=1.5) + alpha_norm(3),
    lambda t: class_logit(1) - 0.3 * total_variation() + 2 * channel("conv1", 2),
])
def test_gradient_matches_finite_differences(tiny, make) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 0.8 + 0.1
    y = torch.rand(1, 3, 16, 16, generator=gen)
    with torch.no_grad(), Tap(tiny, ["conv1", "conv2", "conv3"], detach=True) as tap:
        tap.run(y)
        targets = dict(tap.outputs)
    _finite_difference_check(tiny, make(targets), x)


def test_hand_computed_values() -> None:
    acts = {"a": torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)}
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    img = torch.full((1, 3, 4, 4), 0.5)
    img[0, :, :, 2:] = 1.0  # a vertical edge of height 0.5 between columns 1 and 2
    rec = Recorded(acts, logits, img)
    assert class_logit([2, 0])(rec).tolist() == [3.0, 0.0]
    assert torch.allclose(class_logprob(0)(rec)[1], torch.log(torch.tensor(1 / 3)))
    assert channel("a", [1, 2])(rec).tolist() == [5.5, 21.5]  # means of 4..7 and 20..23
    assert neuron("a", 0, 1, 0)(rec).tolist() == [2.0, 14.0]
    assert layer_norm("a")(rec)[0].item() == 0.5 * sum(i * i for i in range(12))
    # TV on 3x3 forward differences: one column of 3 horizontal jumps of 0.5 -> 3 * 0.25 over 9 positions x 3 ch
    assert torch.allclose(total_variation(beta=2)(rec), torch.tensor([3 * 0.25 / 9]))
    assert torch.allclose(total_variation(beta=1)(rec), torch.tensor([3 * 0.5 / 9]), atol=1e-4)
    assert torch.allclose(l2()(rec), torch.tensor([0.125]))  # half the pixels are 0.5 away from grey
    assert torch.allclose(alpha_norm(4)(rec), torch.tensor([0.5 ** 4 / 2]))
    f = torch.ones(1, 2, 1, 2)  # C=2, HW=2 -> F F^T = 2 everywhere; / (H*W=2) by default, / (C*H*W=4) by size
    assert torch.allclose(gram(f), torch.full((1, 2, 2), 1.0))
    assert torch.allclose(gram(f, normalize="size"), torch.full((1, 2, 2), 0.5))
    assert torch.allclose(gram(f, normalize="none"), torch.full((1, 2, 2), 2.0))
    assert feature_match("a", acts["a"][0])(rec)[0].item() == 0.0


def test_algebra_and_repr() -> None:
    o = class_logit(130) - 0.05 * total_variation(beta=2) + 2 * channel("blocks.4", 3)
    assert repr(o) == "class_logit(130) - 0.05*total_variation(beta=2) + 2*channel('blocks.4', 3)"
    assert o.layers == ("blocks.4",) and o.uses_logits and o.uses_image
    assert repr(-layer_norm("x") / 2) == "-0.5*layer_norm('x')"
    assert repr(sum([l2(), l2()])) == "l2() + l2()"
    rec = Recorded({"blocks.4": torch.ones(1, 4, 2, 2) * 3}, torch.tensor([[0.0] * 130 + [7.0]]),
                   torch.full((1, 3, 4, 4), 0.5))
    assert o(rec).item() == pytest.approx(7 + 2 * 3)
    with pytest.raises(TypeError):
        _ = l2() * "3"  # type: ignore[operator]


def test_gram_blend_and_weights() -> None:
    a, b = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    target = 0.7 * gram(a) + 0.3 * gram(b)
    rec = Recorded({"l1": a, "l2": b})
    obj = gram_match({"l1": target, "l2": gram(b)}, weights={"l1": 2.0, "l2": 0.0})
    expected = 2.0 * (gram(a) - target).pow(2).sum()
    assert torch.allclose(obj(rec), expected[None])
    assert "gram_match({'l1': 2, 'l2': 0})" == repr(obj)
    with pytest.raises(ValueError):
        gram_match({"l1": target}, weights={"nope": 1.0})


def test_batched_equals_unbatched(tiny) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 32, 32, generator=gen)
    obj = class_logit([0, 4, 2]) + channel("conv3", [1, 2, 7])
    both = evaluate(tiny, obj, x)
    single = torch.cat([evaluate(tiny, class_logit(c) + channel("conv3", k), x[i:i + 1])
                        for i, (c, k) in enumerate([(0, 1), (4, 2), (2, 7)])])
    assert torch.allclose(both, single, atol=1e-5)


def test_batch_target_length_is_checked(tiny) -> None:
    with pytest.raises(ValueError, match="2 targets for a batch of 3"):
        evaluate(tiny, class_logit([1, 2]), torch.rand(3, 3, 32, 32))


def test_one_gram_for_the_whole_package() -> None:
    import convlens
    from convlens.synthesize import texture

    assert convlens.gram is texture.gram is gram and texture.gram_loss is convlens.core.objectives.gram_loss
    a, b = torch.randn(2, 4, 5, 5), torch.randn(4, 5, 5)
    target = gram(b)[0]
    rec = Recorded({"l": a})
    scaled = gram_match("l", target, scale="target")(rec)
    expected = (gram(a) - target).pow(2).sum((1, 2)) / target.pow(2).sum()
    assert torch.allclose(scaled, expected)
    with pytest.raises(ValueError):
        gram(a, normalize="paper")
