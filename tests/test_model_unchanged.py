"""Every library technique leaves the user's network exactly as it found it: every parameter and buffer
bit-identical, every training flag and ``requires_grad`` flag as it was -- also when the call raises.

The network has batch norm and dropout and is handed over in *training* mode, so a forward pass that runs in
training mode (the audit's occlusion bug) changes ``running_mean`` / ``running_var`` and fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.synthesize.fast_style import FastStyleConfig


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = nn.ReLU6()
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.fc(self.drop(self.pool(x).flatten(1)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():  # non-trivial statistics, so any update shows
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    net.train()  # the user's network is in training mode: convlens must not run it that way
    net.fc.weight.requires_grad_(False)  # and a frozen layer stays frozen, the rest trainable
    return net


def _state(net: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool], list[bool]]:
    return ({k: v.detach().clone() for k, v in net.state_dict().items()}, [m.training for m in net.modules()],
            [p.requires_grad for p in net.parameters()])


def _assert_same(net: nn.Module, before: tuple) -> None:
    sd, flags, grads = before
    now = net.state_dict()
    changed = [k for k, v in sd.items() if not torch.equal(v, now[k])]
    assert not changed, f"changed: {changed}"
    assert [m.training for m in net.modules()] == flags, "training flags changed"
    assert [p.requires_grad for p in net.parameters()] == grads, "requires_grad flags changed"
    assert all(p.grad is None for p in net.parameters()), "gradients left on the user's parameters"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return d


def _x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _techniques(folder: Path, tmp: Path) -> dict[str, Callable[[convlens.Model], object]]:
    x = _x()
    y = torch.tensor([1, 2])
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    from convlens.read.reducers import DeadUnits, PooledFeatures, TopK
    return {
        "predict": lambda m: m.predict(x, top=2),
        "activation_maps": lambda m: convlens.activation_maps(m, x[:1], "bn2"),
        "conv_filters": lambda m: convlens.conv_filters(m, "conv1"),
        "scan": lambda m: convlens.scan(m, folder, [PooledFeatures("bn2"), TopK("act2", 2), DeadUnits(["act2"])],
                                        engine="torch", progress=False),
        "neighbors": lambda m: convlens.neighbors(m, folder, [folder / "p0.png"], layer="pool", k=2,
                                                  progress=False),
        "top_patches": lambda m: convlens.top_patches(m, folder, "act2", channels=[0, 1], k=2, progress=False),
        "receptive_field": lambda m: convlens.empirical_receptive_field(m, x, "act2", 0, occluder=5, stride=8),
        "vanilla_gradient": lambda m: convlens.vanilla_gradient(m, x, y),
        "guided_backprop": lambda m: convlens.guided_backprop(m, x, y),
        "deconvnet": lambda m: convlens.deconvnet(m, x, y),
        "smoothgrad": lambda m: convlens.smoothgrad(m, x, y, samples=3, generator=torch.Generator().manual_seed(0)),
        "integrated_gradients": lambda m: convlens.integrated_gradients(m, x, y, steps=4),
        "grad_cam": lambda m: convlens.grad_cam(m, x, y, layer="act2"),
        "guided_grad_cam": lambda m: convlens.guided_grad_cam(m, x, y, layer="act2"),
        "occlusion": lambda m: convlens.occlusion(m, x, y, window=8, stride=8),
        "occlusion_full": lambda m: convlens.occlusion(m, x, y, window=8, stride=8, incremental=False),
        "saliency_unit": lambda m: convlens.saliency(m, x, "gradient", convlens.Unit("act2", 1)),
        "deletion_insertion": lambda m: convlens.deletion_insertion(m, x, torch.rand(2, 32, 32), y, steps=4,
                                                                    generator=torch.Generator().manual_seed(0)),
        "visualize_class": lambda m: convlens.visualize_class(m, [1], preset="simonyan", steps=3),
        "visualize_unit": lambda m: convlens.visualize_unit(m, "act2", [0], preset="lucid", steps=3),
        "multifaceted": lambda m: convlens.multifaceted(m, 1, sorted(folder.iterdir()), k=2, layer="pool",
                                                        preset="simonyan", steps=2),
        "dream": lambda m: convlens.dream(m, x[:1], layer="bn2", octaves=2, steps=2, jitter=2, max_side=None),
        "invert": lambda m: convlens.invert(m, x[:1], ["bn2"], steps=3),
        "texture": lambda m: convlens.synthesize_texture(m, style, size=(32, 32), layers=["bn1", "bn2"], steps=3,
                                                         sample_size=None),
        "style_transfer": lambda m: convlens.style_transfer(m, x[:1], [style], size=32, steps=3,
                                                            style_layers_=["bn1", "bn2"], content_layer_="bn2"),
        "train_fast_style": lambda m: convlens.train_fast_style(
            m, [style], folder, config=FastStyleConfig(styles=["s"], size=32, style_size=32, batch_size=2, width=4,
                                                       blocks=1, style_layer_count=2), steps=2),
        "fool": lambda m: convlens.fool(m, x[:1], 3, max_steps=3),
        "fgsm": lambda m: convlens.fgsm(m, x, y),
        "pgd": lambda m: convlens.pgd(m, x, y, steps=3, generator=torch.Generator().manual_seed(0)),
        "ifgsm": lambda m: convlens.ifgsm(m, x, y, steps=3),
        "universal": lambda m: convlens.universal_perturbation(m, x, epochs=1, batch_size=2,
                                                               generator=torch.Generator().manual_seed(0)),
        "microscope": lambda m: convlens.build_microscope(m, folder, tmp / "micro", layers=["act2"], k=2,
                                                          max_channels=2, vis_steps=2, vis_size=32, batch_size=4,
                                                          progress=False),
    }


NAMES = list(_techniques(Path("."), Path(".")))
NO_FORWARD = {"conv_filters"}


def _model(net: nn.Module) -> convlens.Model:
    return convlens.Model.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, size=32, labels=[f"c{i}" for i in range(5)],
                               name="bnnet")


@pytest.mark.parametrize("name", NAMES)
def test_technique_leaves_the_network_unchanged(name: str, folder: Path, tmp_path: Path) -> None:
    net = _net()
    before = _state(net)
    _techniques(folder, tmp_path)[name](_model(net))
    _assert_same(net, before)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NO_FORWARD])
def test_technique_leaves_the_network_unchanged_after_an_exception(name: str, folder: Path, tmp_path: Path) -> None:
    net = _net()
    calls = {"n": 0}

    def boom(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:  # the first forward passes, a later one fails half-way through the network
            raise RuntimeError("boom")

    handle = net.bn2.register_forward_hook(boom)
    before = _state(net)
    with pytest.raises(RuntimeError, match="boom"):
        try:
            _techniques(folder, tmp_path)[name](_model(net))
        except RuntimeError as exc:  # scans report failed batches; microscope pages too: the cause is ours
            if "boom" in str(exc) or (exc.__cause__ is not None and "boom" in str(exc.__cause__)):
                raise RuntimeError("boom") from exc
            raise
        if calls["n"] < 2:  # one forward pass only: fail on the first one instead
            calls["n"] = 1
            _techniques(folder, tmp_path)[name](_model(net))
    handle.remove()
    _assert_same(net, before)


class _Relu6ThenInplace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        y += 1.0  # an in-place operation on the rectifier's output
        y.mul_(0.5)
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("rule", ["guided", "deconv"])
def test_backward_rule_survives_an_inplace_op_after_relu6(rule: str) -> None:
    torch.manual_seed(0)
    m = convlens.Model.wrap(_Relu6ThenInplace().eval(), mean=(0.5,) * 3, std=(0.25,) * 3, size=16)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    g = convlens.guided_backprop(m, x, 1) if rule == "guided" else convlens.deconvnet(m, x, 1)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the guided rule by hand: positive gradient where the ReLU6 input was inside (0, 6)
    xx = m.preprocess.normalize(x).requires_grad_(True)
    pre = m.module.conv(xx)
    mask = ((pre > 0) & (pre < 6)).float()
    r = pre.clamp(0, 6).detach().requires_grad_(True)  # the gradient arriving at the rectifier's output
    gy = torch.autograd.grad(m.module.fc((r + 1).mul(0.5).mean((2, 3)))[0, 1], r)[0]
    gin = gy.clamp(min=0) * mask if rule == "guided" else gy.clamp(min=0)
    want = torch.autograd.grad(m.module.conv(xx), xx, gin)[0]
    want = want / torch.tensor(m.preprocess.std).view(1, 3, 1, 1)
    assert torch.allclose(g, want, atol=1e-6)
