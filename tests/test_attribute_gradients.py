"""Gradient attributions against Captum (where Captum can) and against hand-written references (where not)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import convlens
from convlens.attribute import (
    Unit,
    deconvnet,
    grad_cam,
    guided_backprop,
    integrated_gradients,
    occlusion,
    smoothgrad,
    vanilla_gradient,
)

captum_attr = pytest.importorskip("captum.attr")


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Equal to ``rtol`` relative to the largest magnitude of the reference (element-wise relative is
    meaningless where values cross zero)."""
    scale = float(b.abs().max())
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * max(scale, 1e-12)


class PlainCNN(nn.Module):
    """Only what Captum's rules understand: one non-in-place ``nn.ReLU`` module per activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.r1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.r2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        self.conv3, self.r3 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r3(self.conv3(self.r2(self.conv2(self.r1(self.conv1(x))))))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def plain() -> convlens.Model:
    torch.manual_seed(1)
    return convlens.Model.wrap(PlainCNN().double().eval(), mean=(0.5,) * 3, std=(0.25,) * 3, size=(24, 32),
                               name="plain", labels=list("abcde"))


@pytest.fixture
def xs(tiny_module) -> torch.Tensor:
    """A non-square batch of 3, in float64 (as the tiny models in these tests): comparisons then measure the
    algorithms, not float32 rounding of probabilities that differ in the 7th digit."""
    tiny_module.double()
    return torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


T = torch.tensor([0, 3, 4])


def test_vanilla_guided_deconv_equal_captum_on_plain_cnn(plain, xs):
    ref = captum_attr.Saliency(plain).attribute(xs, target=T, abs=False)
    assert close(vanilla_gradient(plain, xs, T), ref)
    assert close(guided_backprop(plain, xs, T), captum_attr.GuidedBackprop(plain.module).attribute(
        plain.preprocess.normalize(xs), target=T) / torch.tensor(plain.preprocess.std, dtype=xs.dtype).view(1, 3, 1, 1))
    assert close(deconvnet(plain, xs, T), captum_attr.Deconvolution(plain.module).attribute(
        plain.preprocess.normalize(xs), target=T) / torch.tensor(plain.preprocess.std, dtype=xs.dtype).view(1, 3, 1, 1))


def test_guided_backprop_of_a_neuron_equals_captum(plain, xs):
    # float32 here: the layer index (which checks the unit) traces the network with a float32 image
    plain.module.float()
    xs = xs.float()
    got = guided_backprop(plain, xs, Unit("conv2", 5, 3, 4))
    ref = captum_attr.NeuronGuidedBackprop(plain.module, plain.module.conv2).attribute(
        plain.preprocess.normalize(xs), neuron_selector=(5, 3, 4)) / torch.tensor(plain.preprocess.std, dtype=xs.dtype).view(1, 3, 1, 1)
    assert close(got, ref)
    assert got.abs().sum() > 0


def test_integrated_gradients_and_occlusion_equal_captum_on_tiny(tiny, xs):
    t = torch.tensor([1, 2, 0])
    ig = captum_attr.IntegratedGradients(tiny).attribute(xs, target=t, n_steps=20, internal_batch_size=16)
    assert close(integrated_gradients(tiny, xs, t, steps=20, batch_size=16), ig)
    # logits: Captum casts occlusion results to float32, which would blur probability drops of ~1e-3
    occ = captum_attr.Occlusion(tiny).attribute(
        xs, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 6), target=t, perturbations_per_eval=16)[:, 0]
    got = occlusion(tiny, xs, t, window=8, stride=(4, 6), batch_size=16, score="logit")
    assert close(got.float(), occ)
    assert close(occlusion(tiny, xs, t, window=8, stride=(4, 6), score="logit", incremental=False), got, 1e-9)


def _tiny_reference(module: nn.Module, x: torch.Tensor, rule: str) -> torch.Tensor:
    """TinyCNN's forward written out with explicit rectifier functions (Captum cannot: ReLU6, in-place,
    a reused ReLU module and a functional relu)."""

    class Rect(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, hi):
            ctx.save_for_backward(z)
            ctx.hi = hi
            return z.clamp(0, hi)

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            passed = (z > 0) & (z < ctx.hi) if ctx.hi is not None else z > 0
            if rule == "guided":
                return g.clamp(min=0) * passed, None
            return g.clamp(min=0), None

    m = module
    h = Rect.apply(m.conv1(x), None)
    h = Rect.apply(m.conv2(h), 6.0)
    y = Rect.apply(m.conv3(h), None)
    h = Rect.apply(m.conv4(y) + h, None)
    h = Rect.apply(h - 0.1, None)
    return m.fc(m.pool(h).flatten(1))


@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_rules_on_tiny_equal_hand_written_reference(tiny, tiny_module, xs, rule):
    t = torch.tensor([1, 2, 0])
    xg = tiny.preprocess.normalize(xs).detach().requires_grad_(True)
    out = _tiny_reference(tiny_module, xg, rule)
    (g,) = torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), xg)
    ref = g / torch.tensor(tiny.preprocess.std, dtype=xs.dtype).view(1, 3, 1, 1)
    got = (guided_backprop if rule == "guided" else deconvnet)(tiny, xs, t)
    assert close(got, ref)
    assert not close(got, vanilla_gradient(tiny, xs, t))  # the rule really changed something


def test_batched_equals_unbatched_and_no_hooks_left(tiny, xs):
    t = torch.tensor([1, 2, 0])
    for fn in (vanilla_gradient, guided_backprop, lambda m, x, t: grad_cam(m, x, t, layer="conv3")):
        full = fn(tiny, xs, t)
        one = torch.cat([fn(tiny, xs[i:i + 1], t[i:i + 1]) for i in range(3)])
        assert close(full, one, 1e-5)
    for mod in tiny.module.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks


def test_grad_cam_by_hand(tiny, xs):
    t = torch.tensor([1, 2, 0])
    with convlens.Tap(tiny, "conv4", grads=True) as tap:
        x = xs.clone().requires_grad_(True)
        tiny(x).gather(1, t.view(-1, 1)).sum().backward()
        a, g = tap.outputs["conv4"].detach(), tap.grads["conv4"]
    cam = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    assert close(grad_cam(tiny, xs, t, layer="conv4", upsample=False), cam)
    assert grad_cam(tiny, xs, t, layer="conv4").shape == (3, 24, 32)


def test_smoothgrad_is_seeded_and_averages(tiny, xs):
    a = smoothgrad(tiny, xs, 1, samples=6, generator=torch.Generator().manual_seed(3), batch_size=5)
    b = smoothgrad(tiny, xs, 1, samples=6, generator=torch.Generator().manual_seed(3), batch_size=7)
    assert close(a, b) and a.shape == xs.shape
    assert close(smoothgrad(tiny, xs, 1, samples=2, noise=0.0), vanilla_gradient(tiny, xs, 1))


def test_bad_targets(tiny, tiny_module, xs):
    tiny_module.float()
    xs = xs.float()
    with pytest.raises(convlens.UserError, match="out of range"):
        vanilla_gradient(tiny, xs, 7)
    with pytest.raises(convlens.UserError, match="channel 99"):
        guided_backprop(tiny, xs, Unit("conv2", 99))
    with pytest.raises(convlens.UserError, match="unknown layer"):
        guided_backprop(tiny, xs, Unit("conv9", 0))


# -- the embedded model ------------------------------------------------------------------------------------

class _RefRelu6(nn.Module):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        rule = self.rule

        class F(torch.autograd.Function):
            @staticmethod
            def forward(ctx, v):
                ctx.save_for_backward(v)
                return v.clamp(0, 6)

            @staticmethod
            def backward(ctx, g):
                (v,) = ctx.saved_tensors
                return g.clamp(min=0) * ((v > 0) & (v < 6)) if rule == "guided" else g.clamp(min=0)
        return F.apply(z)


@pytest.mark.slow
def test_embedded_model_against_captum_and_reference(lite0, chelsea):
    one = torch.nn.functional.interpolate(lite0.load(chelsea), size=(192, 256), mode="bilinear")  # non-square
    x = torch.cat([one, one.flip(-1)])
    t = torch.tensor([285, 281])
    assert close(vanilla_gradient(lite0, x, t), captum_attr.Saliency(lite0).attribute(x, target=t, abs=False))
    ig = captum_attr.IntegratedGradients(lite0).attribute(x, target=t, n_steps=6, internal_batch_size=12)
    assert close(integrated_gradients(lite0, x, t, steps=6), ig)
    # Captum's GuidedBackprop only overrides nn.ReLU; EfficientNet-Lite uses ReLU6 (in place), so compare with
    # a copy of the network whose ReLU6 modules are replaced by explicit reference rectifiers.
    for rule, fn in (("guided", guided_backprop), ("deconv", deconvnet)):
        ref_mod = copy.deepcopy(lite0.module)
        for name, mod in list(ref_mod.named_modules()):
            for child_name, child in list(mod.named_children()):
                if isinstance(child, nn.ReLU6):
                    setattr(mod, child_name, _RefRelu6(rule))
        xg = lite0.preprocess.normalize(x[:1]).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(ref_mod(xg)[0, 285], xg)
        assert close(fn(lite0, x[:1], 285), g / 0.5)
    x1 = x[:1]
    occ = captum_attr.Occlusion(lambda z: lite0(z).softmax(-1)).attribute(
        x1, sliding_window_shapes=(3, 64, 64), strides=(3, 40, 40), target=285, perturbations_per_eval=32)[:, 0]
    assert close(occlusion(lite0, x1, 285, window=64, stride=40, batch_size=32), occ)


def test_incremental_plan_is_built_exact_and_leaves_no_hooks(tiny, xs):
    from convlens.attribute._incremental import IncrementalPlan
    from convlens.attribute.occlusion import _patches

    x = xs[:1]
    plan = IncrementalPlan.build(tiny, x, (8, 8))
    assert plan is not None and len(plan.chain) >= 2  # conv1, act1, ... are recomputed incrementally
    occ = x.clone()
    occ[:, :, 8:16, 12:20] = 0
    patch, origin = _patches(x, torch.zeros_like(x), [(8, 12, 16, 20)], (8, 8))
    assert close(plan.logits(patch, origin), tiny(occ), 1e-9)
    for mod in tiny.module.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
