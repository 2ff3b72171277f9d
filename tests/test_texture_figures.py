"""Issue 13: every label of the layer-sweep figure is drawn in full (no ellipsis), images at full size."""

from __future__ import annotations

import pytest
import torch
from PIL import ImageDraw

from convlens.show.style import texture_sweep_figure
from convlens.synthesize.texture import Regularity, TextureRegularity, TextureResult


def _result(layers: list[str], side: int) -> TextureResult:
    reg = Regularity((0.0, 0.1), 10.0, 90.0, 0.1)
    img = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(len(layers)))
    return TextureResult(img, layers, 0.0, 0.0, 1, 0.0, img, TextureRegularity(reg, reg, 1.0))


@pytest.mark.parametrize("side", [96, 128])
def test_sweep_labels_are_drawn_in_full(side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["bn1.drop", "blocks.1.0.bn2.drop", "blocks.2.0.bn2.drop", "blocks.3.0.bn2.drop", "blocks.5.0.bn2.drop"]
    sweep = [_result(names[: i + 1], side) for i in range(len(names))]
    drawn: list[str] = []
    original = ImageDraw.ImageDraw.multiline_text

    def record(self, xy, text, *args, **kw):  # type: ignore[no-untyped-def]
        drawn.append(text)
        return original(self, xy, text, *args, **kw)

    monkeypatch.setattr(ImageDraw.ImageDraw, "multiline_text", record)
    fig = texture_sweep_figure(sweep)
    assert len(drawn) == len(sweep) + 1
    assert not any("…" in t for t in drawn), drawn
    for r, text in zip(sweep, drawn[1:]):
        assert r.layers[-1] in text.replace("\n", ""), text  # a name broken after a dot reads the same
    assert fig.width >= (len(sweep) + 1) * side  # the images are not shrunk
