"""The read commands end to end on a few photos: pictures and result.json keys; bad input exits 2."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from convlens.cli import run as cli_run


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["convlens", *args])
    try:
        cli_run()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def photos(sample_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for name in sorted(p.name for p in sample_dir.glob("*.JPEG"))[::100]:  # 8 photos spread over the classes
        shutil.copy(sample_dir / name, d / name)
    return d


def test_read_commands_write_pictures_and_json(photos, tmp_path, monkeypatch, lite0):
    first = min(photos.glob("*.JPEG"))
    cases = [
        (["filters", "--out", str(tmp_path / "f")], "filters.png", ["layer", "kind"]),
        (["activations", str(first), "--layer", "blocks.0", "--out", str(tmp_path / "a")], "activations.png",
         ["channels", "dead"]),
        (["neighbors", str(photos), "-q", str(first), "--k", "3", "--out", str(tmp_path / "n")], "neighbors.png",
         ["queries"]),
        (["embed", str(photos), "--method", "pca", "--out", str(tmp_path / "e")], "grid.png",
         ["points", "trustworthiness"]),
        (["top-patches", str(photos), "--layer", "blocks.1", "--channels", "0-1", "--k", "2", "--out",
          str(tmp_path / "t")], "top_patches.png", ["layer", "channels"]),
        (["dead-units", str(photos), "--layer", "blocks.1.0.bn1.act", "--out", str(tmp_path / "d")],
         "dead_units.png", ["layers"]),
        (["receptive-field", str(photos), "--layer", "blocks.1.0.bn1.act", "--channel", "0", "--images", "1",
          "--stride", "4", "--out", str(tmp_path / "r")], "receptive_field.png", ["theoretical", "empirical"]),
    ]
    for args, png, keys in cases:
        assert _cli(monkeypatch, *args) == 0, args
        out = tmp_path / args[args.index("--out") + 1].split("/")[-1]
        assert (out / png).stat().st_size > 1000
        doc = json.loads((out / "result.json").read_text())
        assert all(k in doc for k in keys), (args[0], list(doc))
    doc = json.loads((tmp_path / "n" / "result.json").read_text())
    q = doc["queries"][0]
    assert len(q["feature"]) == len(q["pixel"]) == 3 and all(n["file"] != str(first) for n in q["feature"])
    doc = json.loads((tmp_path / "t" / "result.json").read_text())
    p = doc["channels"][0]["patches"][0]
    assert set(p) >= {"file", "value", "box"} and len(p["box"]) == 4
    doc = json.loads((tmp_path / "d" / "result.json").read_text())
    assert set(doc["layers"]["blocks.1.0.bn1.act"]) >= {"channels", "dead", "fraction"}
    doc = json.loads((tmp_path / "e" / "result.json").read_text())
    assert len({pt["cell"] for pt in doc["points"]}) == len(doc["points"]) == 8


@pytest.mark.parametrize("args,message", [
    (["activations", "missing.jpg", "--layer", "blocks.0"], "no such file"),
    (["top-patches", "{photos}", "--layer", "blocks.nope"], "unknown layer"),
    (["top-patches", "{photos}", "--layer", "blocks.1", "--channels", "0-999"], "out of range"),
    (["receptive-field", "{photos}", "--layer", "blocks.1", "--channel", "999"], "out of range"),
    (["filters", "--layer", "blocks.0.0.bn1"], "not a Conv2d"),
])
def test_bad_input_is_one_line_and_exit_2(photos, tmp_path, monkeypatch, capsys, args, message):
    args = [a.replace("{photos}", str(photos)) for a in args] + ["--out", str(tmp_path)]
    assert _cli(monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
