"""The CAM family against pytorch-grad-cam and torchcam (where they are right) and against hand-written formulas;
any target; no trace left on the user's model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import convlens
from convlens.attribute import (
    CAMS,
    OutputScore,
    Unit,
    ablation_cam,
    class_sum,
    eigen_cam,
    grad_cam,
    grad_cam_pp,
    hires_cam,
    margin,
    saliency,
    score_cam,
)
from convlens.attribute.cam import _FromLayer

pg = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

PEER = {"gradcam": pg.GradCAM, "gradcampp": pg.GradCAMPlusPlus, "xgradcam": pg.XGradCAM, "hirescam": pg.HiResCAM,
        "layercam": pg.LayerCAM, "scorecam": pg.ScoreCAM, "ablationcam": pg.AblationCAM, "eigencam": pg.EigenCAM}


class PixelNet(nn.Module):
    """A convlens model as the pixel-space ``nn.Module`` the peers take."""

    def __init__(self, model: convlens.Model) -> None:
        super().__init__()
        self.model, self.net = model, model.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PlainCNN(nn.Module):
    """What the peers handle correctly: one non-in-place ReLU module per activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.r1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.r2 = nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU()
        self.conv3, self.r3 = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r3(self.conv3(self.r2(self.conv2(self.r1(self.conv1(x))))))
        return self.fc(self.pool(x).flatten(1))


def minmax(m) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m).double()
    f = t.flatten(1)
    lo, hi = f.amin(1).view(-1, 1, 1), f.amax(1).view(-1, 1, 1)
    return (t - lo) / (hi - lo).clamp(min=1e-30)


def maxdiff(a, b) -> float:
    return float((minmax(a) - minmax(b)).abs().max())


@pytest.fixture
def plain() -> convlens.Model:
    torch.manual_seed(1)
    net = PlainCNN().double().eval()
    with torch.no_grad():
        net.fc.weight.mul_(1000)  # large gradients: pytorch-grad-cam's eps (1e-6 in Grad-CAM++) becomes negligible
    return convlens.Model.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, size=(24, 32), labels=list("abcde"))


@pytest.fixture
def xs() -> torch.Tensor:
    return torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


T = torch.tensor([0, 3, 4])


def peer_map(name: str, model: convlens.Model, x: torch.Tensor, t: torch.Tensor, layers: list[str]) -> np.ndarray:
    cam = PEER[name](model=PixelNet(model), target_layers=[model.layer(n) for n in layers])
    if name == "scorecam":
        cam.batch_size = 64
    return cam(input_tensor=x.clone().requires_grad_(True), targets=[ClassifierOutputTarget(int(c)) for c in t])


# -- agreement with pytorch-grad-cam --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam",
                                  "ablationcam"])
def test_every_variant_equals_pytorch_grad_cam_on_a_plain_cnn(plain, xs, name):
    # r1 has the input's resolution (no resampling: the maps must be equal); r2 is half of it
    # (Grad-CAM++: the peer's eps in the denominator still shows at 1e-4; exact against eq. 19 by hand below)
    exact = {"gradcampp": 1e-3}.get(name, 1e-6)
    if name == "scorecam":  # unscaled scores: a softmax over 1000x logits is one-hot and magnifies any rounding
        plain = copy.deepcopy(plain)
        with torch.no_grad():
            plain.module.fc.weight.mul_(1e-3)
    for layer, tol in (("r1", exact), ("r2", exact if name != "scorecam" else 1e-2)):
        ours = CAMS[name](plain, xs, T, layer=layer)
        assert ours.shape == (3, 24, 32) and ours.max() > 0
        assert maxdiff(ours, peer_map(name, plain, xs, T, [layer])) < tol, (name, layer)


def test_score_cam_resampling_is_the_only_difference(plain, xs):
    """pytorch-grad-cam upsamples Score-CAM masks with align_corners=True (torch.nn.UpsamplingBilinear2d), every
    other map with half-pixel centres (cv2); we use half-pixel centres throughout. At the input's resolution the
    two agree exactly (above); at half resolution they agree to a 1 % of the range."""
    with torch.no_grad():
        plain.module.fc.weight.mul_(1e-3)
    ours = score_cam(plain, xs, T, layer="r2")
    theirs = peer_map("scorecam", plain, xs, T, ["r2"])
    assert 1e-6 < maxdiff(ours, theirs) < 1e-2
    assert np.corrcoef(minmax(ours).flatten().numpy(), minmax(theirs).flatten().numpy())[0, 1] > 0.99


