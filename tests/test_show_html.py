"""The show area without a browser: the tour's section runner, the microscope's reducer, guided units, escaping."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens
from convlens.core.taps import backward_rule
from convlens.read.reducers import BatchMeta
from convlens.show import tour as tour_mod
from convlens.show.html import fmt_number, render, slug, svg_histogram
from convlens.show.microscope import (
    ChannelHistogram,
    build_microscope,
    channel_weights_image,
    default_layers,
    guided_units,
)

XSS = "<img src=x onerror=alert(1)>"


def _photos(folder: Path, n: int = 6, *, xss: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        arr = (torch.rand(36, 44, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / (f"{XSS}.jpg" if xss and i == 0 else f"p{i}.jpg"))
    return folder


def test_fmt_number_and_slug() -> None:
    assert fmt_number(3) == "3"
    assert fmt_number(12345) == "12,345"
    assert fmt_number(0.123456) == "0.123"
    assert fmt_number(123456.7) == "123,457"
    assert fmt_number(True) == "True"
    assert slug("blocks.4.0") == "blocks.4.0"
    assert slug("../a b/<c>") == "a_b_c"
    assert "/" not in slug("../../etc/passwd")


def test_templates_escape_user_text(tmp_path: Path) -> None:
    res = tour_mod.SectionResult("k", XSS, XSS, status="failed", error=XSS)
    res.output.params[XSS] = XSS
    page = render("tour.html", tmp_path / "index.html", sections=[res], model_name=XSS, summary_line=XSS,
                  profile="quick", seed=0, running=False, written="now", version="0", counts="1 failed",
                  total_seconds=1.0)
    text = page.read_text()
    assert XSS not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_svg_histogram_is_numbers_only() -> None:
    svg = str(svg_histogram([0, 5, 10], [-1.0, 0.0, 1.0, 2.0]))
    assert svg.startswith("<svg") and svg.count("<rect") == 3 and "<line" in svg  # zero line at 0


def test_channel_histogram_merge_equals_one_pass() -> None:
    torch.manual_seed(0)
    batches = [torch.randn(3, 4, 5, 5) * 2 for _ in range(4)]
    meta = BatchMeta(np.arange(3), [Path("x")] * 3, None, torch.zeros(3, 3, 8, 8))
    whole, a, b = (ChannelHistogram("l", bins=10, low=-3, high=3) for _ in range(3))
    for i, x in enumerate(batches):
        whole.update({"l": x}, meta)
        (a if i < 2 else b).update({"l": x}, meta)
    merged, one = a.merge(b).result(), whole.result()
    edges, counts, e2, c2 = merged.edges, merged.counts, one.edges, one.counts
    assert np.array_equal(counts, c2) and np.allclose(edges, e2)
    # hand count for one channel, with out-of-range values clamped into the end bins
    vals = torch.cat([x[:, 2].flatten() for x in batches])
    idx = ((vals + 3) / 6 * 10).floor().clamp(0, 9).long()
    assert np.array_equal(counts[2], torch.bincount(idx, minlength=10).numpy())
    assert counts.sum() == sum(x.numel() for x in batches)


def test_guided_units_batched_equals_one_by_one(tiny) -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    chans, ys, xs = [0, 3, 5], [1, 8, 15], [2, 0, 9]
    batched = guided_units(tiny, "conv2", x, chans, ys, xs)
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        with backward_rule("guided"), convlens.Tap(tiny, "conv2") as tap:
            tap.run(xi)
            tap.outputs["conv2"][0, chans[i], ys[i], xs[i]].backward()
        assert torch.allclose(batched[i], xi.grad[0], atol=1e-6)
    # only pixels inside the unit's receptive field get gradient
    rf = tiny.layers["conv2"].rf
    x0, y0, x1, y1 = rf.box(ys[1], xs[1], 32, 32)
    outside = batched[1].abs().clone()
    outside[:, y0:y1, x0:x1] = 0
    assert outside.sum() == 0 and batched[1].abs().sum() > 0


def test_channel_weights_image_kinds() -> None:
    rgb, text = channel_weights_image(torch.nn.Conv2d(3, 4, 5), 1)
    assert "RGB" in text and rgb.size[0] > 5
    _, text = channel_weights_image(torch.nn.Conv2d(8, 8, 3, groups=8), 2)
    assert "depthwise" in text
    _, text = channel_weights_image(torch.nn.Conv2d(8, 4, 3), 0)
    assert "input channels" in text
    _, text = channel_weights_image(torch.nn.Conv2d(10, 4, 1), 0)
    assert "1x1" in text and "10" in text


def test_default_layers(tiny, lite0) -> None:
    from convlens.read.scan import is_rectified

    # the rectified layer ending each of three stages, not the stage's linear projection
    assert default_layers(lite0) == ["blocks.1.1.bn2", "blocks.3.2.bn2", "blocks.5.3.bn2"]
    assert all(is_rectified(lite0, p) for p in default_layers(lite0)) and not is_rectified(lite0, "blocks.3")
    picks = default_layers(tiny)
    assert picks and all(tiny.layers[p].spatial and is_rectified(tiny, p) for p in picks)


def test_microscope_site_escapes_and_resumes(tiny, tmp_path: Path) -> None:
    data = _photos(tmp_path / "data")
    out = tmp_path / "site"
    site = build_microscope(tiny, data, out, layers=["conv1", "conv3"], k=3, vis_steps=3, vis_size=24,
                            progress=False)
    assert site.images == 6 and not site.reused_scan
    pages = list(out.rglob("*.html"))
    assert len(pages) == 1 + 2 + 6 + 8  # index, 2 layer pages, 6 + 8 channel pages
    for p in pages:
        assert XSS not in p.read_text()
    assert any("&lt;img src=x onerror=alert(1)&gt;" in p.read_text() for p in pages)
    # per-channel numbers: top-k values are sorted, dead fraction in [0, 1], every image file exists
    d = site.as_dict()
    assert [lay["name"] for lay in d["layers"]] == ["conv1", "conv3"]
    assert all(0 <= lay["dead_fraction"] <= 1 for lay in d["layers"])
    for p in pages:
        for src in re.findall(r'src="([^"]+)"', p.read_text()):
            assert (p.parent / src).is_file(), (p, src)
    # resumable: a second run reuses the scan and leaves finished pictures untouched
    pic = next((out / "layers" / "conv3" / "img").glob("c0_p0.jpg"))
    before = pic.stat().st_mtime_ns
    (out / "layers" / "conv3" / "img" / "c1_vis.png").unlink()
    again = build_microscope(tiny, data, out, layers=["conv1", "conv3"], k=3, vis_steps=3, vis_size=24,
                             progress=False)
    assert again.reused_scan
    assert pic.stat().st_mtime_ns == before
    assert (out / "layers" / "conv3" / "img" / "c1_vis.png").is_file()


def test_microscope_rejects_unknown_layer(tiny, tmp_path: Path) -> None:
    with pytest.raises(convlens.UserError, match="closest"):
        build_microscope(tiny, _photos(tmp_path / "d", 2, xss=False), tmp_path / "s", layers=["conv9"],
                         progress=False)


def test_tour_reports_failures_in_place_and_runs_the_rest(tiny, tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []

    def ok(ctx, out):
        calls.append("ok")
        out.numbers["answer"] = 42
        ctx.figure(out, "pic", Image.new("RGB", (20, 10), "red"), "a red picture")

    def boom(ctx, out):
        calls.append("boom")
        raise RuntimeError("exploded <b>here</b>")

    def absent(ctx, out):
        calls.append("absent")
        import convlens.no_such_module_xyz  # noqa: F401 - a missing import is a failure like any other

    secs = (tour_mod.Section("a", "A", "first.", boom), tour_mod.Section("b", "B", "second.", absent),
            tour_mod.Section("c", "C", "third.", ok))
    monkeypatch.setattr(tour_mod, "SECTIONS", secs)
    seen: list[tuple[int, str]] = []
    report = tour_mod.run_tour(tiny, tmp_path / "t", progress=lambda i, n, r: seen.append((i, r.status)))
    assert calls == ["boom", "absent", "ok"]
    assert [s.status for s in report.sections] == ["failed", "failed", "ok"]
    assert "exploded" in report.sections[0].error and "RuntimeError" in report.sections[0].traceback
    assert "ModuleNotFoundError" in report.sections[1].error
    assert seen == [(0, "pending"), (1, "failed"), (1, "pending"), (2, "failed"), (2, "pending"), (3, "ok")]
    html = report.path.read_text()
    assert "exploded &lt;b&gt;here&lt;/b&gt;" in html and html.index('id="a"') < html.index('id="c"')
    assert (tmp_path / "t" / "img" / "c-pic.png").is_file()
    d = report.as_dict()
    assert d["counts"] == {"failed": 2, "ok": 1} and d["bytes"] > 0
    assert d["sections"][2]["numbers"] == {"answer": 42}


def test_tour_sections_follow_the_lecture() -> None:
    keys = [s.key for s in tour_mod.SECTIONS]
    assert keys == ["model", "predictions", "weights", "last-layer", "pca", "activations", "dead-units",
                    "receptive-field", "correspondence", "directions", "occlusion", "saliency", "grabcut", "slice",
                    "human-study", "visualize", "multifaceted", "dream", "invert", "texture", "style", "style-knobs",
                    "fast-style", "fooling", "attacks", "universal"]
    for s in tour_mod.SECTIONS:  # two sentences each ("et al." is no sentence end)
        assert len(re.split(r"(?<!\bal)\.\s+", s.explanation.strip())) == 2, s.key


def test_tour_foundation_sections_on_tiny_model(tiny, tmp_path: Path) -> None:
    report = tour_mod.run_tour(tiny, tmp_path / "t", only=["model", "predictions", "weights"])
    assert [s.status for s in report.sections[:3]] == ["ok", "ok", "ok"], [s.error for s in report.sections]
    weights = report.sections[2]
    assert weights.numbers["filters"] == 6 and weights.params["layer"] == "conv1"
    for s in report.sections[:3]:
        for f in s.figures:
            assert (tmp_path / "t" / f.file).is_file()


def test_augmented_crops_are_deterministic() -> None:
    photos = {"a": Image.new("RGB", (100, 80), "red"), "b": Image.new("RGB", (60, 90), "blue")}
    one = tour_mod.augmented_crops(photos, per_photo=3, seed=5)
    two = tour_mod.augmented_crops(photos, per_photo=3, seed=5)
    assert [s for s, _ in one] == ["a"] * 4 + ["b"] * 4
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (_, x), (_, y) in zip(one, two))


def test_cli_tour_and_microscope_bad_input(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "convlens"]
    r = subprocess.run(exe + ["tour", "--only", "nope", "--out", str(tmp_path / "t")], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "unknown tour section" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(exe + ["microscope", str(tmp_path), "--k", "0", "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "--k" in r.stderr


def test_cli_tour_writes_result_json(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "convlens", "tour", "--quick", "--only", "model,weights", "--out",
                        str(tmp_path / "t")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "[1/2] The model" in r.stderr
    d = json.loads((tmp_path / "t" / "result.json").read_text())
    assert d["command"] == "tour" and d["counts"]["ok"] == 2 and d["counts"]["skipped"] == len(tour_mod.SECTIONS) - 2
    assert (tmp_path / "t" / "index.html").is_file()
