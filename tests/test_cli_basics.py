"""The CLI as a user runs it: predict writes its JSON; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def convlens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convlens", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def test_predict_writes_documented_json(tmp_path, chelsea):
    chelsea.save(tmp_path / "cat.png")
    out = tmp_path / "out"
    res = convlens("predict", str(tmp_path / "cat.png"), "--top", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["command"] == "predict" and doc["model"] == "efficientnet_lite0"
    top = doc["predictions"][0]["top"]
    assert len(top) == 3 and {"index", "label", "prob"} <= set(top[0])
    assert top[0]["index"] in (281, 282, 285) and 0 < top[0]["prob"] <= 1
    assert "tabby" in res.stdout or "cat" in res.stdout


def test_layers_table(tmp_path):
    res = convlens("layers", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "blocks.6" in res.stdout and "conv_stem" in res.stdout
    rows = json.loads((tmp_path / "result.json").read_text())["layers"]
    stem = next(r for r in rows if r["name"] == "conv_stem")
    assert stem["shape"] == [32, 112, 112] and stem["receptive_field"] == [3, 3]


@pytest.mark.parametrize("args, message", [
    (["predict", "nowhere.jpg"], "no such file"),
    (["predict", "--model", "resnet9000", "x.jpg"], "unknown model"),
    (["layers", "torchvision:resnet18", "--weights", "missing.pt"], "no such weights file"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, message):
    res = convlens(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_not_an_image_and_weights_that_do_not_fit(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo")
    res = convlens("predict", "notes.jpg", cwd=tmp_path)
    assert res.returncode == 2 and "not an image" in res.stderr and "Traceback" not in res.stderr
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    res = convlens("layers", "torchvision:resnet18", "--weights", "wrong.pt", cwd=tmp_path)
    assert res.returncode == 2 and "do not fit" in res.stderr and "Traceback" not in res.stderr
