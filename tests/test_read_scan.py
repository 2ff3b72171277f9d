"""The one-pass scan and its reducers: brute-force equality, associative merges, cache, bad files, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.core.taps import activations
from convlens.read import DeadUnits, Histogram, PixelCodes, PooledFeatures, TopK, load_dataset, scan

LAYERS = ["conv2", "shared", "conv4"]


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(13):
        sub = tmp_path / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        arr = rng.integers(0, 256, size=(40 + i, 36, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i:02d}.png")
    return tmp_path


def _all_acts(model, ds, layer):
    x = torch.stack([model.preprocess.to_tensor(f) for f in ds.files])
    return activations(model, x, layer)[layer]


def test_topk_equals_brute_force(tiny, folder):
    ds = load_dataset(folder)
    out = scan(tiny, ds, [TopK("conv2", k=4), TopK("conv4", k=3, channels=[1, 5])], batch_size=3, progress=False)
    for layer, k, chans in (("conv2", 4, None), ("conv4", 3, [1, 5])):
        a = _all_acts(tiny, ds, layer)
        if chans:
            a = a[:, chans]
        vals, pos = a.flatten(2).max(-1)  # (N, C)
        res = out[f"topk:{layer}"]
        w = a.shape[-1]
        for c in range(a.shape[1]):
            order = sorted(range(len(ds)), key=lambda i: (-float(vals[i, c]), i))[:k]
            assert res.ids[c].tolist() == order
            np.testing.assert_allclose(res.values[c], vals[order, c].numpy(), rtol=1e-5)
            assert res.y[c].tolist() == [int(pos[i, c]) // w for i in order]
            assert res.x[c].tolist() == [int(pos[i, c]) % w for i in order]
            assert [res.file_of(i) for i in res.ids[c]] == [ds.files[i] for i in order]


def _reducers():
    return [PooledFeatures(["conv4", "fc"]), TopK("conv2", k=5), DeadUnits(LAYERS), Histogram("conv4", bins=20),
            PixelCodes(8)]


def test_two_half_scans_merge_into_one_full_scan(tiny, folder):
    ds = load_dataset(folder)
    full = scan(tiny, ds, _reducers(), batch_size=4, progress=False)
    first, second = _reducers(), _reducers()
    scan(tiny, ds[7:], second, batch_size=2, progress=False)  # the later half first: order must not matter
    scan(tiny, ds[:7], first, batch_size=5, progress=False)
    merged = {r.name: r.merge(s).result() for r, s in zip(first, second)}
    for layer in ("conv4", "fc"):
        np.testing.assert_allclose(merged["features"][layer], full["features"][layer], rtol=1e-5, atol=1e-6)
    assert merged["features"].files == full["features"].files
    t1, t2 = merged["topk:conv2"], full["topk:conv2"]
    assert (t1.ids == t2.ids).all() and (t1.y == t2.y).all() and (t1.x == t2.x).all()
    np.testing.assert_allclose(t1.values, t2.values, rtol=1e-5)
    for layer in LAYERS:
        assert (merged["dead"][layer].silent == full["dead"][layer].silent).all()
        assert merged["dead"][layer].images == full["dead"][layer].images == len(ds)
    h1, h2 = merged["hist:conv4"], full["hist:conv4"]
    assert (h1.counts == h2.counts).all() and h1.below == h2.below and h1.above == h2.above
    assert h1.min == pytest.approx(h2.min) and h1.mean == pytest.approx(h2.mean, rel=1e-5)
    np.testing.assert_allclose(merged["pixels"][1], full["pixels"][1], atol=1e-6)


def test_dead_units_and_histogram_by_hand(tiny, folder):
    ds = load_dataset(folder)
    out = scan(tiny, ds, [DeadUnits(["conv2"]), Histogram("conv2", bins=10, low=-1, high=1)], progress=False)
    a = _all_acts(tiny, ds, "conv2")
    silent = (a.flatten(2).amax(-1) <= 0).sum(0).numpy()
    d = out["dead"]["conv2"]
    assert (d.silent == silent).all()
    assert d.dead == [int(c) for c in np.flatnonzero(silent == len(ds))]
    h = out["hist:conv2"]
    inside = a[(a >= -1) & (a <= 1)]
    assert h.counts.sum() == inside.numel() and h.below == int((a < -1).sum()) and h.above == int((a > 1).sum())
    assert h.max == pytest.approx(float(a.max()))


def test_batched_equals_unbatched_and_no_hooks_left(tiny, tiny_module, folder):
    ds = load_dataset(folder)
    one = scan(tiny, ds, [PooledFeatures("conv4")], batch_size=1, progress=False)["features"]["conv4"]
    many = scan(tiny, ds, [PooledFeatures("conv4")], batch_size=6, progress=False)["features"]["conv4"]
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)
    x = torch.stack([tiny.preprocess.to_tensor(f) for f in ds.files])
    np.testing.assert_allclose(many, activations(tiny, x, "conv4")["conv4"].mean((2, 3)).numpy(), rtol=1e-4,
                               atol=1e-5)
    assert all(not m._forward_hooks for m in tiny_module.modules())
    # the user's network is left as it was: same layout, same flags
    assert all(p.is_contiguous() for p in tiny_module.parameters())
    tiny_module.train()
    scan(tiny, ds[:3], [TopK("conv2", k=1)], progress=False)
    assert all(m.training for m in tiny_module.modules())


def test_feature_cache_is_reused_and_invalidated(tiny, folder, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset(folder)
    a = scan(tiny, ds, [PooledFeatures("conv4")], cache_dir=cache, progress=False)
    assert a.images == len(ds)
    b = scan(tiny, ds, [PooledFeatures("conv4")], cache_dir=cache, progress=False)
    assert b.images == 0  # nothing ran: everything came from disk
    np.testing.assert_array_equal(a["features"]["conv4"], b["features"]["conv4"])
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(ds.files[0])  # a changed file -> a new key
    c = scan(tiny, load_dataset(folder), [PooledFeatures("conv4")], cache_dir=cache, progress=False)
    assert c.images == len(ds)


def test_interrupted_scan_resumes_from_cache(tiny, folder, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset(folder)

    class Boom(TopK):
        calls = 0

        def update(self, acts, meta):
            Boom.calls += 1
            if Boom.calls == 3:
                raise KeyboardInterrupt
            super().update(acts, meta)

    with pytest.raises(KeyboardInterrupt):
        scan(tiny, ds, [PooledFeatures("conv4"), Boom("conv2")], cache_dir=cache, batch_size=2, progress=False)
    again = scan(tiny, ds, [PooledFeatures("conv4")], cache_dir=cache, batch_size=2, progress=False)
    assert 0 < again.images < len(ds)  # only what was not finished
    full = scan(tiny, ds, [PooledFeatures("conv4")], batch_size=2, progress=False)
    np.testing.assert_allclose(again["features"]["conv4"], full["features"]["conv4"], rtol=1e-5, atol=1e-6)


def test_unreadable_images_are_skipped_and_reported(tiny, folder):
    (folder / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        out = scan(tiny, folder, [PooledFeatures("fc"), TopK("conv2", k=2)], progress=False)
    assert [f for f, _ in out.skipped] == [str(folder / "a" / "broken.jpg")]
    assert out.images == 13 and len(out["features"].files) == 13


def test_labels_from_folders_and_csv(folder):
    ds = load_dataset(folder)
    assert set(ds.labels) == {"a", "b"} and ds.labels[0] == "a"
    (folder / "labels.csv").write_text("file,label\n" + "".join(
        f"{f.relative_to(folder)},{i % 3}\n" for i, f in enumerate(ds.files)))
    ds2 = load_dataset(folder)
    assert ds2.labels == [i % 3 for i in range(len(ds2))]
    half = ds2[3:6]
    assert half.ids.tolist() == [3, 4, 5] and half.labels == [0, 1, 2]


def test_sample_labels_csv(sample_dir):
    ds = load_dataset(sample_dir, limit=10)
    assert len(ds) == 10 and all(isinstance(lab, int) for lab in ds.labels)
