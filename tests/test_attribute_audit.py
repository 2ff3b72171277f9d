"""The audit: saliency mass on the object vs the background, from masks or boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.attribute.audit import _box_mask, audit_saliency, object_share
from convlens.errors import UserError
from convlens.images import to_pil


def test_object_share_by_hand():
    s = np.array([[1.0, 3.0], [0.0, -2.0]])
    assert object_share(s, np.array([[True, False], [False, False]])) == pytest.approx(0.25)  # negatives ignored
    assert np.isnan(object_share(np.zeros((2, 2)), np.ones((2, 2), bool)))


def test_box_mask_follows_the_crop(tiny):
    full = _box_mask([(0, 0, 64, 64)], (64, 64), tiny)
    left = _box_mask([(0, 0, 32, 64)], (64, 64), tiny)
    assert full.all() and left[:, :16].all() and not left[:, 16:].any()


def test_audit_with_masks_finds_where_the_map_is(tiny, tmp_path):
    root, masks = tmp_path / "photos", tmp_path / "masks"
    root.mkdir()
    masks.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        x = torch.zeros(3, 32, 32)
        x[:, :, :16] = torch.rand(3, 32, 16, generator=g)  # texture on the left only: edges there
        to_pil(x).save(root / f"im{i}.png")
        m = torch.zeros(3, 32, 32)
        m[:, :, 16 if i < 2 else 0:32 if i < 2 else 16] = 1  # object right (images 0, 1) or left (image 2)
        to_pil(m).save(masks / f"im{i}.png")
    res = audit_saliency(tiny, root, tmp_path / "maps", method="edge", masks=masks)
    by = {i.stem: i for i in res.items}
    assert by["im2.png"].inside > 0.8 and by["im0.png"].background > 0.7  # the texture edge at x=16 spills onto the object
    assert res.most_background(1)[0].stem in ("im0.png", "im1.png")
    assert sum(r["images"] for r in res.per_class()) == 3 and res.summary()["images"] == 3
    with pytest.raises(UserError, match="exactly one"):
        audit_saliency(tiny, root, tmp_path / "maps", method="edge")


def test_audit_gallery_draws_the_outline_on_the_photo() -> None:
    from convlens.show.attribution import audit_gallery

    crop = torch.rand(3, 64, 64)
    m = torch.zeros(64, 64)
    m[20:40, 20:40] = 1.0
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    sheet = audit_gallery([(crop, m, mask, "a: background 0.10"), (crop, m, ~mask, "b: background 0.90")], cell=64)
    arr = np.asarray(sheet)
    assert sheet.width >= 2 * 64 and (arr == 255).all(-1).sum() >= 4 * 30  # both outlines are drawn in white
