"""Neighbours (feature vs pixel space), embeddings, trustworthiness, the one-to-one grid."""

from __future__ import annotations

import numpy as np
import pytest

from convlens.read import category_agreement, embed, grid_assignment, knn, load_dataset, neighbors, pca, trustworthiness
from convlens.read.neighbors import unit_rows


def test_knn_excludes_the_query_itself():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(30, 5))
    d, i = knn(db, db[:4], 3, exclude=[0, 1, 2, 3])
    for q in range(4):
        assert q not in i[q]
        brute = np.argsort(((db - db[q]) ** 2).sum(1))[1:4]
        assert i[q].tolist() == brute.tolist()
        np.testing.assert_allclose(d[q], np.sqrt(((db[brute] - db[q]) ** 2).sum(1)), rtol=1e-5)


def test_trustworthiness_matches_scikit_learn():
    from sklearn.manifold import trustworthiness as sk

    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 20)).astype(np.float32)
    y = x[:, :2] + 0.3 * rng.normal(size=(150, 2))
    assert trustworthiness(x, y, 10) == pytest.approx(sk(x, y, n_neighbors=10), abs=1e-9)
    assert trustworthiness(x, x[:, :2] * 0 + rng.normal(size=(150, 2)), 10) < trustworthiness(x, y, 10)


def test_grid_assignment_is_one_to_one():
    rng = np.random.default_rng(2)
    xy = rng.normal(size=(50, 2))
    cells, side = grid_assignment(xy)
    assert side == 8 and len(set(cells.tolist())) == 50 and cells.min() >= 0 and cells.max() < 64
    cells, side = grid_assignment(xy, 5)  # more points than cells: 25 placed, the rest left out
    assert (cells >= 0).sum() == 25 and len(set(cells[cells >= 0].tolist())) == 25
    # corners go to corners: the top-left point (smallest x, largest y) lands in cell 0
    pts = np.array([[0, 1], [1, 1], [0, 0], [1, 0]], float)
    assert grid_assignment(pts, 2)[0].tolist() == [0, 1, 2, 3]


def test_pca_agrees_with_scikit_learn_and_embed_keeps_the_first_component():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(60, 30)) * np.linspace(3, 0.1, 30)).astype(np.float32)  # distinct variances
    ours, ref = pca(x, 5), PCA(5).fit_transform(x.astype(np.float64))
    assert ours.shape == (60, 5)
    # randomised SVD: each component agrees with the exact one up to sign (|correlation| ~ 1), variances too
    corr = [abs(np.corrcoef(ours[:, i], ref[:, i])[0, 1]) for i in range(5)]
    assert min(corr) > 0.999, corr
    np.testing.assert_allclose(ours.var(0), ref.var(0), rtol=1e-3)
    e = embed(x, "pca")
    assert e.xy.shape == (60, 2) and 0 <= e.trustworthiness <= 1
    np.testing.assert_allclose(np.abs(e.xy[:, 0].std()), np.linalg.svd(x - x.mean(0))[1][0] / np.sqrt(60), rtol=1e-3)


@pytest.fixture(scope="module")
def subset_codes(lite0, sample_dir):
    from convlens.read import PixelCodes, PooledFeatures, scan

    ds = load_dataset(sample_dir, limit=160)
    out = scan(lite0, ds, [PooledFeatures("global_pool"), PixelCodes(32)], progress=False)
    return ds, np.asarray(out["features"]["global_pool"]), out["pixels"][1]


def test_feature_neighbours_share_the_category_far_more_than_pixel_neighbours(subset_codes, sample_labels):
    ds, codes, pixels = subset_codes
    animal = [sample_labels[f.name] <= 397 for f in ds.files]
    me = list(range(len(ds)))
    feat = category_agreement(knn(unit_rows(codes), unit_rows(codes), 5, exclude=me)[1], animal, animal)
    pix = category_agreement(knn(pixels, pixels, 5, exclude=me)[1], animal, animal)
    assert feat > 0.75 and feat > pix + 0.15, (feat, pix)


def test_neighbors_api(tiny, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    res = neighbors(tiny, tmp_path, [tmp_path / "0.png", tmp_path / "5.png"], k=3, progress=False)
    assert res.feature_index.shape == res.pixel_index.shape == (2, 3)
    assert 0 not in res.feature_index[0] and 5 not in res.pixel_index[1]  # a query is never its own neighbour
    assert (np.diff(res.pixel_distance, axis=1) >= 0).all()


def test_our_tsne_is_as_trustworthy_as_scikit_learn(subset_codes):
    from sklearn.manifold import TSNE

    _, codes, _ = subset_codes
    ours = embed(codes, "tsne", seed=0)
    theirs = trustworthiness(codes, TSNE(2, init="pca", random_state=0, perplexity=30).fit_transform(pca(codes, 50)))
    assert ours.trustworthiness >= theirs - 0.01, (ours.trustworthiness, theirs)
