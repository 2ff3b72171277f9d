"""Correspondence (Long, Zhang & Darrell 2014): exact warp ground truth, hand-checkable matches, the mutual filter,
the warp study, the CLI, and a torchvision architecture with random weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import convlens
from convlens.errors import UserError
from convlens.read.correspond import (
    GEOMETRIC,
    apply_warp,
    correspond,
    correspondence_layers,
    dense_grid,
    make_warps,
    match_descriptors,
    photometric,
    query_grid,
    warp_points,
    warp_study,
)

ROOT = Path(__file__).resolve().parents[1]


def _texture(size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=g)


def _pointwise() -> convlens.Model:
    """A network of one 1x1 convolution: its features at a pixel depend on that pixel's colour alone, so it is
    equivariant to every warp that moves pixels without resampling them."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 1)).eval()
    return convlens.Model.wrap(net, mean=(0.5,) * 3, std=(0.25,) * 3, size=32, name="pointwise")


def test_warp_ground_truth_is_exact() -> None:
    """A bright dot planted at p lands at H @ p after every kind of warp (centroid within a fifth of a pixel)."""
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    gen = torch.Generator().manual_seed(3)
    for w in make_warps((size, size), photo=False, generator=gen):
        for p in [(24.0, 30.0), (36.5, 28.0), (30.0, 38.0)]:
            gt = warp_points(w.H, np.array([p]))[0]
            assert 8 < gt[0] < size - 8 and 8 < gt[1] < size - 8, (w.kind, gt)
            dot = torch.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 1.5**2))
            out = apply_warp(dot.expand(3, -1, -1), w.H, fill=0.0)[0]
            m = out / out.sum()
            c = (float((m * xx).sum()), float((m * yy).sum()))
            assert abs(c[0] - gt[0]) < 0.2 and abs(c[1] - gt[1]) < 0.2, (w.kind, p, gt, c)


def test_flip_warp_is_an_exact_pixel_flip() -> None:
    x = _texture()
    H = next(w for w in make_warps((32, 32), photo=False) if w.kind == "flip").H
    assert torch.allclose(apply_warp(x, H), x.flip(-1), atol=1e-6)


def test_identity_gives_perfect_matches(tiny: convlens.Model) -> None:
    """Matching a photo to itself: every query lands exactly on itself, for pixel patches and for features."""
    x = _texture()
    res = correspond(tiny, x, x, layers=["conv2", "conv4"], points=5, step=1, refine=False, anchors=["pixels"])
    for m in res.matches.values():
        np.testing.assert_array_equal(m.points_b, m.points_a)
        assert m.mutual.all()  # matching back returns to the query too


def test_translation_known_ground_truth(tiny: convlens.Model) -> None:
    """A pure shift by (4, 2) pixels: interior points are found exactly displaced, in pixels and in features."""
    x = _texture()
    H = np.array([[1, 0, 4], [0, 1, 2], [0, 0, 1]], np.float64)
    b = apply_warp(x, H)
    pts = np.array([[x_, y_] for y_ in (8, 12, 16) for x_ in (8, 12, 14)], np.float64)
    res = correspond(tiny, x, b, layers=["conv1", "conv2"], points=pts, step=1, refine=False, anchors=["pixels"])
    for name, m in res.matches.items():
        np.testing.assert_allclose(m.points_b, warp_points(H, pts), err_msg=name)


def test_flip_known_ground_truth_with_a_pointwise_network() -> None:
    """A 1x1-conv network's features move with the pixels, so under a horizontal flip every point of a
    random-colour image is found at (W - 1 - x, y); raw pixel patches are mirrored and mostly fail."""
    model = _pointwise()
    x = _texture()
    H = np.array([[-1, 0, 31], [0, 1, 0], [0, 0, 1]], np.float64)
    res = correspond(model, x, apply_warp(x, H), layers=["0"], points=6, step=1, refine=False,
                     anchors=["pixels"])
    m = res.matches["0"]
    np.testing.assert_allclose(m.points_b, warp_points(H, m.points_a))
    err = np.linalg.norm(res.matches["pixels"].points_b - warp_points(H, m.points_a), axis=1)
    assert (err > 1).mean() > 0.5


def test_mutual_filter_removes_a_planted_bad_match() -> None:
    """Three distinctive points match both ways; a fourth query, planted close to point 3's descriptor, lands on
    point 3's match in b, which matches back to point 3 -- not to the planted query -- so only it is filtered."""
    e = torch.eye(4)
    da = e.clone()  # a: grid of 4 positions along x, descriptors e0..e3
    planted = torch.nn.functional.normalize(e[2] + 0.3 * e[3], dim=0)
    grid_a = dense_grid((1, 4), 1)
    db = torch.stack([e[1], e[0], e[2], torch.nn.functional.normalize(torch.ones(4), dim=0)])  # b: permuted
    grid_b = dense_grid((1, 4), 1)
    query = torch.stack([da[0], da[1], da[2], planted])
    pts = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], np.float64)
    m = match_descriptors(query, db, grid_b, refine=False, back=(da, grid_a), points=pts, tol=0.5)
    np.testing.assert_array_equal(m.points[:, 0], [1, 0, 2, 2])
    np.testing.assert_array_equal(m.mutual, [True, True, True, False])
    np.testing.assert_array_equal(m.back[:, 0], [0, 1, 2, 2])