def test_several_layers_are_averaged_as_pytorch_grad_cam_does(plain, xs):
    for name in ("gradcam", "layercam"):
        ours = CAMS[name](plain, xs, T, layer="r1,r2")
        assert maxdiff(ours, peer_map(name, plain, xs, T, ["r1", "r2"])) < 1e-6
        assert float(ours.min()) == 0 and float(ours.amax((1, 2)).min()) == 1  # scaled to [0, 1] per image
        assert torch.equal(ours, CAMS[name](plain, xs, T, layer=["r1", "r2"]))


def test_grad_cam_pp_eps_of_pytorch_grad_cam_matters_for_small_gradients(plain, xs):
    """pytorch-grad-cam adds 1e-6 to Grad-CAM++'s denominator 2 g^2 + sum(A) g^3; with small gradients (here the
    classifier scaled down 1e4 times) that term dominates and its map drifts away from the paper's eq. 19."""
    small = copy.deepcopy(plain)
    with torch.no_grad():
        small.module.fc.weight.mul_(1e-4)
    ours = grad_cam_pp(small, xs, T, layer="r2")
    assert maxdiff(ours, grad_cam_pp(plain, xs, T, layer="r2")) > 1e-3  # alpha is not scale-free: a different map
    g = torch.autograd.grad  # by hand, eq. 19 without eps
    with convlens.Tap(small, "r2", grads=True) as tap:
        x = xs.clone().requires_grad_(True)
        small(x).gather(1, T.view(-1, 1)).sum().backward()
        a, gr = tap.outputs["r2"].detach(), tap.grads["r2"]
    del g
    g2, g3 = gr ** 2, gr ** 3
    alpha = torch.where(gr != 0, g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g3), torch.zeros_like(gr))
    ref = ((alpha * gr.clamp(min=0)).sum((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    assert maxdiff(grad_cam_pp(small, xs, T, layer="r2", upsample=False), ref) < 1e-9


def test_eigen_cam_sign_is_fixed_where_pytorch_grad_cam_leaves_it_to_lapack(plain, xs):
    """pytorch-grad-cam's EigenCAM keeps whatever sign the SVD returns; where it is negative the map (after its
    ReLU) lights up where the layer is *least* active. Ours (center=True: their centring) equals theirs where
    their sign is right, and always correlates positively with the summed activation."""
    xs = torch.rand(8, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = eigen_cam(plain, xs, layer="r1", center=True, relu=False)
    theirs = pg.utils.svd_on_activations.get_2d_projection(
        convlens.activations(plain, xs, "r1")["r1"].numpy())
    total = convlens.activations(plain, xs, "r1")["r1"].sum(1)
    flipped = 0
    for i in range(8):
        c_ours = np.corrcoef(ours[i].flatten(), total[i].flatten())[0, 1]
        c_theirs = np.corrcoef(theirs[i].flatten(), total[i].flatten())[0, 1]
        assert c_ours > 0
        assert np.allclose(np.abs(theirs[i]), ours[i].abs().numpy(), atol=1e-6 * np.abs(theirs[i]).max())
        flipped += c_theirs < 0
    assert flipped >= 1  # the peer's sign is wrong on at least one of these images
    assert eigen_cam(plain, xs, layer="r1").shape == (8, 24, 32)  # the paper's uncentred default


def test_pytorch_grad_cam_records_the_activation_after_an_in_place_relu(tiny, tiny_module):
    """TinyCNN's conv1 feeds ReLU(inplace=True): pytorch-grad-cam's recorded activation is overwritten by the ReLU
    (Grad-CAM then sums mean(g_k) relu(A_k)); ours keeps conv1's own output, as the hand-written reference does."""
    tiny_module.double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([1, 3])
    xg = x.clone().requires_grad_(True)
    box = {}

    def hook(mod, inp, out):
        box["a"] = out.detach().clone()
        out = out.clone()
        out.register_hook(lambda g: box.__setitem__("g", g))
        return out
    h = tiny_module.conv1.register_forward_hook(hook)
    tiny(xg).gather(1, t.view(-1, 1)).sum().backward()
    h.remove()
    ref = (box["g"].mean((2, 3), keepdim=True) * box["a"]).sum(1).clamp(min=0)
    ours = grad_cam(tiny, x, t, layer="conv1")
    assert maxdiff(ours, ref) < 1e-9
    assert maxdiff(ours, peer_map("gradcam", tiny, x, t, ["conv1"])) > 1e-2
    assert maxdiff(hires_cam(tiny, x, t, layer="conv1"), peer_map("hirescam", tiny, x, t, ["conv1"])) < 1e-6  # g = 0
    # where A < 0, so there HiResCAM cannot tell


# -- torchcam ---------------------------------------------------------------------------------------------------------

def test_agreement_with_torchcam_and_its_grad_cam_pp_bug(plain, xs):
    tc = pytest.importorskip("torchcam.methods")
    for cls, name in ((tc.GradCAM, "gradcam"), (tc.XGradCAM, "xgradcam"), (tc.LayerCAM, "layercam"),
                      (tc.ScoreCAM, "scorecam")):
        net = PixelNet(plain)
        with cls(net, target_layer="net.r1", input_shape=(3, 24, 32)) as ext:
            out = net(xs.clone().requires_grad_(True))  # convlens freezes the weights while it runs the model
            theirs = ext(class_idx=T.tolist(), scores=out)[0]
        assert maxdiff(CAMS[name](plain, xs, T, layer="r1"), theirs) < 1e-5, name
    # torchcam's GradCAMpp divides a boolean-indexed copy in place (alpha[mask].div_(...)), so alpha stays g^2:
    # its weights are sum relu(g) g^2, not eq. 19
    net = PixelNet(plain)
    with tc.GradCAMpp(net, target_layer="net.r2", input_shape=(3, 24, 32)) as ext:
        theirs = ext(class_idx=T.tolist(), scores=net(xs.clone().requires_grad_(True)))[0]
    with convlens.Tap(plain, "r2", grads=True) as tap:
        plain(xs.clone().requires_grad_(True)).gather(1, T.view(-1, 1)).sum().backward()
        a, g = tap.outputs["r2"].detach(), tap.grads["r2"]
    undivided = (((g ** 2) * g.clamp(min=0)).sum((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    assert maxdiff(theirs, undivided) < 1e-5
    assert maxdiff(theirs, grad_cam_pp(plain, xs, T, layer="r2", upsample=False)) > 1e-3


# -- real architectures with random weights ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("arch, layer, small", [("resnet18", "layer4", "maxpool"),
                                                ("mobilenet_v3_small", "features.12", "features.1.block.0"),
                                                ("efficientnet_b0", "features.8", "features.1.0.block.0")])
def test_torchvision_architectures_with_random_weights(arch, layer, small):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = getattr(tv.models, arch)(weights=None).eval()
    model = convlens.Model.wrap(net, size=64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 7])
    state = copy.deepcopy(net.state_dict())
    # with random weights MobileNetV3's and EfficientNet's late activations are ~1e-8 and their gradients ~1e-3:
    # there pytorch-grad-cam's eps (sum(A) + 1e-7 in XGradCAM, 2 g^2 + ... + 1e-6 in Grad-CAM++) sets the weights,
    # not the network, so those two are compared where the activations are O(1) (ResNet-18)
    names = ["gradcam", "hirescam", "layercam"] + (["xgradcam", "gradcampp"] if arch == "resnet18" else [])
    for name in names:
        ours = CAMS[name](model, x, t, layer=layer)
        theirs = peer_map(name, model, x, t, [layer])
        assert maxdiff(ours, theirs) < (1e-5 if name != "gradcampp" else 2e-2), (arch, name)
    # the forward-only ones on a layer with few channels (pytorch-grad-cam runs one pass per channel); its
    # AblationCAM ablates with a large negative value instead of 0 where the layer has negative values (SiLU)
    rectified = float(convlens.activations(model, x[:1], small)[small].min()) == 0
    for name in ("ablationcam", "scorecam") if rectified else ("scorecam",):
        ours, theirs = CAMS[name](model, x[:1], t[:1], layer=small), peer_map(name, model, x[:1], t[:1], [small])
        assert np.corrcoef(minmax(ours).flatten(), minmax(theirs).flatten())[0, 1] > 0.99, (arch, name)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


# -- how Score-CAM and Ablation-CAM save work, exactly --------------------------------------------------------------

class CountingNet(PlainCNN):
    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return super().forward(x)


def test_score_cam_runs_each_distinct_mask_once():
    torch.manual_seed(2)
    net = CountingNet().double().eval()
    with torch.no_grad():
        net.conv1.weight[1] = 2 * net.conv1.weight[0]  # channel 1 = 2 x channel 0 (+ bias): the same mask
        net.conv1.bias[1] = 2 * net.conv1.bias[0]
        net.conv1.weight[2] = 0  # a constant channel: its mask is 0, like channel 3's
        net.conv1.weight[3] = 0
    model = convlens.Model.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, size=(24, 32))
    _ = model.layers  # the layer index is built by one traced pass; count after it
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net.seen = 0
    ours = score_cam(model, x, 2, layer="conv1")
    assert net.seen == 1 + 4  # the capture pass, then 4 distinct masks for 6 channels
    assert maxdiff(ours, peer_map("scorecam", model, x, torch.tensor([2]), ["conv1"])) < 1e-6


def test_ablation_cam_runs_from_the_layer_when_it_can_and_in_full_when_it_cannot(plain, tiny, xs):
    a = convlens.activations(plain, xs[:1], "r2")["r2"][0]
    y = plain(xs[:1])[:, 3]
    run = _FromLayer(plain, "r2", xs[:1], torch.tensor([3]), a, y)
    assert run.tiny is not None  # a chain: the network before r2 runs on a tiny image
    # TinyCNN adds conv2's output back after conv4: the rest depends on more than conv3, so it runs in full
    tiny.module.double()
    a = convlens.activations(tiny, xs[:1], "conv3")["conv3"][0]
    run = _FromLayer(tiny, "conv3", xs[:1], torch.tensor([1]), a, tiny(xs[:1])[:, 1])
    assert run.tiny is None
    # either way the weights are the paper's: (y - y_k) / y, by hand for every channel
    ours = ablation_cam(tiny, xs[:1], 1, layer="conv3", upsample=False, relu=False)
    box = {}
    w = []
    base = float(tiny(xs[:1])[0, 1])
    for k in range(a.shape[0]):
        def hook(mod, inp, out, k=k):
            out = out.clone()
            out[:, k] = 0
            return out
        h = tiny.module.conv3.register_forward_hook(hook)
        w.append((base - float(tiny(xs[:1])[0, 1])) / abs(base))
        h.remove()
    del box
    ref = (torch.tensor(w, dtype=a.dtype)[:, None, None] * a).sum(0)
    assert torch.allclose(ours[0], ref, atol=1e-10)


# -- relu, layers, batching, no trace on the model -------------------------------------------------------------

def test_relu_false_is_the_map_before_the_final_relu(plain, xs):
    for name in CAMS:
        raw = CAMS[name](plain, xs, T, layer="r2", relu=False, upsample=False)
        assert torch.allclose(raw.clamp(min=0), CAMS[name](plain, xs, T, layer="r2", upsample=False)), name
    assert (grad_cam(plain, xs, T, layer="r2", relu=False) < 0).any()


def test_batched_equals_unbatched_and_model_untouched(tiny, tiny_module, xs):
    tiny_module.double()
    tiny_module.train()  # the user's flag: restored after every call
    buffers = {k: v.clone() for k, v in tiny_module.state_dict().items()}
    t = torch.tensor([1, 2, 0])
    for name, fn in CAMS.items():
        full = fn(tiny, xs, t, layer="conv4")
        one = torch.cat([fn(tiny, xs[i:i + 1], t[i:i + 1], layer="conv4") for i in range(3)])
        assert torch.allclose(full, one, atol=1e-9 * float(full.abs().max() + 1)), name
    with pytest.raises(convlens.UserError):
        score_cam(tiny, xs, t, layer="fc")  # an error on the way out leaves nothing behind either
    assert tiny_module.training and all(m.training for m in tiny_module.modules())
    for mod in tiny_module.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks
    assert all(torch.equal(v, buffers[k]) for k, v in tiny_module.state_dict().items())


def test_layer_errors(tiny, xs):
    tiny.module.double()
    with pytest.raises(convlens.UserError, match="no spatial map"):
        grad_cam(tiny, xs, 1, layer="fc")
    with pytest.raises(convlens.UserError, match="unknown layer"):
        grad_cam(tiny, xs, 1, layer="conv9")
    with pytest.raises(convlens.UserError, match="does not run before"):  # the unit is computed before conv4 runs
        grad_cam(tiny, xs, Unit("conv2", 1), layer="conv4")


# -- any target ---------------------------------------------------------------------------------------------------

def test_every_method_takes_every_kind_of_target(plain, xs):
    plain.module.float()
    x = xs.float()
    kinds = [None, 3, "d", [0, 3, 4], torch.tensor([0, 3, 4]), Unit("r2", 5), Unit("r2", 5, 2, 3),
             [Unit("r2", 1, 0, 0), Unit("r3", 2), Unit("r2", 7, 5, 9)], margin(3, 1), class_sum([1, 2], prob=True),
             lambda out: out[:, 2] - out.mean(1)]
    for name in ("gradient", "guided", "smoothgrad", "integrated", "gradcam", "guided_gradcam", "occlusion",
                 "gradcampp", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam"):
        opts = {"samples": 2} if name == "smoothgrad" else {"steps": 3} if name == "integrated" else \
            {"window": 8, "stride": 8} if name == "occlusion" else {"layer": "r2"} if name in CAMS else {}
        for target in kinds:
            m = saliency(plain, x, name, target, **opts)
            assert m.shape == (3, 24, 32) and torch.isfinite(m).all(), (name, target)


def test_output_targets_mean_what_they_say(plain, xs):
    ref = grad_cam(plain, xs, 3, layer="r2", relu=False) - grad_cam(plain, xs, 1, layer="r2", relu=False)
    assert torch.allclose(grad_cam(plain, xs, margin(3, 1), layer="r2", relu=False), ref)  # Grad-CAM is linear
    ref = grad_cam(plain, xs, 1, layer="r2", relu=False) + grad_cam(plain, xs, 2, layer="r2", relu=False)
    assert torch.allclose(grad_cam(plain, xs, class_sum([1, 2]), layer="r2", relu=False), ref)
    # one unit per image == each image with its own unit
    plain.module.float()
    x = xs.float()
    units = [Unit("r2", 1, 0, 0), Unit("r3", 2), Unit("r2", 7, 5, 9)]
    full = saliency(plain, x, "gradient", units)
    for i, u in enumerate(units):
        assert torch.allclose(full[i], saliency(plain, x[i:i + 1], "gradient", u)[0])


@pytest.mark.parametrize("target, message", [
    (slice(0, 2), "unsupported target"), (2.5, "unsupported target"), ([[1, 2], [3]], "class_sum"),
    (torch.tensor([0.5, 1.0, 2.0]), "integers"), ([1, 2], "one target per image"), (9, "out of range"),
    ("zebra", "no class called"), ({"a": 1}, "unsupported target"), ([Unit("r2", 1), 3], "all classes or all units"),
    (Unit("r2", 99), "channel 99"), (lambda out: out[:, :2], "one score per image"),
    (lambda out: out[:, 0] - out[0, 0], "own output row")])
def test_bad_targets_are_one_clear_error(plain, xs, target, message):
    plain.module.float()
    with pytest.raises(convlens.UserError, match=message):
        grad_cam(plain, xs.float(), target, layer="r2")


def test_output_score_repr():
    assert str(margin(3, 1)) == "margin(3-1)" and "OutputScore" in repr(OutputScore(lambda o: o[:, 0], "s"))
