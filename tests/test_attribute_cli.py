"""The attribution commands: outputs on disk, result.json keys, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from convlens.attribute import Unit
from convlens.cli import main
from convlens.cli import run as cli_run
from convlens.errors import UserError


@pytest.fixture(scope="module")
def photo(tmp_path_factory, chelsea):
    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    chelsea.save(path)
    return path


@pytest.mark.slow
def test_saliency_writes_maps_and_json(tmp_path, photo):
    res = CliRunner().invoke(main, ["saliency", str(photo), "--method", "gradient,gradcam,guided", "--out",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "result.json").read_text())["saliency"]
    assert 281 <= doc["target"] <= 285 and 0 < doc["probability"] <= 1
    assert set(doc["methods"]) == {"gradient", "gradcam", "guided"}
    m = np.load(tmp_path / "gradient.npy")
    assert m.dtype == np.float32 and m.shape == (224, 224) and doc["crop"]["size"] == [224, 224]
    assert (tmp_path / "saliency.png").is_file()


@pytest.mark.slow
def test_compare_and_unit(tmp_path, photo):
    res = CliRunner().invoke(main, ["saliency", str(photo), "--method", "gradcam", "--compare", "--out",
                                    str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "c" / "result.json").read_text())["saliency"]
    assert len(doc["targets"]) == 2 and doc["targets"][0]["probability"] >= doc["targets"][1]["probability"]
    assert (tmp_path / "c" / "gradcam_top2.npy").is_file()
    res = CliRunner().invoke(main, ["saliency", str(photo), "--method", "guided", "--unit", "blocks.3:5:7:7",
                                    "--out", str(tmp_path / "u")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "u" / "result.json").read_text())["saliency"]["target"] == "blocks.3:5:7:7"


@pytest.mark.parametrize("args, message", [
    (["saliency", "missing.png"], "no such file"),
    (["saliency", "{photo}", "--method", "nope"], "unknown method"),
    (["saliency", "{photo}", "--unit", "blocks.3:9999", "--method", "guided"], "out of range"),
    (["saliency", "{photo}", "--unit", "blocks.x"], "cannot read unit"),
])
def test_bad_input_is_one_line_exit_2(monkeypatch, capsys, photo, tmp_path, args, message):
    argv = ["convlens"] + [a.replace("{photo}", str(photo)) for a in args] + ["--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli_run()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unit_parse():
    assert Unit.parse("blocks.3:5") == Unit("blocks.3", 5)
    assert Unit.parse("blocks.3:5:1:2") == Unit("blocks.3", 5, 1, 2)
    with pytest.raises(UserError):
        Unit.parse("blocks")