def test_refinement_finds_the_sub_step_peak() -> None:
    """A similarity surface peaked between grid positions: the parabola puts the match within 0.15 px of it."""
    grid = dense_grid((1, 17), 2)  # x = 0, 2, ..., 16
    xs = torch.as_tensor(grid.coords[:, 0], dtype=torch.float32)
    true = 7.3
    cand = torch.stack([torch.cos((xs - true) / 6), torch.sin((xs - true) / 6)], 1)  # unit vectors
    q = torch.tensor([[1.0, 0.0]])
    m = match_descriptors(q, cand, grid, refine=True)
    assert abs(m.points[0, 0] - true) < 0.15
    assert match_descriptors(q, cand, grid, refine=False).points[0, 0] == 8.0


def test_photometric_is_deterministic_and_changes_colour() -> None:
    x = _texture()
    w = next(w for w in make_warps((32, 32), generator=torch.Generator().manual_seed(5)) if w.photo is not None)
    a, b = photometric(x, w.photo), photometric(x, w.photo)
    assert torch.equal(a, b)
    assert (a - x).abs().mean() > 0.02
    assert a.min() >= 0 and a.max() <= 1


def test_query_grid_on_step_and_inside() -> None:
    q = query_grid((224, 224), 10, step=4)
    assert q.shape == (100, 2)
    assert (q % 4 == 0).all() and q.min() > 10 and q.max() < 214


def test_warp_study_on_the_tiny_net(tiny: convlens.Model, tmp_path: Path) -> None:
    for i in range(2):
        img = (_texture(48, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(img).resize((64, 64), Image.Resampling.BICUBIC).save(tmp_path / f"p{i}.png")
    state = torch.random.get_rng_state()
    st = warp_study(tiny, tmp_path, layers=["conv2", "conv4"], points=4, step=2, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never touched
    assert st.methods == ["conv2", "conv4", "sift", "pixels"]
    assert st.warps == [*GEOMETRIC, *(w + "+photo" for w in GEOMETRIC)]
    assert len(st.photos) == 2
    for m in st.methods:
        for w in st.warps:
            assert len(st.errors[m][w]) == st.points[w] > 0
            vals = [st.pck[m][w][a] for a in st.alphas]
            assert 0 <= vals[0] <= vals[1] <= vals[2] <= 1
    goal = st.goal()
    assert goal["best_layer"] in st.layers and isinstance(goal["beats_pixels_on_every_warp"], bool)
    rows = st.localisation()
    assert [r["method"] for r in rows] == st.methods
    again = warp_study(tiny, tmp_path, layers=["conv2", "conv4"], points=4, step=2, progress=False)
    assert again.pck == st.pck  # same seed, same numbers


def test_bad_input(tiny: convlens.Model) -> None:
    x = _texture()
    with pytest.raises(UserError, match="spatial"):
        correspond(tiny, x, x, layers=["fc"])
    with pytest.raises(UserError, match="anchor"):
        correspond(tiny, x, x, layers=["conv2"], anchors=["orb"])
    with pytest.raises(UserError, match="unknown layer"):
        correspond(tiny, x, x, layers=["conv9"])


def test_any_cnn_torchvision_resnet18_random_weights() -> None:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = convlens.Model.wrap(tv.models.resnet18(weights=None).eval(), size=64, name="resnet18")
    layers = correspondence_layers(model)
    assert layers[-1] == "layer4" and "layer1" in layers and "layer3" in layers
    x = _texture(64)
    pts = np.array([[20, 20], [30, 26], [40, 36], [24, 44]], np.float64)  # between the outermost unit centres
    res = correspond(model, x, x, points=pts, step=2, refine=False)
    assert list(res.matches) == layers
    for name in ["layer1", "layer2"]:  # maps of 16x16 and 8x8: still exact on the identity
        m = res.matches[name]
        np.testing.assert_array_equal(m.points_b, m.points_a)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "convlens", *args], cwd=cwd, check=False, capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_two_photos_and_warps(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    imgs = convlens.demo_images(["chelsea", "coffee"])
    for name, img in imgs.items():
        img.save(photos / f"{name}.jpg")
    out = tmp_path / "pair"
    r = _cli("correspond", str(photos / "chelsea.jpg"), str(photos / "coffee.jpg"), "--layers", "blocks.2,blocks.4",
             "--points", "6", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    assert set(doc["layers"]) == {"blocks.2", "blocks.4"}
    assert len(doc["layers"]["blocks.2"]["matches"]) == 36
    assert (out / "correspond.png").is_file()
    out2 = tmp_path / "warps"
    r = _cli("correspond", str(photos), "--warps", "--layers", "blocks.1,blocks.3", "--points", "4", "--warp",
             "affine", "--out", str(out2), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "PCK@0.05" in r.stdout and "sift" in r.stdout and "pixels" in r.stdout
    doc = json.loads((out2 / "result.json").read_text())
    assert doc["photos"] == 2 and set(doc["pck"]) == {"blocks.1", "blocks.3", "sift", "pixels"}
    for f in ("pck.png", "localisation.png", "example.png"):
        assert (out2 / f).is_file()
    bad = _cli("correspond", str(photos / "chelsea.jpg"), "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "two images" in bad.stderr
