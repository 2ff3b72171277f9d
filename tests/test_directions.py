"""Units vs directions (Szegedy et al. 2014): the direction reducer against TopK, moments against numpy, PCA and
random directions, hand-computed coherence, the one-scan recipe and `top-patches --direction`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.errors import UserError
from convlens.read import TopK, TopKResult, crop_patches, load_dataset, scan
from convlens.read.directions import (
    DirectionTopK,
    Moments,
    classifier_space,
    coherence,
    direction_set,
    pca_directions,
    random_directions,
    units_vs_directions,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Twelve random-texture photos with a labels.csv of class names of the tiny net (three per class)."""
    d = tmp_path / "photos"
    d.mkdir()
    g = np.random.default_rng(0)
    rows = []
    for i in range(12):
        img = (g.random((12, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).resize((40, 40), Image.Resampling.BICUBIC).save(d / f"img{i:02d}.png")
        rows.append({"file": f"img{i:02d}.png", "label": f"class{i % 4}"})
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["file", "label"])
        w.writeheader()
        w.writerows(rows)
    return d


def test_unit_directions_equal_topk(tiny: convlens.Model, folder: Path) -> None:
    """Rows of the identity project to the channels themselves: the same values, images and positions as TopK."""
    eye = np.eye(8, dtype=np.float32)
    out = scan(tiny, folder, [TopK("conv3", 4), DirectionTopK("conv3", eye, 4)], progress=False, engine="torch")
    a, b = out["topk:conv3"], out["dirtopk:conv3"]
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.x, b.x)


def test_direction_topk_merges_like_one_scan(tiny: convlens.Model, folder: Path) -> None:
    ds = load_dataset(folder)
    v = random_directions(8, 5, generator=torch.Generator().manual_seed(1))
    full = scan(tiny, ds, [DirectionTopK("conv4", v, 3)], progress=False, engine="torch")["dirtopk:conv4"]
    r1, r2 = DirectionTopK("conv4", v, 3), DirectionTopK("conv4", v, 3)
    scan(tiny, ds[:5], [r1], progress=False, engine="torch")
    scan(tiny, ds[5:], [r2], progress=False, engine="torch")
    merged = r2.merge(r1).result()
    np.testing.assert_array_equal(merged.ids, full.ids)
    np.testing.assert_allclose(merged.values, full.values, rtol=1e-6)
    with pytest.raises(ValueError):
        r1.merge(DirectionTopK("conv4", -v, 3))


def test_direction_projection_by_hand(tiny: convlens.Model, folder: Path) -> None:
    """The kept value is max over positions of <a(:, y, x), v>, computed here by hand for one image."""
    v = random_directions(8, 2, generator=torch.Generator().manual_seed(2))
    top = scan(tiny, folder, [DirectionTopK("conv4", v, 12)], progress=False, engine="torch")["dirtopk:conv4"]
    x = tiny.preprocess.to_tensor(top.file_of(int(top.ids[1, 0])))[None]
    a = convlens.activations(tiny, x, "conv4")["conv4"][0].double()
    proj = torch.einsum("chw,c->hw", a, torch.as_tensor(v[1]))
    assert float(proj.max()) == pytest.approx(float(top.values[1, 0]), rel=1e-5)
    y, xx = divmod(int(proj.argmax()), proj.shape[1])
    assert (top.y[1, 0], top.x[1, 0]) == (y, xx)


def test_moments_match_numpy(tiny: convlens.Model, folder: Path) -> None:
    m = scan(tiny, folder, [Moments("conv2")], progress=False, engine="torch")["moments:conv2"]
    ds = load_dataset(folder)
    x = torch.stack([tiny.preprocess.to_tensor(f) for f in ds.files])
    a = convlens.activations(tiny, x, "conv2")["conv2"].double()
    v = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).numpy()
    assert m.count == len(v)
    np.testing.assert_allclose(m.mean, v.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.cov, np.cov(v.T), rtol=1e-4, atol=1e-7)


def test_pca_and_random_directions(tiny: convlens.Model, folder: Path) -> None:
    m = scan(tiny, folder, [Moments("conv2")], progress=False, engine="torch")["moments:conv2"]
    v, e = pca_directions(m, 3)
    np.testing.assert_allclose(v @ v.T, np.eye(3), atol=1e-8)
    assert (np.diff(e) <= 1e-12).all() and 0 < e.sum() <= 1 + 1e-9
    assert (v @ m.mean >= 0).all()  # signed towards the data
    np.testing.assert_allclose(m.cov @ v[0], e[0] * np.trace(m.cov) * v[0], rtol=1e-6, atol=1e-9)
    state = torch.random.get_rng_state()
    r = random_directions(6, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0)
    np.testing.assert_array_equal(r, random_directions(6, 4, generator=torch.Generator().manual_seed(3)))
    ds = direction_set(8, "conv2", count=2, units=[1, 4], moments=m, generator=torch.Generator().manual_seed(0))
    assert ds.kind == ["unit", "unit", "random", "random", "pca", "pca"]
    np.testing.assert_array_equal(ds.vectors[1], np.eye(8)[4])
    assert ds.label(0) == "unit 1" and ds.label(4).startswith("pca 0")
    with pytest.raises(UserError, match="out of range"):
        direction_set(8, "conv2", kinds=["unit"], units=[8])


