"""Linear templates from any layer with linear weights, TorchScript included (issue 13)."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.cli import run as cli_run
from convlens.errors import UserError
from convlens.read.weights import linear_templates, template_shape


class PixelClassifier(nn.Module):
    """A linear classifier on 3x8x8 pixels (the lecture's CIFAR templates, smaller)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.functional.interpolate(x, size=(8, 8)).flatten(1))


def _scripted(tmp_path) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    eager = PixelClassifier()
    with torch.no_grad():  # a recognisable template: class 2 likes red on the left half
        eager.fc.weight[2] = 0
        eager.fc.weight[2].view(3, 8, 8)[0, :, :4] = 1
    path = tmp_path / "linear.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(eager).save(str(path))
    return eager, str(path)


def test_scripted_linear_rows_are_the_templates(tmp_path):
    eager, path = _scripted(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(path)
    t = linear_templates(scripted)  # default layer and inferred shape 3x8x8
    assert t.shape == (4, 3, 8, 8)
    assert torch.equal(t.flatten(1), eager.fc.weight.detach())
    with pytest.raises(UserError, match="not an image"):
        linear_templates(scripted, "fc", shape=(3, 32, 32))
    assert template_shape(3 * 8 * 8) == (3, 8, 8)
    assert template_shape(3 * 224 * 200, (224, 200)) == (3, 224, 200)
    assert template_shape(1000) is None


def test_cli_draws_a_torchscript_linear_classifier(tmp_path, monkeypatch):
    _, path = _scripted(tmp_path)
    for args in (["--layer", "fc"], []):
        out = tmp_path / ("out" + "".join(args))
        monkeypatch.setattr(sys, "argv", ["convlens", "filters", path, *args, "--out", str(out)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cli_run()
            except SystemExit as exc:
                assert not exc.code
        meta = json.loads((out / "result.json").read_text())
        assert meta["kind"] == "templates" and meta["shape"] == [4, 3, 8, 8]
        img = np.asarray(Image.open(out / "templates.png").convert("RGB")).astype(float)
        assert img.std() > 10  # the templates are drawn, not a blank canvas
