"""Guided backprop and DeconvNet on every activation of torchvision and timm CNNs, against hand-written references.

The reference for ``guided`` is the rule written out: the plain autograd slope ``f'(z)`` of the activation
(torch's or timm's own backward, never convlens' formulas), clipped at 0, times the positive part of the
incoming gradient; for ``deconv`` the positive part of the incoming gradient times the passing slope ``k``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convlens
from convlens import UserError, backward_rule
from convlens.attribute import deconvnet, guided_backprop, vanilla_gradient
from convlens.core.taps import RuleReport

timm_act = pytest.importorskip("timm.layers.activations")
timm_me = pytest.importorskip("timm.layers.activations_me")

SELU = 1.0507009873554805


class Fn(nn.Module):
    """A functional form as a module (``fn`` is called on the tensor)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# (id, activation module, deconv passing slope k)
ACTS = [
    ("relu", lambda: nn.ReLU(), 1.0),
    ("relu_inplace", lambda: nn.ReLU(inplace=True), 1.0),
    ("relu6", lambda: nn.ReLU6(), 1.0),
    ("silu", lambda: nn.SiLU(), 1.0),
    ("silu_inplace", lambda: nn.SiLU(inplace=True), 1.0),
    ("F.silu", lambda: Fn(F.silu), 1.0),
    ("gelu", lambda: nn.GELU(), 1.0),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh"), 1.0),
    ("hardswish", lambda: nn.Hardswish(), 1.0),
    ("F.hardswish_inplace", lambda: Fn(lambda t: F.hardswish(t, inplace=True)), 1.0),
    ("mish", lambda: nn.Mish(), 1.0),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), 1.0),
    ("leaky_relu_inplace", lambda: nn.LeakyReLU(0.1, inplace=True), 1.0),
    ("prelu", lambda: nn.PReLU(4, init=0.25), 1.0),
    ("prelu_negative", lambda: nn.PReLU(1, init=-0.3), 1.0),
    ("elu", lambda: nn.ELU(0.7), 1.0),
    ("celu", lambda: nn.CELU(1.3), 1.0),
    ("selu", lambda: nn.SELU(), SELU),
    ("softplus", lambda: nn.Softplus(beta=2.0, threshold=5.0), 1.0),
    ("hardsigmoid", lambda: nn.Hardsigmoid(), 1 / 6),
    ("torch.selu", lambda: Fn(torch.selu), SELU),
    ("timm.Swish", lambda: timm_act.Swish(), 1.0),
    ("timm.Swish_inplace", lambda: timm_act.Swish(inplace=True), 1.0),
    ("timm.Mish", lambda: timm_act.Mish(), 1.0),
    ("timm.HardSwish", lambda: timm_act.HardSwish(), 1.0),
    ("timm.HardSigmoid", lambda: timm_act.HardSigmoid(), 1 / 6),
    ("timm.HardMish", lambda: timm_act.HardMish(), 1.0),
    ("timm.QuickGELU", lambda: timm_act.QuickGELU(), 1.0),
    ("timm.GELU", lambda: timm_act.GELU(), 1.0),
    ("timm.PReLU", lambda: timm_act.PReLU(4, init=0.1), 1.0),
    ("timm.SwishMe", lambda: timm_me.SwishMe(), 1.0),
    ("timm.MishMe", lambda: timm_me.MishMe(), 1.0),
    ("timm.HardSwishMe", lambda: timm_me.HardSwishMe(), 1.0),
    ("timm.HardSigmoidMe", lambda: timm_me.HardSigmoidMe(), 1 / 6),
]


class OneAct(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = act
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        with torch.no_grad():
            for p in (self.conv1.weight, self.conv2.weight):
                p.copy_(torch.randn(p.shape, generator=g))
            self.conv1.bias.zero_()
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x))).mean((2, 3))


def _reference(net: OneAct, x: torch.Tensor, target: int, rule: str, k: float) -> torch.Tensor:
    """Guided / deconv input gradient written out by hand for conv -> act -> conv -> mean."""
    xg = x.clone().requires_grad_(True)
    z = net.conv1(xg)
    a = z.detach().clone().requires_grad_(True)
    r = torch.autograd.grad(net.conv2(a).mean((2, 3))[:, target].sum(), a)[0]  # incoming gradient at act's output
    zz = z.detach().clone().requires_grad_(True)
    act = type(net.act)(**({"inplace": False} if hasattr(net.act, "inplace") else {})) \
        if not isinstance(net.act, (Fn, nn.PReLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.CELU, nn.Softplus)) else net.act
    slope = torch.autograd.grad(act(zz.clone()).sum(), zz)[0]  # plain autograd f'(z)
    rin = slope.clamp(min=0) * r.clamp(min=0) if rule == "guided" else k * r.clamp(min=0)
    return torch.autograd.grad(z, xg, rin)[0]


@pytest.mark.parametrize("rule", ["guided", "deconv"])
@pytest.mark.parametrize("name,make,k", ACTS, ids=[a[0] for a in ACTS])
def test_rule_equals_hand_written_reference(name, make, k, rule):
    torch.manual_seed(0)
    net = OneAct(make()).eval()
    model = convlens.Model.wrap(net, mean=(0, 0, 0), std=(1, 1, 1), size=8)
    x = torch.rand(2, 3, 8, 8)
    report = RuleReport(rule)
    fn = guided_backprop if rule == "guided" else deconvnet
    got = fn(model, x, 1, report=report)
    ref = _reference(net, model.preprocess.normalize(x), 1, rule, k)
    assert report.changed == 1, report
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), (got - ref).abs().max()
    plain = vanilla_gradient(model, x, 1)
    assert not torch.allclose(got, plain, atol=1e-6)  # the rule did change the pass


def test_no_rectifier_raises_instead_of_plain_gradient():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    model = convlens.Model.wrap(net, size=16)
    x = torch.rand(1, 3, 16, 16)
    for fn in (guided_backprop, deconvnet):
        with pytest.raises(UserError, match="changed no rectifier"):
            fn(model, x, 0)
    vanilla_gradient(model, x, 0)  # the plain gradient is fine


def test_report_counts_each_call(tiny):
    report = RuleReport("guided")
    guided_backprop(tiny, torch.rand(2, 3, 32, 32), 1, report=report)
    # TinyCNN: act1 (ReLU), act2 (ReLU6), the shared ReLU twice, one functional relu
    assert report.changed == 5 and report.kinds == {"relu": 4, "relu6": 1}
    with backward_rule("guided", tiny) as r:
        tiny(torch.rand(1, 3, 32, 32, requires_grad=True))
    assert r.report.changed == 5


def test_relu6_then_inplace_op_still_works():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ReLU6()
            self.act2 = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.conv(x))
            y += 1.0  # in place on the rectifier's output
            z = self.act2(y)
            z.mul_(2.0)
            return z.mean((2, 3))

    model = convlens.Model.wrap(Net(), size=8)
    g = guided_backprop(model, torch.rand(1, 3, 8, 8), 0)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_timm_module_is_not_counted_twice_and_hooks_go():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), timm_act.HardSwish(), nn.Conv2d(4, 2, 3), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten())
    model = convlens.Model.wrap(net, size=10)
    with backward_rule("guided", model) as r:
        net(torch.rand(1, 3, 10, 10, requires_grad=True))
    assert r.report.kinds == {"hardswish": 1}  # its inner relu6 is not counted again
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
