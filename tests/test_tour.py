"""Every tour section on a random-weight zoo network: a section that fails fails the test (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo_recipes
from convlens.show import tour as tour_mod


@pytest.mark.slow
def test_every_tour_section_is_ok_on_a_random_zoo_model(tmp_path: Path) -> None:
    model = zoo_recipes.build("torchvision:resnet18")
    report = tour_mod.run_tour(model, tmp_path / "t", quick=True)
    bad = {s.key: s.error for s in report.sections if s.status != "ok"}
    assert not bad, bad
    assert len(report.sections) == len(tour_mod.SECTIONS)
    assert all(s.figures or s.tables for s in report.sections)


def test_tour_has_no_imagenet_index_or_layer_name() -> None:
    src = Path(tour_mod.__file__).read_text()
    for name in ("blocks.", "bn1", "features.", "layer4", "conv_stem"):
        assert f'"{name}' not in src, name
    for index in ("130", "948", "574", "105"):
        assert f"[{index}," not in src and f" {index} if" not in src, index


def test_tour_classes_come_from_the_models_predictions(tiny, tmp_path: Path) -> None:
    photos, _ = tour_mod.tour_images()
    ctx = tour_mod.TourContext(tiny, photos, tmp_path, quick=True, seed=0, work=tmp_path / "w")
    preds = ctx.predictions(1)
    assert set(ctx.classes(3)) <= {p[0].index for p in preds.values()}
    assert ctx.verdict("gravel") == "no class"
    assert len(photos) >= 15  # not only crops of a few photos
    build, hold = ctx.split_files()
    assert {ctx.group(f) for f in build}.isdisjoint({ctx.group(f) for f in hold})
    assert torch.is_tensor(ctx.pixels())
