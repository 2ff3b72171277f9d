"""One cache keyed by what a result depends on: the weights, the preprocessing, the layer, the code version."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from PIL import Image

import convlens
from convlens.core.cache import cache_key, model_fingerprint
from convlens.read import PooledFeatures, load_dataset, scan


def _photos(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_two_weight_files_of_one_architecture_get_different_cached_features(tmp_path):
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"r18_{seed}.pth"
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
        files.append(path)
    models = []
    for path in files:
        net = torchvision.models.resnet18(num_classes=10)
        net.load_state_dict(torch.load(path, weights_only=True))
        models.append(convlens.Model.wrap(net.eval(), size=32, name="resnet18"))  # the same name on purpose
    assert model_fingerprint(models[0]) != model_fingerprint(models[1])
    ds = load_dataset(_photos(tmp_path / "photos", 4, 0))
    cache = tmp_path / "cache"
    feats = [scan(m, ds, [PooledFeatures("layer4")], cache_dir=cache, progress=False)["features"]["layer4"]
             for m in models]
    assert not np.allclose(feats[0], feats[1])
    direct = convlens.activations(models[1], torch.stack([models[1].preprocess.to_tensor(f) for f in ds.files]),
                                  "layer4")["layer4"].mean((2, 3)).numpy()
    np.testing.assert_allclose(feats[1], direct, rtol=1e-4, atol=1e-5)
    again = scan(models[0], ds, [PooledFeatures("layer4")], cache_dir=cache, progress=False)["features"]["layer4"]
    np.testing.assert_array_equal(again, feats[0])  # and the cache is still used for the same weights


def test_key_follows_weights_preprocessing_and_parts(tiny):
    k = cache_key(tiny, "x", ["conv2"])
    assert k == cache_key(tiny, "x", ["conv2"]) and k != cache_key(tiny, "x", ["conv3"])
    other = convlens.Model.wrap(tiny.module, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=32)
    assert cache_key(other, "x", ["conv2"]) != k
    with torch.no_grad():
        tiny.module.conv1.weight[0, 0, 0, 0] += 1.0  # an in-place change of one weight
    assert cache_key(tiny, "x", ["conv2"]) != k


def test_microscope_rerun_over_another_dataset_shows_no_stale_pictures(tiny, tmp_path):
    from convlens.show.microscope import build_microscope

    out = tmp_path / "site"
    a = _photos(tmp_path / "a", 3, 1)
    b = _photos(tmp_path / "b", 3, 2)
    build_microscope(tiny, a, out, layers=["conv2"], k=2, max_channels=2, vis_steps=0, progress=False)
    first = (out / "layers" / "conv2" / "img" / "c0_p0.jpg").read_bytes()
    build_microscope(tiny, b, out, layers=["conv2"], k=2, max_channels=2, vis_steps=0, progress=False)
    second = (out / "layers" / "conv2" / "img" / "c0_p0.jpg").read_bytes()
    assert first != second  # the patch of the new dataset, not the first run's picture
    build_microscope(tiny, b, out, layers=["conv2"], k=2, max_channels=2, vis_steps=0, progress=False)
    assert (out / "layers" / "conv2" / "img" / "c0_p0.jpg").read_bytes() == second
