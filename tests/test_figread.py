"""Figures keep their resolution; linear layers have no 'dead' maps; one guided-unit call with one display scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convlens.attribute.gradients import guided_units
from convlens.read import activation_maps, render
from convlens.read.patches import Patch, TopPatches, guided_patches
from convlens.show.figures import display_signed, save


def test_save_keeps_the_resolution_of_a_large_figure(tmp_path: Path) -> None:
    # a photo-like mosaic far over the old 400 KB cap: it used to come back shrunk step by step
    g = np.random.default_rng(0)
    img = Image.fromarray(g.integers(0, 256, (1160, 1160, 3), dtype=np.uint8))
    out = save(img, tmp_path / "grid.png")
    assert out.stat().st_size > 400 * 1024
    assert Image.open(out).size == img.size


def test_embedding_grid_saved_at_its_in_memory_resolution(tmp_path: Path, sample_dir: Path) -> None:
    files = sorted(sample_dir.glob("*.JPEG"))[:16]
    assert len(files) == 16
    grid = render.embedding_grid(files, np.arange(len(files)), 4, cell_px=80)
    out = save(grid, tmp_path / "grid.png")
    assert Image.open(out).size == grid.size and grid.width >= 4 * 80


def test_linear_layer_has_no_dead_maps(tiny) -> None:
    x = torch.rand(1, 3, 32, 32)
    lin = activation_maps(tiny, x, "conv3")  # a conv output before its ReLU: negative maps are ordinary
    rect = activation_maps(tiny, x, "act1")
    assert not lin.rectified and rect.rectified
    assert not lin.dead.any()
    assert np.array_equal(rect.dead, rect.nonpositive)
    lin.maps[0] = -1.0  # a map that is nowhere positive on a linear layer is not "dead"
    assert lin.nonpositive[0] and not lin.dead[0]


def test_display_signed_has_contrast_despite_an_outlier() -> None:
    torch.manual_seed(0)
    g = torch.randn(3, 64, 64) * 1e-3
    g[0, 5, 5] = 10.0  # one outlier pixel used to set the scale (0.5 + 0.5 g / max|g|: all grey)
    d = display_signed(g)
    assert d.min() >= 0 and d.max() <= 1
    assert d.std() > 0.1  # robust scaling: a visible tile, not flat grey
    assert abs(float(display_signed(torch.zeros(3, 4, 4)).mean()) - 0.5) < 1e-6


def test_guided_patches_are_batched_guided_units(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    files = []
    for i in range(3):
        f = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(f)
        files.append(f)
    rf = tiny.layers["conv2"].rf
    units = [(files[0], 0, 2, 3), (files[1], 0, 7, 1), (files[2], 3, 4, 4), (files[0], 3, 9, 9)]
    rows: dict[int, list[Patch]] = {}
    for f, c, y, x in units:
        box = rf.box(y, x, 32, 32)
        rows.setdefault(c, []).append(Patch(f, 1.0, y, x, box, box, False, torch.zeros(3, 1, 1)))
    tp = TopPatches("conv2", list(rows), list(rows.values()), rf.size)
    got = guided_patches(tiny, tp, batch_size=3).guided  # two passes for four units
    assert got is not None and tp.guided is None  # a new TopPatches; the caller's is left as it was
    for i, (c, ps) in enumerate(rows.items()):
        for j, p in enumerate(ps):
            x = tiny.preprocess.to_tensor(p.file)[None]
            g = guided_units(tiny, "conv2", x, [c], [p.y], [p.x])[0]
            x0, y0, x1, y1 = p.box
            assert torch.allclose(got[i][j], display_signed(g[:, y0:y1, x0:x1]), atol=1e-5)
            assert got[i][j].std() > 0.05  # contrast floor


def test_guided_unit_of_a_saturated_relu6_is_not_blank(tiny) -> None:
    import convlens

    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 40 - 20  # drives many ReLU6 units to 6 (ties at the clamp)
    with convlens.Tap(tiny, "act2") as tap:
        tap.run(x)
        a = tap.outputs["act2"][0].clone()
    c, y, xx = (int(v) for v in (a == 6).nonzero()[0])
    g = guided_units(tiny, "act2", x, [c], [y], [xx])
    assert g.abs().sum() > 0  # d relu6 / d input is 0 at saturation: taken of the pre-activation instead
    assert display_signed(g[0]).std() > 0.05


def test_saliency_guided_is_one_prediction_and_one_pass(tiny, tiny_module, tmp_path: Path, monkeypatch) -> None:
    import json

    from click.testing import CliRunner

    from convlens.cli import common, main

    monkeypatch.setattr(common, "load_model", lambda *a, **k: tiny)
    fwd, bwd = [], []
    tiny_module.fc.register_forward_hook(lambda *a: fwd.append(1))
    tiny_module.conv4.register_full_backward_hook(lambda *a: bwd.append(1))
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    res = CliRunner().invoke(main, ["saliency", str(photo), "--method", "guided", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (len(fwd), len(bwd)) == (2, 1)  # the prediction, then one forward + backward for the map
    doc = json.loads((tmp_path / "o" / "result.json").read_text())["saliency"]
    assert set(doc["methods"]) == {"guided"}
    m = np.load(tmp_path / "o" / "guided.npy")
    from convlens.attribute import saliency

    x = tiny.load(photo)
    assert np.allclose(m, saliency(tiny, x, "guided", doc["target"])[0].numpy(), atol=1e-6)


def test_topk_ranks_saturated_ties_by_the_map_mean() -> None:
    from convlens.read.reducers import BatchMeta, TopK

    torch.manual_seed(0)
    # 6 images, one channel, every map saturates at 6.0 somewhere (ReLU6); their means differ
    a = torch.rand(6, 1, 4, 4) * 3
    a[:, 0, 1, 1] = 6.0
    a[:, 0, :2] = a[:, 0, :2] + torch.arange(6.0)[:, None, None] * 0.2  # image i: larger mean for larger i
    a = a.clamp(max=6.0)
    r = TopK("l", k=4)
    ids = np.arange(6)
    r.update({"l": a[:3]}, BatchMeta(ids[:3], [Path(f"{i}.png") for i in range(3)], None, a[:3]))
    r.update({"l": a[3:]}, BatchMeta(ids[3:], [Path(f"{i}.png") for i in range(3, 6)], None, a[3:]))
    res = r.result()
    assert (res.values == 6.0).all()
    means = a.flatten(1).mean(1)
    assert res.ids[0].tolist() == means.argsort(descending=True)[:4].tolist()  # not file order 0, 1, 2, 3
    assert res.means is not None and np.allclose(res.means[0], means.sort(descending=True).values[:4].numpy())
    assert res.ties.tolist() == [4]
    b = torch.arange(6.0)[:, None, None, None].expand(6, 1, 2, 2).contiguous()  # distinct maxima: no ties
    r2 = TopK("l", k=3)
    r2.update({"l": b}, BatchMeta(ids, [Path(f"{i}.png") for i in range(6)], None, b))
    assert r2.result().ids[0].tolist() == [5, 4, 3] and r2.result().ties.tolist() == [0]


def test_grid_wraps_long_labels_instead_of_cutting_them() -> None:
    from convlens.show.figures import _fit_label, font, grid

    label = "African elephant -> hippopotamus"
    text = _fit_label(label, font(11), 80)
    assert text.replace("\n", " ") == label and "\n" in text
    g1 = grid([Image.new("RGB", (80, 80))] * 2, labels=["a", "b"], cell=80, label_size=11)
    g2 = grid([Image.new("RGB", (80, 80))] * 2, labels=[label, "b"], cell=80, label_size=11)
    assert g2.width == g1.width and g2.height > g1.height  # room for the wrapped lines


def test_unit_layers_are_rectified(tiny) -> None:
    from convlens.read.scan import is_rectified, unit_layers

    picks = unit_layers(tiny, 3)
    assert picks and all(is_rectified(tiny, n) for n in picks)


def test_unit_layer_of_a_resnet_block_is_the_block_not_its_shared_relu() -> None:
    import torchvision

    import convlens
    from convlens.read.scan import unit_layer_at

    r18 = convlens.Model.wrap(torchvision.models.resnet18().eval(), size=64)
    assert r18.layers.calls["layer3.0.relu"] == 2 and r18.layers.calls["layer3.0"] == 1
    assert unit_layer_at(r18, "layer3.0") == "layer3.0"  # its shared ReLU's first call is mid-block


def test_a_flat_map_gets_no_invented_scale() -> None:
    """An occlusion map where no occluder lowered the probability (all clipped to 0) is drawn against a scale of
    its real value, not a made-up 0-1 probability drop; a map with content keeps its own range."""
    import numpy as np
    import pytest

    from convlens.show.attribution import display_range

    assert display_range(np.zeros((8, 8)))[1] < 1e-3
    m = np.linspace(0, 0.086, 64).reshape(8, 8)
    assert display_range(m) == (0.0, pytest.approx(np.percentile(m, 99.5)))


def test_a_rise_map_is_drawn_from_its_own_baseline() -> None:
    """RISE's values sit on the mean score over all masks (here 0.40, the object 0.48): drawn from 0, the whole
    photo came out red; its overlay starts at the map's low end, while occlusion's drop keeps its 0."""
    import numpy as np

    from convlens.show.attribution import overlay_with_colorbar

    m = np.full((32, 32), 0.40)
    m[8:16, 8:16] = 0.48  # the object
    photo = Image.new("RGB", (32, 32), (128, 128, 128))
    for method in ("rise", "occlusion"):
        arr = np.asarray(overlay_with_colorbar(photo, m, (0, 0, 32, 32), method=method), np.float32)[:32, :32]
        obj, background = arr[12, 12], arr[28, 28]
        assert obj[0] > obj[2]  # the object is red (the top of the scale) either way
        # the background: blue (the bottom of RISE's own scale), but orange on occlusion's scale from 0
        assert (background[2] > background[0]) == (method == "rise"), (method, background)