def test_coherence_by_hand() -> None:
    """Classes [0, 0, 1] give one same-class pair of three; with an identity classifier space the similarity is
    that same fraction, and with two equal class rows it is 1."""
    top = TopKResult("l", np.arange(2), np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 1.0]]),
                     np.array([[0, 1, 2], [0, 1, 3]]), np.zeros((2, 3), int), np.zeros((2, 3), int), (1, 1))
    classes = {0: 0, 1: 0, 2: 1, 3: 2}
    c = coherence(top, classes, np.eye(3), k=3, draws=50, generator=torch.Generator().manual_seed(0))
    assert c.same_class[0] == pytest.approx(1 / 3) and c.similarity[0] == pytest.approx(1 / 3)
    assert c.flat.tolist() == [False, True]  # direction 1's top values are all equal
    space = np.array([[1.0, 0], [1.0, 0], [0, 1.0]])
    c2 = coherence(top, classes, space, k=3, draws=50, generator=torch.Generator().manual_seed(0))
    assert c2.similarity[0] == pytest.approx(1.0)
    arc = np.array([[1.0, 0], [0.8, 0.6], [-1.0, 0]])  # class 1 is class 0's neighbour and class 2's
    c3 = coherence(top, classes, arc, k=3, draws=50, near=1, generator=torch.Generator().manual_seed(0))
    assert c3.near_class.tolist() == pytest.approx([1.0, 1 / 3])
    s = c.summary([0, 1])
    assert s["directions"] == 1 and s["flat"] == 1 and s["same_class"] == pytest.approx(1 / 3)


def test_classifier_space_rows(tiny: convlens.Model) -> None:
    s = classifier_space(tiny)
    assert s.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0)


def test_units_vs_directions_one_scan(tiny: convlens.Model, folder: Path) -> None:
    st = units_vs_directions(tiny, folder, ["conv3", "conv4"], count=3, k=4, seed=0, progress=False, draws=100)
    for name in ("conv3", "conv4"):
        dt = st.layers[name]
        assert dt.directions.kind == ["unit"] * 3 + ["random"] * 3 + ["pca"] * 3
        assert dt.top.ids.shape == (9, 4)
        assert dt.coherence is not None and dt.coherence.source == "labels"
        tp = crop_patches(tiny, dt.top)  # the same receptive-field crops as for channels
        assert len(tp.patches) == 9 and all(len(p) == 4 for p in tp.patches)
    rows = st.table()
    assert [r[1] for r in rows[:4]] == ["unit", "random", "pca", "chance"]
    again = units_vs_directions(tiny, folder, ["conv3", "conv4"], count=3, k=4, seed=0, progress=False, draws=100)
    np.testing.assert_array_equal(again.layers["conv3"].top.ids, st.layers["conv3"].top.ids)


def test_any_cnn_torchvision_random_weights(folder: Path) -> None:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = convlens.Model.wrap(tv.models.resnet18(weights=None).eval(), size=32, name="resnet18",
                                labels=[str(i) for i in range(1000)])
    st = units_vs_directions(model, folder, ["layer2"], count=2, k=3, progress=False, draws=20, use_labels=False)
    dt = st.layers["layer2"]
    assert dt.top.ids.shape == (6, 3) and dt.coherence is not None and dt.coherence.source == "predictions"


def test_cli_top_patches_direction(tmp_path: Path, sample_dir: Path) -> None:
    files = sorted(sample_dir.glob("*.JPEG"))[::80][:10]
    d = tmp_path / "few"
    d.mkdir()
    for f in files:
        (d / f.name).symlink_to(f)
    with open(sample_dir / "LABELS.csv") as src, open(d / "LABELS.csv", "w") as dst:
        keep = {f.name for f in files}
        dst.write(src.readline())
        dst.writelines(line for line in src if line.split(",", 1)[0] in keep)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "convlens", "top-patches", str(d), "--layer", "blocks.2",
                        "--direction", "random", "--direction", "pca", "--count", "2", "--k", "3", "--out", str(out)],
                       check=False, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "random" in r.stdout and "pca" in r.stdout and "chance" in r.stdout
    doc = json.loads((out / "result.json").read_text())
    kinds = [row["kind"] for row in doc["directions"]]
    assert kinds == ["unit"] * 2 + ["random"] * 2 + ["pca"] * 2
    assert all(len(row["patches"]) == 3 for row in doc["directions"])
    assert doc["coherence"]["classes"] == "labels"
    assert (out / "directions.png").is_file()
