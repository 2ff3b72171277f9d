"""Taps: recording, early stopping, backward rules -- and that nothing is left behind on the user's model."""

from __future__ import annotations

import gc
import resource

import pytest
import torch
import torch.nn.functional as F

import convlens
from convlens import Tap, activations, backward_rule


def _hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


def test_recorded_output_is_not_corrupted_by_inplace_relu(tiny, tiny_module):
    x = torch.rand(2, 3, 32, 32)
    with Tap(tiny, ["conv1", "conv2"]) as tap:
        logits = tap.run(x)
    xn = tiny.preprocess.normalize(x)
    expected = tiny_module.conv1(xn)
    assert torch.equal(tap.outputs["conv1"], expected)  # pre-ReLU values, though act1 is in-place
    assert (tap.outputs["conv1"] < 0).any()
    with torch.no_grad():
        assert torch.allclose(logits, tiny_module(xn))


def test_truncated_forward_is_the_prefix_and_stops(tiny, tiny_module):
    x = torch.rand(3, 3, 32, 32)
    ran = []
    handle = tiny_module.conv4.register_forward_hook(lambda *a: ran.append(1))
    try:
        early = activations(tiny, x, "conv2")["conv2"]
        assert ran == []  # conv4 never ran
        with torch.no_grad(), Tap(tiny, "conv2") as tap:
            tap.run(x)
        assert ran == [1]
        assert torch.equal(early, tap.outputs["conv2"])
    finally:
        handle.remove()


def test_batched_equals_unbatched(tiny):
    x = torch.rand(4, 3, 32, 32)
    whole = activations(tiny, x, ["conv3", "fc"])
    for i in range(4):
        one = activations(tiny, x[i:i + 1], ["conv3", "fc"])
        for k in whole:
            assert torch.allclose(whole[k][i:i + 1], one[k], atol=1e-6)


def test_gradients_are_recorded(tiny):
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with Tap(tiny, "conv3", grads=True) as tap:
        out = tap.run(x)
        act = tap.outputs["conv3"]
        out[0, 1].backward()
    g_ref = torch.autograd.grad(tiny(x)[0, 1], [x])[0]
    assert torch.allclose(x.grad, g_ref, atol=1e-6)
    assert tap.grads["conv3"].shape == act.shape


# --- backward rules against a hand-written reference --------------------------------------------------------

class _RefGuided(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, high, rule):
        ctx.save_for_backward(x)
        ctx.high, ctx.rule = high, rule
        return x.clamp(0, high) if high is not None else x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        pos = (g > 0).float()
        if ctx.rule == "deconv":
            return g * pos, None, None
        live = (x > 0) if ctx.high is None else (x > 0) & (x < ctx.high)
        return g * pos * live.float(), None, None


def _reference_forward(net, x, rule):
    """TinyCNN's forward written out by hand with the reference rectifier."""
    act = lambda t, high=None: _RefGuided.apply(t, high, rule)
    x = act(net.conv1(x))
    x = act(net.conv2(x), 6.0)
    y = act(net.conv3(x))
    x = act(net.conv4(y) + x)
    x = act(x - 0.1)
    return net.fc(net.pool(x).flatten(1))


@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_backward_rules_match_reference(tiny, tiny_module, rule):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with backward_rule(rule):
        out = tiny(x)
    g = torch.autograd.grad(out[:, 2].sum(), x)[0]
    xr = x.detach().clone().requires_grad_(True)
    ref = _reference_forward(tiny_module, tiny.preprocess.normalize(xr), rule)
    g_ref = torch.autograd.grad(ref[:, 2].sum(), xr)[0]
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(g, g_ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(g, torch.autograd.grad(tiny(x)[:, 2].sum(), x)[0])  # it is not plain gradient


def test_backward_rule_covers_functional_forms():
    x = torch.randn(50, requires_grad=True)
    for fn in (F.relu, torch.relu, lambda t: F.relu(t.clone(), inplace=True), F.relu6,
               lambda t: F.hardtanh(t, 0.0, 6.0), lambda t: t.relu(), lambda t: t.clone().relu_()):
        with backward_rule("deconv"):
            y = fn(x * 4)
        grad_out = torch.randn(50)
        (g,) = torch.autograd.grad(y, x, grad_out)
        assert torch.allclose(g, 4 * grad_out.clamp(min=0)), fn


def test_guided_on_lite0_reaches_image(lite0, chelsea):
    x = lite0.load(chelsea).requires_grad_(True)
    with backward_rule("guided"):
        out = lite0(x)
    g = torch.autograd.grad(out[0, 281], x)[0]
    assert g.abs().sum() > 0 and torch.isfinite(g).all()


def test_no_hook_left_behind_and_flat_memory(tiny, tiny_module):
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    before = _hooks(tiny_module)

    def one() -> None:
        with Tap(tiny, ["conv1", "shared", "fc"], grads=True) as tap, backward_rule("guided"):
            tap.run(x)[:, 0].sum().backward()

    for _ in range(20):
        one()
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(100):
        one()
    gc.collect()
    assert _hooks(tiny_module) == before == 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 20_000  # kB: no growth with calls


def test_hooks_removed_when_forward_raises(tiny, tiny_module):
    def boom(*args):
        raise RuntimeError("shape error deep in the network")
    handle = tiny_module.conv4.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="shape error"), Tap(tiny, ["conv1", "conv2"], grads=True) as tap:
        tap.run(torch.rand(1, 3, 32, 32, requires_grad=True))  # conv1/conv2 recorded, then conv4 raises
    assert set(tap.outputs) == {"conv1", "conv2"}
    handle.remove()
    assert _hooks(tiny_module) == 0
    with pytest.raises(ValueError), backward_rule("guided"):
        raise ValueError("passes through untouched")
    x = torch.randn(10, requires_grad=True)
    (g,) = torch.autograd.grad(F.relu(x).sum(), x)  # the rule is gone after the context
    assert torch.equal(g, (x > 0).float())


def test_unknown_layer_names_closest(tiny):
    with pytest.raises(convlens.UserError, match="conv1"):
        Tap(tiny, "conv_1")
