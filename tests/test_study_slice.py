"""Accuracy by attribute and corruption: Wilson intervals and binning by hand, attributes on made-up images whose
answers are known, the ImageNet-C definitions against scikit-image / their formulas, and the study on a tiny CNN
checked against an independent forward pass; the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.errors import UserError
from convlens.study import (
    CORRUPTIONS,
    DEFAULT_CORRUPTIONS,
    bin_accuracy,
    corrupt,
    corruption_names,
    image_attributes,
    object_scale,
    slice_accuracy,
    wilson,
)


def test_wilson_hand_values() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.23659, abs=1e-4), pytest.approx(0.76341, abs=1e-4))
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.72247, abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_numeric_bins_equal_count_ties_and_missing() -> None:
    values = [1, 2, 3, 4, 5, 6, 7, 8, float("nan"), 8]
    c1 = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1, 0], bool)
    c5 = np.ones(10, bool)
    s = bin_accuracy(values, c1, c5, bins=2)
    assert s.kind == "numeric" and s.missing == 1
    assert [b.n for b in s.bins] == [4, 5]                     # [1, 5) and [5, 8]: the tied 8s stay together
    assert s.bins[0].top1 == pytest.approx(2 / 4) and s.bins[1].top1 == pytest.approx(3 / 5)
    assert s.bins[0].top1_ci == pytest.approx(wilson(2, 4))
    assert s.bins[1].label.endswith("]") and s.bins[0].label.endswith(")")
    # a constant attribute is one bin, not an error
    one = bin_accuracy([3.0] * 4, c1[:4], c5[:4], bins=5)
    assert [b.n for b in one.bins] == [4]


def test_categorical_groups_largest_first_rest_pooled() -> None:
    values = ["a"] * 3 + ["b"] * 2 + ["c", "d", ""]
    c1 = np.array([1, 1, 1, 0, 1, 0, 0, 1], bool)
    s = bin_accuracy(values, c1, c1, max_groups=2)
    assert s.kind == "categorical" and s.missing == 1
    assert [(b.label, b.n, b.top1) for b in s.bins] == [("a", 3, 1.0), ("b", 2, 0.5), ("other (2 groups)", 2, 0.0)]


def test_pixel_attributes_known_answers() -> None:
    flat = torch.full((1, 3, 32, 32), 0.25)
    a = image_attributes(flat, ["brightness", "contrast", "colourfulness", "sharpness", "texture_energy"])
    assert a["brightness"][0] == pytest.approx(0.25, abs=1e-6)
    for k in ("contrast", "colourfulness", "sharpness", "texture_energy"):
        assert a[k][0] == pytest.approx(0.0, abs=1e-3), k
    # half black / half white: luma std 0.5; a red image is colourful, its gray twin is not
    half = torch.zeros(1, 3, 32, 32)
    half[..., 16:] = 1
    assert image_attributes(half, ["contrast"])["contrast"][0] == pytest.approx(0.5, abs=1e-6)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    col = image_attributes(torch.cat([red, red.mean(1, keepdim=True).expand(-1, 3, -1, -1)]), ["colourfulness"])
    assert col["colourfulness"][0] == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-4)
    assert col["colourfulness"][1] == pytest.approx(0.0, abs=1e-4)
    # a fine checkerboard is sharper and more textured than its blurred copy; batched == one by one
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = ((yy // 2 + xx // 2) % 2).float().expand(3, -1, -1)[None]
    blurred = corrupt(board, "gaussian_blur", 2)
    both = image_attributes(torch.cat([board, blurred]), ["sharpness", "texture_energy"])
    assert both["sharpness"][0] > 10 * both["sharpness"][1]
    assert both["texture_energy"][0] > 3 * both["texture_energy"][1]
    single = image_attributes(blurred, ["sharpness"])
    assert single["sharpness"][0] == pytest.approx(both["sharpness"][1], rel=1e-5)


def test_object_scale_follows_the_mask_size() -> None:
    g = torch.Generator().manual_seed(0)
    x = 0.15 + 0.05 * torch.rand(2, 3, 64, 64, generator=g)
    maps = torch.zeros(2, 64, 64)
    for i, side in enumerate((16, 40)):
        o = (64 - side) // 2
        x[i, :, o:o + side, o:o + side] = torch.tensor([0.9, 0.3, 0.2])[:, None, None]
        maps[i, o:o + side, o:o + side] = 1
    area = object_scale(None, x, [0, 0], maps=maps, workers=1)  # type: ignore[arg-type]
    assert area[0] == pytest.approx(16 * 16 / 64 ** 2, abs=0.03)
    assert area[1] == pytest.approx(40 * 40 / 64 ** 2, abs=0.05)
    flat = object_scale(None, x[:1], [0], maps=torch.zeros(1, 64, 64))  # type: ignore[arg-type]
    assert math.isnan(flat[0])  # a flat map says nothing about the object's size


# --- corruptions ----------------------------------------------------------------------------------------------

def _photo(n: int = 2, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bilinear")
    return (base * 0.8 + 0.1).clamp(0, 1)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_is_bounded_seeded_and_stronger_with_severity(name: str) -> None:
    x = _photo()
    before = x.clone()
    outs = [corrupt(x, name, s, seed=3, ids=[10, 11]) for s in range(1, 6)]
    assert torch.equal(x, before)  # the input is not modified
    change = []
    for y in outs:
        assert y.shape == x.shape and y.dtype == x.dtype and float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)  # 8-bit levels, as ImageNet-C saves them
        change.append(float((y - x).abs().mean()))
    assert change[0] > 0
    assert change[-1] > change[0], change
    # the same image is corrupted the same way in any batch; another seed differs for random corruptions
    alone = corrupt(x[1:], name, 3, seed=3, ids=[11])
    assert torch.equal(alone, outs[2][1:])


def test_imagenet_c_definitions_match_their_formulas() -> None:
    from skimage.filters import gaussian
    from skimage.util import random_noise  # noqa: F401  (the impulse definition follows it)

    x = _photo(1, 40)
    arr = (x[0].permute(1, 2, 0).numpy() * 255).round() / 255
    want = np.round(np.clip(gaussian(arr, sigma=3, channel_axis=-1), 0, 1) * 255) / 255
    got = corrupt(x, "gaussian_blur", 3)[0].permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6
    c = corrupt(x, "contrast", 2)[0].permute(1, 2, 0).numpy()
    means = arr.mean((0, 1), keepdims=True)
    assert np.abs(c - np.round(((arr - means) * 0.3 + means) * 255) / 255).max() <= 1 / 255 + 1e-6
    gray = torch.full((1, 3, 100, 100), 102 / 255)
    imp = corrupt(gray, "impulse_noise", 5)
    assert float((imp != gray).float().mean()) == pytest.approx(0.27, abs=0.02)
    noisy = corrupt(gray, "gaussian_noise", 1) - gray
    assert float(noisy.std()) == pytest.approx(0.08, abs=0.01)
    occ = corrupt(torch.zeros(1, 3, 100, 100), "occlusion", 3)
    assert float((occ > 0).float().mean()) == pytest.approx(0.2, abs=0.01)


def test_corruption_names_checked() -> None:
    assert corruption_names(None) == list(DEFAULT_CORRUPTIONS)
    assert corruption_names("all") == list(CORRUPTIONS)
    assert corruption_names("jpeg_compression, scale") == ["jpeg_compression", "scale"]
    with pytest.raises(UserError, match="closest: gaussian_blur"):
        corruption_names("gaussian_blurr")
    with pytest.raises(UserError, match="severity"):
        corrupt(_photo(), "scale", 6)


# --- the study on a tiny CNN -----------------------------------------------------------------------------------

def _dataset(root: Path, n: int = 10, *, size: int = 40, folders: list[str] | None = None,
             extra: bool = True) -> tuple[Path, list[int]]:
    root.mkdir()
    g = torch.Generator().manual_seed(5)
    labels = [i % 5 for i in range(n)]
    rows = []
    for i in range(n):
        img = (torch.rand(3, 8, 8, generator=g) * 255).byte().permute(1, 2, 0).numpy()
        w = size + 8 * (i % 3)
        pil = Image.fromarray(img).resize((w, size), Image.Resampling.BILINEAR)
        if folders:
            (root / folders[labels[i]]).mkdir(exist_ok=True)
            pil.save(root / folders[labels[i]] / f"im{i:02d}.png")
        else:
            pil.save(root / f"im{i:02d}.png")
            rows.append(f"im{i:02d}.png,n{labels[i]},{labels[i]},{'odd' if i % 2 else 'even'},{i / 10}\n")
    if not folders:
        (root / "LABELS.csv").write_text("file,wnid,class_index,parity,score\n" + "".join(rows))
    return root, labels


def test_slice_matches_an_independent_forward_pass(tiny, tmp_path: Path) -> None:
    root, labels = _dataset(tmp_path / "d")
    r = slice_accuracy(tiny, root, attributes=["brightness", "aspect_ratio", "object_scale", "parity", "score"],
                       bins=2, corruptions="scale,occlusion", severities=(1, 5), reference=tiny, batch_size=4,
                       engine="torch")
    files = sorted(root.glob("*.png"))
    x = tiny.load(files)
    with torch.no_grad():
        top = tiny(x).topk(5, -1).indices
    y = torch.tensor(labels)
    assert r.correct1.tolist() == (top[:, 0] == y).tolist()
    assert r.correct5.tolist() == (top == y[:, None]).any(1).tolist()
    assert r.overall.n == 10 and r.overall.top1 == pytest.approx(float((top[:, 0] == y).float().mean()))
    by = {s.name: s for s in r.slices}
    assert sum(b.n for b in by["brightness"].bins) == 10
    assert [b.label for b in by["parity"].bins] == ["even", "odd"] and by["parity"].kind == "categorical"
    assert by["score"].kind == "numeric" and [b.n for b in by["score"].bins] == [5, 5]
    assert sorted(set(np.round(r.values["aspect_ratio"], 4))) == [1.0, 1.2, 1.4]
    assert len(r.values["object_scale"]) == 10
    # each corrupted score is the network's answer on exactly those corrupted pixels
    xc = corrupt(x, "occlusion", 5, seed=0, ids=np.arange(10))
    with torch.no_grad():
        want = (tiny(xc).argmax(-1) == y).float().mean()
    curve = {c.name: c for c in r.corruptions}["occlusion"]
    assert curve.top1[1] == pytest.approx(float(want))
    # the reference is the same network: every corruption error is exactly 100%
    if all(c.ce is not None and math.isfinite(c.ce) for c in r.corruptions):
        assert r.mce == pytest.approx(100.0)
    # batching does not change anything
    r2 = slice_accuracy(tiny, root, attributes=["brightness"], bins=2, corruptions="occlusion", severities=(1, 5),
                        batch_size=3, engine="torch")
    assert r2.corruptions[0].top1 == curve.top1 and r2.correct1.tolist() == r.correct1.tolist()


def test_folder_per_class_labels_by_name(tiny, tmp_path: Path) -> None:
    root, _ = _dataset(tmp_path / "f", n=6, folders=[f"class{i}" for i in range(5)])
    r = slice_accuracy(tiny, root, attributes=["contrast"], engine="torch")
    assert r.labels.tolist() == [int(f.split("/")[0][-1]) for f in r.files]
    bad, _ = _dataset(tmp_path / "b", n=6, folders=["cat", "dog", "c2", "c3", "c4"])
    with pytest.raises(UserError, match="not one of the model's class names"):
        slice_accuracy(tiny, bad, attributes=["contrast"])
    root2, _ = _dataset(tmp_path / "u")
    with pytest.raises(UserError, match="unknown attribute 'colour'"):
        slice_accuracy(tiny, root2, attributes=["colour"])


def test_slice_cli_writes_plots_csv_and_json(tiny_module, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from convlens.cli import main

    ts = tmp_path / "tiny.pt"
    torch.jit.trace(tiny_module, torch.rand(1, 3, 224, 224)).save(str(ts))
    root, _ = _dataset(tmp_path / "d", n=6)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["slice", str(root), "--model", str(ts), "--attributes", "brightness,parity",
                                    "--bins", "2", "--corruptions", "jpeg_compression", "--reference", str(ts),
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    for f in ("attributes.png", "corruptions.png", "attributes.csv", "images.csv", "corruptions.csv"):
        assert (out / f).stat().st_size > 0, f
    doc = json.loads((out / "result.json").read_text())
    s = doc["slice"]
    assert s["n"] == 6 and len(s["images"]) == 6 and s["reference"]
    assert [a["name"] for a in s["attributes"]] == ["brightness", "parity"]
    assert len(s["corruptions"]) == 1 and len(s["corruptions"][0]["top1"]) == 5
    with open(out / "corruptions.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    for args, msg in ((["--corruptions", "fog"], "unknown corruption 'fog'"),
                      ([], "a TorchScript network cannot be hooked"),
                      (["--attributes", "nope"], "unknown attribute 'nope'")):
        bad = CliRunner().invoke(main, ["slice", str(root), "--model", str(ts), *args, "--out", str(tmp_path / "x")])
        assert isinstance(bad.exception, UserError) and msg in str(bad.exception), (args, bad.exception)


@pytest.mark.slow
def test_slice_on_photos_object_scale_and_severity(lite0, sample_dir) -> None:
    r = slice_accuracy(lite0, sample_dir, limit=8, attributes=["object_scale"], corruptions="gaussian_noise",
                       severities=(1, 5), batch_size=8)
    area = np.asarray(r.values["object_scale"], float)
    assert np.isfinite(area).sum() >= 6 and np.nanmin(area) > 0.01 and np.nanmax(area) < 0.99
    assert r.corruptions[0].top1[1] < r.corruptions[0].top1[0]  # severity 5 noise hurts
