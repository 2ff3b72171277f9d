"""Saliency over a folder: stored maps equal direct calls, names stay unique, reruns resume, two models compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import convlens
from convlens.attribute import saliency
from convlens.attribute.folder import compare_maps, crop_box, saliency_folder, spearman
from convlens.cli import main
from convlens.images import to_pil


def _photos(root: Path, n: int = 3) -> Path:
    g = torch.Generator().manual_seed(0)
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            to_pil(torch.rand(3, 40, 48, generator=g)).save(root / sub / f"im{i}.png")  # same names in a/ and b/
    return root


def test_folder_maps_equal_direct_calls_and_resume(tiny, tmp_path):
    root = _photos(tmp_path / "photos")
    store = tmp_path / "out"
    res = saliency_folder(tiny, root, ["gradcam", "gradient"], store, batch_size=4)
    stems = [i.stem for i in res.items]
    assert stems == ["a/im0.png", "a/im1.png", "a/im2.png", "b/im0.png", "b/im1.png", "b/im2.png"]
    assert res.computed == 12 and res.reused == 0
    x = tiny.load(convlens.list_images(root))
    t = tiny(x).argmax(-1)
    want = saliency(tiny, x, "gradcam", t)
    for k, item in enumerate(res.items):
        assert item.target == int(t[k]) and Path(item.maps["gradcam"]).is_file()
        assert np.allclose(item.load("gradcam"), want[k].numpy(), atol=1e-5)
    again = saliency_folder(tiny, root, ["gradcam", "gradient"], store, batch_size=2)
    assert again.computed == 0 and again.reused == 12
    # a changed option, a changed class or a changed model redoes exactly what it affects
    opts = saliency_folder(tiny, root, ["gradcam", "occlusion"], store, options={"occlusion": {"window": 8,
                                                                                         "stride": 4}})
    assert opts.computed == 6 and opts.reused == 6
    opts2 = saliency_folder(tiny, root, ["occlusion"], store, options={"occlusion": {"window": 8, "stride": 8}})
    assert opts2.computed == 6
    other = saliency_folder(tiny, root, ["gradcam"], store, target=(int(t[0]) + 1) % 5)
    assert other.computed == 6
    with torch.no_grad():
        tiny.module.fc.bias += 1.0
    assert saliency_folder(tiny, root, ["gradient"], store).computed == 6


def test_random_methods_resume_to_the_same_maps(tiny, tmp_path):
    root = _photos(tmp_path / "photos", n=2)
    a = saliency_folder(tiny, root, ["smoothgrad"], tmp_path / "one", options={"smoothgrad": {"samples": 3}}, seed=4)
    b = saliency_folder(tiny, root, ["smoothgrad"], tmp_path / "two", options={"smoothgrad": {"samples": 3}}, seed=4,
                        batch_size=1)
    for ia, ib in zip(a.items, b.items):
        assert np.array_equal(ia.load("smoothgrad"), ib.load("smoothgrad"))
    c = saliency_folder(tiny, root, ["smoothgrad"], tmp_path / "one", options={"smoothgrad": {"samples": 3}}, seed=5)
    assert c.computed == 4  # another seed is another map


def test_spearman_and_crop_box(tiny):
    a = np.arange(12.0).reshape(3, 4)
    assert spearman(a, a) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0)  # ranks, not values
    # tiny: size 32, resize 37 (32 / 0.875); a 74 x 148 (w x h) photo is resized to 37 x 74, cropped centrally
    x0, y0, x1, y1 = crop_box((74, 148), tiny)
    assert (x0, y0, x1, y1) == pytest.approx((4, 42, 68, 106))  # crop at (2, 21) of 37 x 74, times 2


def test_two_models_compared(tiny, tiny_module, tmp_path):
    root = _photos(tmp_path / "photos", n=2)
    a = saliency_folder(tiny, root, ["gradient"], tmp_path / "a")
    same = compare_maps(a, saliency_folder(tiny, root, ["gradient"], tmp_path / "b"), tiny, tiny, "gradient")
    assert all(r == pytest.approx(1.0) for r in same.spearman)
    assert all(o == pytest.approx(1.0) for o in same.top_overlap) and np.abs(same.disagreement[0]).max() == 0
    torch.manual_seed(7)
    from tests.conftest import TinyCNN

    other = convlens.Model.wrap(TinyCNN().eval(), mean=(0.5,) * 3, std=(0.25,) * 3, size=32, name="other")
    diff = compare_maps(a, saliency_folder(other, root, ["gradient"], tmp_path / "c"), tiny, other, "gradient")
    assert diff.mean_spearman < 0.99 and len(diff.spearman) == 4


@pytest.fixture
def tiny_ts(tiny_module, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.jit.trace(tiny_module, torch.rand(1, 3, 224, 224)).save(str(path))
    return path


def test_folder_cli_writes_overlays_sheet_and_resumes(tiny_ts, tmp_path):
    root = _photos(tmp_path / "photos", n=2)
    out = tmp_path / "out"
    args = ["saliency", str(root), "--method", "gradient,rise", "--masks", "8", "--model", str(tiny_ts), "--out",
            str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "result.json").read_text())["saliency"]
    assert doc["images"] == 4 and doc["computed"] == 8 and doc["reused"] == 0
    item = doc["items"][2]
    assert item["stem"] == "b/im0.png" and 0 < item["probability"] <= 1
    over = Image.open(out / item["methods"]["gradient"]["overlay"])
    alpha = Image.open(out / item["methods"]["rise"]["alpha"])
    assert over.width > 48 and over.height > 40  # the photo at full resolution, plus colour bar and caption
    assert alpha.mode == "RGBA" and alpha.size == (48, 40)
    assert np.load(out / item["methods"]["gradient"]["map"]).shape == (224, 224)
    assert (out / "contact_sheet.png").is_file()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and json.loads((out / "result.json").read_text())["saliency"]["reused"] == 8
    res = CliRunner().invoke(main, ["saliency", str(root), "--method", "gradient", "--model", str(tiny_ts),
                                    "--compare-model", str(tiny_ts), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "result.json").read_text())["saliency"]["compare"]
    assert cmp["same_class"] and cmp["methods"]["gradient"]["mean_spearman"] == pytest.approx(1.0)
    assert (tmp_path / "cmp" / "compare_gradient.png").is_file()


@pytest.mark.parametrize("extra, message", [(["--unit", "conv1:0"], "--unit"), (["--compare"], "--unit"),
                                            (["EMPTY"], "no images")])
def test_folder_cli_errors_are_one_line(tiny_ts, tmp_path, monkeypatch, capsys, extra, message):
    from convlens.cli import run as cli_run

    root = _photos(tmp_path / "photos", n=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = str(empty) if extra == ["EMPTY"] else str(root)
    extra = [] if extra == ["EMPTY"] else extra
    monkeypatch.setattr("sys.argv", ["convlens", "saliency", folder, "--model", str(tiny_ts), "--out",
                                     str(tmp_path / "o"), *extra])
    with pytest.raises(SystemExit) as exc:
        cli_run()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
